"""Prefect tasks over the etcd adapter (:mod:`blocks.etcd_client`) for membership changes.

Each task opens a short-lived :class:`~blocks.etcd_client.EtcdClient` to the given client endpoints
(``host:port``), reads state first and is idempotent: adding a member whose peer URL is registered
returns that member, removing an absent member is a no-op. Transient etcd refusals ("unhealthy
cluster" within 5 s of a member start, "too many requests", leader changes, a learner not in sync
yet) are retried within the task's time budget; anything else fails at once with its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.etcd_records import EndpointStatus, Member
from stateferry.errors import (
    PermanentError,
    PreconditionFailed,
    StateferryError,
    TransientError,
    is_transient,
)
from stateferry.waiting import await_until, retry_transient
from tasks.etcd_credentials import etcd_client
from tasks.retry import TRANSIENT_RETRY

__all__ = [
    "ClusterView",
    "add_member",
    "compact_and_defrag",
    "move_leader",
    "observe_cluster",
    "promote_when_caught_up",
    "remove_member",
    "wait_healthy",
]

T = TypeVar("T")
_RETRYABLE = ("unhealthy cluster", "not in sync", "learner not ready", "leader changed")  # move_leader only
_TASK: dict[str, Any] = {**TRANSIENT_RETRY, "cache_policy": NO_CACHE}
#: tasks that retry their whole (idempotent) step in-call with :func:`retry_transient`: no Prefect retries
_ONE_POLICY: dict[str, Any] = {"retries": 0, "cache_policy": NO_CACHE}


@dataclass(frozen=True)
class ClusterView:
    """The cluster as observed through a set of client endpoints.

    Attributes:
        members: The member list.
        statuses: Status per member name (only members that answered).
        unreachable: Member name -> error text, for members whose endpoint did not answer.
        leader_id: The leader's id (0 when no member reported one).
        alarms: Active alarms as ``"<member-hex>:<alarm>"``.
    """

    members: tuple[Member, ...]
    statuses: dict[str, EndpointStatus] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    leader_id: int = 0
    alarms: tuple[str, ...] = ()

    def by_id(self, member_id: int) -> Member | None:
        """The member with this id, or None."""
        return next((m for m in self.members if m.id == member_id), None)

    @property
    def leader_name(self) -> str:
        """Name of the leader ("" when unknown)."""
        m = self.by_id(self.leader_id)
        return m.name if m else ""


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(_await(fn))


async def _await(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


def _retryable(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, TransientError) or any(n in text for n in _RETRYABLE)


async def _observe(
    endpoints: Mapping[str, str], *, timeout: float = 3.0, with_alarms: bool = False
) -> ClusterView:
    statuses: dict[str, EndpointStatus] = {}
    unreachable: dict[str, str] = {}
    async with etcd_client(list(endpoints.values()), timeout=timeout) as etcd:
        for name, endpoint in endpoints.items():
            try:
                statuses[name] = await etcd.status(endpoint)
            except StateferryError as exc:
                unreachable[name] = str(exc)
        reachable = [endpoints[n] for n, s in statuses.items() if not s.is_learner]
        if not reachable:
            raise TransientError(
                f"no voting etcd member answered at {sorted(endpoints.values())}: "
                + "; ".join(f"{k}: {v}" for k, v in unreachable.items())
            )
        async with etcd_client(reachable, timeout=timeout) as voters:
            members = await voters.member_list()
            alarms = [f"{a.member_id:x}:{a.alarm}" for a in await voters.alarms()] if with_alarms else []
    leaders = {s.leader_id for s in statuses.values() if s.leader_id}
    return ClusterView(
        members=tuple(members),
        statuses=statuses,
        unreachable=unreachable,
        leader_id=max(leaders, key=lambda lid: sum(1 for s in statuses.values() if s.leader_id == lid))
        if leaders
        else 0,
        alarms=tuple(alarms),
    )


@task(**_TASK)
def observe_cluster(endpoints: Mapping[str, str], *, with_alarms: bool = False) -> ClusterView:
    """Member list, per-member status, leader and (optionally) alarms, through ``endpoints``.

    Args:
        endpoints: Member name -> client endpoint (``host:port``) to ask.
        with_alarms: Also list active alarms.
    """
    return _run(lambda: _observe(endpoints, with_alarms=with_alarms))


def observe_now(endpoints: Mapping[str, str], *, timeout: float = 3.0) -> ClusterView:
    """:func:`observe_cluster` without a task run (for polling loops)."""
    return _run(lambda: _observe(endpoints, timeout=timeout))


def _voter_endpoints(view: ClusterView, endpoints: Mapping[str, str]) -> list[str]:
    return [endpoints[n] for n, s in view.statuses.items() if not s.is_learner and n in endpoints]


@task(**_TASK)
def compact_and_defrag(endpoints: Mapping[str, str], keep_revisions: int) -> dict[str, Any]:
    """Compact to ``revision - keep_revisions``, wait for it on every member, defrag followers then leader.

    Returns:
        ``{"revision", "compacted_to", "db_size_before": {name: bytes}, "db_size_after": {...}}``.
    """
    logger = get_run_logger()

    async def go() -> dict[str, Any]:
        view = await _observe(endpoints)
        before = {n: s.db_size for n, s in view.statuses.items()}
        in_use_before = {n: s.db_size_in_use for n, s in view.statuses.items()}
        async with etcd_client(_voter_endpoints(view, endpoints), timeout=10.0) as etcd:
            revision = await etcd.current_revision()
            target = revision - keep_revisions
            compacted = 0
            if target > 1:
                try:
                    await etcd.compact(target, physical=True)
                    compacted = target
                except PermanentError as exc:
                    if "compacted" not in str(exc):
                        raise
                    logger.info("revision %s is already compacted", target)
            # wait until every member's dbSizeInUse reflects the compaction (stable for one poll)
            if compacted:
                last: dict[str, int] = {}

                async def settled() -> bool:
                    nonlocal last
                    now = {n: (await etcd.status(endpoints[n])).db_size_in_use for n in view.statuses}
                    done, last = now == last, now
                    return done

                with contextlib.suppress(PreconditionFailed):  # best effort: defrag is right either way
                    await await_until(settled, timeout=15, interval=0.3, describe=lambda: "compaction")
            leader = next((n for n, s in view.statuses.items() if s.is_leader), None)
            order = [n for n in view.statuses if n != leader] + ([leader] if leader else [])
            for name in order:
                await etcd.defragment(endpoints[name])
            after_view = {n: await etcd.status(endpoints[n]) for n in view.statuses}
        after = {n: s.db_size for n, s in after_view.items()}
        logger.info("compacted to %s; db size %s -> %s", compacted, before, after)
        return {
            "revision": revision,
            "compacted_to": compacted,
            "db_size_before": before,
            "db_size_in_use_before": in_use_before,
            "db_size_after": after,
            "defrag_order": order,
        }

    return _run(go)


@task(**_ONE_POLICY)
def add_member(endpoints: Mapping[str, str], peer_url: str, *, as_learner: bool = True) -> Member:
    """``member add`` (as a learner by default); returns the existing member when the URL is registered."""

    async def go() -> Member:
        view = await _observe(endpoints)
        for m in view.members:
            if peer_url in m.peer_urls:
                return m
        async with etcd_client(_voter_endpoints(view, endpoints), timeout=5.0) as etcd:
            member, _ = await etcd.member_add([peer_url], is_learner=as_learner)
            return member

    return _run(lambda: retry_transient(go, budget=30))


@task(**{**_TASK, "retries": 0})
def promote_when_caught_up(
    endpoints: Mapping[str, str],
    member_id: int,
    member_name: str,
    *,
    timeout: float = 90.0,
) -> float:
    """Wait until the member has started and caught up with the leader, then promote it if a learner.

    Args:
        endpoints: Member name -> client endpoint, including the joining member's.
        member_id: Id of the joining member.
        member_name: Its name (key in ``endpoints``).
        timeout: Seconds allowed for the member to start and catch up.

    Returns:
        Seconds it took.

    Raises:
        PreconditionFailed: Not started / not caught up within ``timeout`` (unreachable peer URL,
            wrong DNS, image cannot start); the caller rolls the member back.
    """
    start = time.monotonic()
    logger = get_run_logger()
    last = "no status yet"
    reported = ""

    async def step() -> float | None:
        nonlocal last, reported
        try:
            view = await _observe(endpoints, timeout=2.0)
            member = view.by_id(member_id)
            if member is None:
                raise PreconditionFailed(f"member {member_name} ({member_id:x}) is no longer in the cluster")
            mine = view.statuses.get(member_name)
            leader = next((s for s in view.statuses.values() if s.is_leader), None)
            if mine is not None and leader is not None and member.is_started:
                lag = leader.raft_index - mine.raft_index
                last = f"started, raft index {mine.raft_index} vs leader {leader.raft_index}"
                if not member.is_learner:
                    return time.monotonic() - start
                if lag <= 5:
                    async with etcd_client(_voter_endpoints(view, endpoints), timeout=5.0) as etcd:
                        try:
                            await etcd.member_promote(member_id)
                            return time.monotonic() - start
                        except StateferryError as exc:
                            if not is_transient(exc) and "not a learner" not in str(exc).lower():
                                raise
                            last = f"promote refused: {exc}"
            else:
                last = (
                    "not started (member list shows no name)"
                    if not member.is_started
                    else view.unreachable.get(member_name, "no status")
                )
        except TransientError as exc:
            last = str(exc)
        if last != reported:
            logger.info("%s after %.1fs: %s", member_name, time.monotonic() - start, last[:200])
            reported = last
        return None

    async def go() -> float:
        return await await_until(
            step,
            timeout=timeout,
            describe=lambda: (
                f"member {member_name} did not start and catch up within {timeout:g}s ({last}): "
                "check that its peer URL resolves in both clusters (DNS hosts) and its LoadBalancer "
                "reaches the pod"
            ),
        )

    return _run(go)


@task(**_ONE_POLICY)
def move_leader(endpoints: Mapping[str, str], target_id: int) -> int:
    """Move leadership to ``target_id``; no-op when it already leads. Returns the leader id after.

    One policy: the whole step (read the leader, ``MoveLeader``, see the new leader within 10 s) is
    repeated with :func:`retry_transient` for up to two minutes while etcd answers "not yet" (a
    member still catching up, an unhealthy cluster right after a change, a leader change).
    """

    async def attempt() -> int:
        view = await _observe(endpoints)
        if view.leader_id == target_id:
            return target_id
        async with etcd_client(_voter_endpoints(view, endpoints), timeout=5.0) as etcd:
            await etcd.move_leader(target_id)

        async def moved() -> int | None:
            return target_id if (await _observe(endpoints)).leader_id == target_id else None

        return await await_until(
            moved,
            timeout=10,
            interval=0.1,
            describe=lambda: f"leadership did not move to {target_id:x} within 10s",
            error=TransientError,
        )

    return _run(lambda: retry_transient(attempt, budget=120, retry_on=_retryable))


@task(**_ONE_POLICY)
def remove_member(endpoints: Mapping[str, str], member_id: int) -> str:
    """``member remove`` (never the leader); ``absent`` when already gone, else ``removed``."""

    async def go() -> str:
        view = await _observe(endpoints)
        if view.by_id(member_id) is None:
            return "absent"
        if view.leader_id == member_id:
            raise PreconditionFailed(
                f"member {member_id:x} is the leader: move leadership to another member before removing it"
            )
        async with etcd_client(_voter_endpoints(view, endpoints), timeout=5.0) as etcd:
            try:
                await etcd.member_remove(member_id)
            except PermanentError as exc:
                if "not found" not in str(exc).lower():
                    raise
        return "removed"

    return _run(lambda: retry_transient(go, budget=30))


@task(**{**_TASK, "retries": 0})
def wait_healthy(
    endpoints: Mapping[str, str], *, expect_members: Sequence[str] = (), timeout: float = 60.0
) -> ClusterView:
    """Wait until there is a leader, every named member answers and a linearizable read succeeds."""
    last = ""

    async def healthy() -> ClusterView | None:
        nonlocal last
        try:
            view = await _observe(endpoints, timeout=2.0)
            missing = [n for n in expect_members if n not in view.statuses]
            if view.leader_id and not missing:
                async with etcd_client(_voter_endpoints(view, endpoints), timeout=2.0) as etcd:
                    await etcd.get("stateferry/health")
                return view
            last = f"leader {view.leader_id:x}, not answering: {missing}"
        except StateferryError as exc:
            last = str(exc)
        return None

    async def go() -> ClusterView:
        return await await_until(
            healthy, timeout=timeout, describe=lambda: f"etcd not healthy within {timeout:g}s: {last}"
        )

    return _run(go)
