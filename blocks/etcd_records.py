"""The plain records the etcd adapter (:class:`~blocks.etcd_client.EtcdClient`) returns."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Alarm", "EndpointStatus", "KeyValue", "Member"]


@dataclass(frozen=True)
class Member:
    """One etcd cluster member as the member list reports it.

    A member that was added but has not started yet has an empty ``name`` and no ``client_urls``.
    """

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def is_started(self) -> bool:
        """True once the member has started and published its name."""
        return bool(self.name)

    @property
    def hex_id(self) -> str:
        """The id as etcdctl prints it (lower-case hex)."""
        return f"{self.id:x}"


@dataclass(frozen=True)
class EndpointStatus:
    """The status one member reports about itself (``etcdctl endpoint status``)."""

    endpoint: str
    member_id: int
    leader_id: int
    version: str
    db_size: int
    db_size_in_use: int
    raft_index: int
    raft_term: int
    is_learner: bool
    errors: tuple[str, ...] = ()

    @property
    def is_leader(self) -> bool:
        """True when this member is the leader."""
        return self.member_id != 0 and self.member_id == self.leader_id


@dataclass(frozen=True)
class Alarm:
    """An active alarm (``NOSPACE`` or ``CORRUPT``) raised by a member."""

    member_id: int
    alarm: str


@dataclass(frozen=True)
class KeyValue:
    """A key with its value and revisions."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
