"""stateferry blocks: Prefect Blocks holding connection settings and credentials; they build clients.

``prefect block register -m blocks`` (or ``stateferry blocks register``) registers every block here.
"""

from blocks.database import Database
from blocks.etcd import EtcdCluster
from blocks.kube import KubeCluster
from blocks.object_store import ObjectStore
from blocks.redis import RedisServer
from blocks.sftp import SftpServer

ALL_BLOCKS = (KubeCluster, ObjectStore, EtcdCluster, Database, SftpServer, RedisServer)

__all__ = ["ALL_BLOCKS", "Database", "EtcdCluster", "KubeCluster", "ObjectStore", "RedisServer", "SftpServer"]
