"""The narrow etcd adapter: the ONLY module that imports ``etcd3aio``.

Everything else talks to etcd through :class:`EtcdClient`, which returns plain records
(:mod:`blocks.etcd_records`) and raises :mod:`stateferry.errors` types, so the gRPC backend can be
swapped without touching flows or tasks.

etcd3aio dials ``ipv4:`` targets only, so host names are resolved to IPv4 (:mod:`blocks.etcd_endpoints`)
and, with TLS, the original host name is used as the TLS server name. Operations that concern one member
(status, defragment, snapshot, move-leader) use a channel to that member alone; cluster-wide operations
use a round-robin channel over every endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from types import TracebackType
from typing import IO, Any, TypeVar

from blocks.etcd_endpoints import Resolved, parse_target, resolve, tls_server_name
from blocks.etcd_records import Alarm, EndpointStatus, KeyValue, Member
from stateferry.errors import InputError, PermanentError, TransientError, translate

__all__ = ["EtcdClient"]

T = TypeVar("T")


def _to_member(raw: Any) -> Member:
    return Member(
        id=int(raw.ID),
        name=str(raw.name),
        peer_urls=tuple(raw.peerURLs),
        client_urls=tuple(raw.clientURLs),
        is_learner=bool(raw.isLearner),
    )


class EtcdClient:
    """Async etcd v3 client (member management, maintenance and KV) over etcd3aio.

    Args:
        endpoints: ``host:port`` or ``http(s)://host:port`` client endpoints. Names are resolved to
            IPv4 when connecting.
        ca_cert: PEM CA certificate(s); enables TLS.
        cert_chain: PEM client certificate for mutual TLS (needs ``cert_key``).
        cert_key: PEM client private key for mutual TLS.
        user: etcd user name (auth enabled clusters); needs ``password``.
        password: Password of ``user``.
        timeout: Seconds allowed for each operation (including etcd3aio's own retries).
        tls_server_name: Override the TLS server name (default: the first endpoint's host name).

    Use as ``async with EtcdClient([...]) as etcd: await etcd.member_list()``. Every failure is
    raised as :class:`~stateferry.errors.TransientError` or :class:`~stateferry.errors.PermanentError`.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_cert: str | bytes | None = None,
        cert_chain: str | bytes | None = None,
        cert_key: str | bytes | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        tls_server_name: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise InputError("endpoints", "no endpoint given", "give at least one host:port")
        self._targets = [parse_target(e) for e in endpoints]
        if (cert_chain is None) != (cert_key is None):
            raise InputError(
                "client_cert", "client_cert and client_key must be given together", "set both or neither"
            )
        if cert_chain is not None and ca_cert is None:
            raise InputError("ca_cert", "mutual TLS needs the CA certificate", "set ca_cert")
        if (user is None) != (password is None):
            raise InputError(
                "username", "username and password must be given together", "set both or neither"
            )
        self._tls = {
            "ca_cert": ca_cert.encode() if isinstance(ca_cert, str) else ca_cert,
            "cert_chain": cert_chain.encode() if isinstance(cert_chain, str) else cert_chain,
            "cert_key": cert_key.encode() if isinstance(cert_key, str) else cert_key,
        }
        self._user = user
        self._password = password
        self.timeout = float(timeout)
        self._tls_server_name = tls_server_name
        self._resolved: list[Resolved] = []
        self._cluster: Any = None
        self._per_endpoint: dict[str, Any] = {}
        self._token: str | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoints(self) -> list[str]:
        """The endpoints as given."""
        return [t.original for t in self._targets]

    def __repr__(self) -> str:
        return f"EtcdClient(endpoints={self.endpoints!r}, tls={self._tls['ca_cert'] is not None})"

    async def __aenter__(self) -> EtcdClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _make_client(self, resolved: Sequence[Resolved]) -> Any:
        from etcd3aio import Etcd3Client

        tls = self._tls["ca_cert"] is not None
        return Etcd3Client(
            [r.address for r in resolved],
            rpc_max_attempts=2,
            tls_server_name=(self._tls_server_name or tls_server_name([r.target for r in resolved]))
            if tls
            else None,
            ca_cert=self._tls["ca_cert"],
            cert_chain=self._tls["cert_chain"],
            cert_key=self._tls["cert_key"],
        )

    async def _open(self, resolved: Sequence[Resolved]) -> Any:
        client = self._make_client(resolved)
        await client.connect()
        if self._user is not None:
            if self._token is None:  # one token (from raft) serves every member, learners included
                try:
                    self._token = (await self._authenticate(client, len(resolved))).token
                except BaseException:
                    await client.close()
                    raise
            client.set_token(self._token)
        return client

    async def _authenticate(self, client: Any, endpoints: int) -> Any:
        """Authenticate over the round-robin channel; a learner cannot answer, so the next member is asked.

        (A joining member is a learner for a while; the token comes from raft, so any voter's is good.)
        """
        for _ in range(endpoints):
            try:
                return await client.auth.authenticate(self._user, self._password, timeout=self.timeout)
            except Exception as exc:
                if "not supported for learner" not in str(exc):
                    raise
        return await client.auth.authenticate(self._user, self._password, timeout=self.timeout)

    async def connect(self) -> None:
        """Resolve the endpoints and open the cluster channel (no request is made without auth)."""
        if self._cluster is not None:
            return
        self._resolved = [await resolve(t, self.timeout) for t in self._targets]
        self._cluster = await self._guard("connecting", self._open(self._resolved))

    async def close(self) -> None:
        """Close every channel."""
        clients = [self._cluster, *self._per_endpoint.values()]
        self._cluster = None
        self._per_endpoint = {}
        self._token = None
        for client in clients:
            if client is not None:
                await client.close()

    def _require(self) -> Any:
        if self._cluster is None:
            raise RuntimeError("EtcdClient is not connected: use `async with EtcdClient(...)`")
        return self._cluster

    async def _endpoint_client(self, endpoint: str) -> Any:
        """A client bound to one member's endpoint (given as configured, or any host:port)."""
        self._require()
        for resolved in self._resolved:
            if endpoint in (resolved.target.original, resolved.address):
                key = resolved.address
                break
        else:
            resolved = await resolve(parse_target(endpoint), self.timeout)
            key = resolved.address
        if key not in self._per_endpoint:
            self._per_endpoint[key] = await self._guard(f"connecting to {endpoint}", self._open([resolved]))
        return self._per_endpoint[key]

    async def _guard(self, what: str, awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
        limit = self.timeout if timeout is None else timeout
        context = f"etcd {what} ({', '.join(self.endpoints)})"
        try:
            return await asyncio.wait_for(awaitable, limit)
        except (TransientError, PermanentError):
            raise
        except TimeoutError as exc:
            raise TransientError(
                f"{context}: no answer within {limit:g}s (member down, partitioned or overloaded); "
                "a retry may succeed"
            ) from exc
        except Exception as exc:
            raise translate(exc, context=context) from exc

    # ------------------------------------------------------------------ cluster

    async def member_list(self) -> list[Member]:
        """List members (linearizable), ordered as etcd returns them."""
        cluster = self._require()
        response = await self._guard("listing members", cluster.cluster.member_list(timeout=self.timeout))
        return [_to_member(m) for m in response.members]

    async def member_add(
        self, peer_urls: Sequence[str], is_learner: bool = True
    ) -> tuple[Member, list[Member]]:
        """Add a member (as a learner by default).

        Returns:
            The new member and the member list after the change.
        """
        cluster = self._require()
        response = await self._guard(
            f"adding member {list(peer_urls)}",
            cluster.cluster.member_add(list(peer_urls), is_learner=is_learner, timeout=self.timeout),
        )
        return _to_member(response.member), [_to_member(m) for m in response.members]

    async def member_promote(self, member_id: int) -> list[Member]:
        """Promote a learner to a voting member; returns the member list after the change."""
        cluster = self._require()
        response = await self._guard(
            f"promoting member {member_id:x}", cluster.cluster.member_promote(member_id, timeout=self.timeout)
        )
        return [_to_member(m) for m in response.members]

    async def member_remove(self, member_id: int) -> list[Member]:
        """Remove a member; returns the member list after the change."""
        cluster = self._require()
        response = await self._guard(
            f"removing member {member_id:x}", cluster.cluster.member_remove(member_id, timeout=self.timeout)
        )
        return [_to_member(m) for m in response.members]

    # ------------------------------------------------------------------ maintenance

    async def status(self, endpoint: str) -> EndpointStatus:
        """Status of the member serving ``endpoint`` (``etcdctl endpoint status``)."""
        client = await self._endpoint_client(endpoint)
        r = await self._guard(f"status of {endpoint}", client.maintenance.status(timeout=self.timeout))
        return EndpointStatus(
            endpoint=endpoint,
            member_id=int(r.header.member_id),
            leader_id=int(r.leader),
            version=str(r.version),
            db_size=int(r.dbSize),
            db_size_in_use=int(r.dbSizeInUse),
            raft_index=int(r.raftIndex),
            raft_term=int(r.raftTerm),
            is_learner=bool(r.isLearner),
            errors=tuple(r.errors),
        )

    async def statuses(self) -> dict[str, EndpointStatus | Exception]:
        """Status of every configured endpoint; an unreachable one maps to its (stateferry) error."""
        results: dict[str, EndpointStatus | Exception] = {}
        for endpoint in self.endpoints:
            try:
                results[endpoint] = await self.status(endpoint)
            except (TransientError, PermanentError) as exc:
                results[endpoint] = exc
        return results

    async def leader_endpoint(self) -> tuple[str, EndpointStatus]:
        """Find the configured endpoint served by the current leader.

        Raises:
            TransientError: No configured endpoint reports itself as leader (election under way or
                the leader is not among the endpoints).
        """
        for endpoint, status in (await self.statuses()).items():
            if isinstance(status, EndpointStatus) and status.is_leader:
                return endpoint, status
        raise TransientError(
            f"etcd: no configured endpoint ({', '.join(self.endpoints)}) is the leader; an election may be "
            "under way, or list the leader's client URL among the endpoints"
        )

    async def move_leader(self, target_id: int) -> int:
        """Transfer leadership to ``target_id`` (a started voting member).

        Returns:
            The id of the leader after the call (``target_id``); a no-op when it already leads.
        """
        endpoint, status = await self.leader_endpoint()
        if status.leader_id == target_id:
            return target_id
        client = await self._endpoint_client(endpoint)
        await self._guard(
            f"moving leadership from {status.leader_id:x} to {target_id:x}",
            client.maintenance.move_leader(target_id, timeout=self.timeout),
        )
        return target_id

    async def defragment(self, endpoint: str, *, timeout: float = 120.0) -> None:
        """Defragment the backend of the member serving ``endpoint`` (blocks that member meanwhile)."""
        client = await self._endpoint_client(endpoint)
        await self._guard(
            f"defragmenting {endpoint}", client.maintenance.defragment(timeout=timeout), timeout=timeout + 1
        )

    async def alarms(self) -> list[Alarm]:
        """Active alarms of the cluster (empty when healthy)."""
        cluster = self._require()
        response = await self._guard("listing alarms", cluster.maintenance.alarms(timeout=self.timeout))
        names = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
        return [
            Alarm(member_id=int(a.memberID), alarm=names.get(int(a.alarm), str(a.alarm)))
            for a in response.alarms
        ]

    async def snapshot_to(
        self, fileobj: IO[bytes], *, endpoint: str | None = None, timeout: float = 600.0
    ) -> int:
        """Stream a snapshot of one member's backend into ``fileobj``.

        Args:
            fileobj: A binary file opened for writing.
            endpoint: Member to snapshot (default: the first endpoint).
            timeout: Seconds allowed for the whole stream.

        Returns:
            The number of bytes written. On failure the partial data must be discarded.
        """
        client = await self._endpoint_client(endpoint or self.endpoints[0])

        async def stream() -> int:
            written = 0
            chunks: AsyncIterator[bytes] = client.maintenance.snapshot(timeout=timeout)
            async for chunk in chunks:
                fileobj.write(chunk)
                written += len(chunk)
            return written

        return await self._guard(
            f"snapshot of {endpoint or self.endpoints[0]}", stream(), timeout=timeout + 1
        )

    # ------------------------------------------------------------------ KV

    async def put(self, key: str | bytes, value: str | bytes) -> int:
        """Store a key; returns the revision of the write."""
        cluster = self._require()
        response = await self._guard("put", cluster.kv.put(key, value, timeout=self.timeout))
        return int(response.header.revision)

    async def get(self, key: str | bytes) -> bytes | None:
        """Value of ``key`` or None when absent (linearizable read)."""
        cluster = self._require()
        response = await self._guard("get", cluster.kv.get(key, timeout=self.timeout))
        return bytes(response.kvs[0].value) if response.kvs else None

    async def get_prefix(self, prefix: str | bytes, *, limit: int = 0) -> list[KeyValue]:
        """Every key under ``prefix`` (sorted by key)."""
        from etcd3aio import SortOrder, SortTarget, prefix_range_end

        cluster = self._require()
        response = await self._guard(
            "get prefix",
            cluster.kv.get(
                prefix,
                prefix_range_end(prefix),
                limit=limit,
                sort_order=SortOrder.ASCEND,
                sort_target=SortTarget.KEY,
                timeout=self.timeout,
            ),
        )
        return [
            KeyValue(
                key=bytes(kv.key),
                value=bytes(kv.value),
                create_revision=int(kv.create_revision),
                mod_revision=int(kv.mod_revision),
                version=int(kv.version),
            )
            for kv in response.kvs
        ]

    async def delete(self, key: str | bytes) -> int:
        """Delete a key; returns how many keys were deleted (0 or 1)."""
        cluster = self._require()
        response = await self._guard("delete", cluster.kv.delete(key, timeout=self.timeout))
        return int(response.deleted)

    async def current_revision(self) -> int:
        """The cluster's current revision."""
        cluster = self._require()
        response = await self._guard(
            "reading the revision", cluster.kv.get(b"\0", count_only=True, timeout=self.timeout)
        )
        return int(response.header.revision)

    async def compact(self, revision: int, physical: bool = True) -> None:
        """Compact the key history up to ``revision`` (physically applied when ``physical``)."""
        cluster = self._require()
        await self._guard(
            f"compacting to {revision}",
            cluster.kv.compact(revision, physical=physical, timeout=60.0),
            timeout=61.0,
        )
