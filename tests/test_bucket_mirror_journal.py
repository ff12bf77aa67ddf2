"""Issue 12 against two real SeaweedFS S3 stores and a Prefect server: the DNS window loses no write.

test_dns_window_*: a watch waits for "DNS cutover done" while clients write on both sides.
test_watch_resume_*: the process running the watch is SIGKILLed; a re-run resumes from the journal.
test_conflict_*: the same key changed on both sides resolves by each ``conflict`` rule.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from minio.error import S3Error

from blocks.object_store import ObjectStore
from devservers.prefect_runs import find_flow_run, resume_with_input, wait_for_approval_form
from flows.bucket_mirror import bucket_mirror
from planning.mirror_journal import JOURNAL_PREFIX
from tasks.approvals import ApprovalTimedOut
from tasks.s3_journal import load_journal, save_journal

pytestmark = pytest.mark.usefixtures("prefect_server")
ROOT = Path(__file__).resolve().parent.parent


def put(client: Minio, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data))


def contents(client: Minio, bucket: str) -> dict[str, bytes]:
    """key -> bytes of every object except the mirror's journal."""
    out: dict[str, bytes] = {}
    for obj in client.list_objects(bucket, recursive=True):
        name = obj.object_name or ""
        if name.startswith(JOURNAL_PREFIX):
            continue
        try:
            response = client.get_object(bucket, name)
        except S3Error as exc:  # deleted (by the mirror) between the listing and the GET
            if exc.code == "NoSuchKey":
                continue
            raise
        try:
            out[name] = response.read()
        finally:
            response.close()
            response.release_conn()
    return out


def _bucket_pair(store_a: ObjectStore, store_b: ObjectStore, tag: str) -> tuple[Minio, Minio, str]:
    """Mirror clients of both stores and a fresh bucket of the same name on each."""
    from tasks.s3_clients import mirror_client

    a, b = mirror_client(store_a, 4), mirror_client(store_b, 4)
    bucket = f"{tag}-" + uuid.uuid4().hex[:8]
    a.make_bucket(bucket)
    b.make_bucket(bucket)
    return a, b, bucket


def _journal_pass(a: Minio, b: Minio, bucket: str, direction: str = "one-way") -> Any:
    """One journal pass with ``remove=True`` over ``bucket`` on both sides."""
    import tasks.s3_journal as s3_journal
    from planning.mirror_journal import Direction, JournalOptions
    from tasks.s3_mirror_pass import BucketPair

    opts = JournalOptions(Direction(direction), remove=True)
    return s3_journal.run_journal_pass(
        a, b, BucketPair(bucket, bucket), opts, exclude=lambda _k: False, server_side=False, workers=4
    )


def eventually(check: Any, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _fresh(a: Minio, b: Minio, n: int = 5) -> str:
    name = f"jrn-{uuid.uuid4().hex[:8]}"
    a.make_bucket(name)
    b.make_bucket(name)
    for i in range(n):
        put(a, name, f"k{i}", f"v1 of k{i}".encode())
    return name


def _watch_in_thread(run_name: str, *args: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = bucket_mirror.with_options(flow_run_name=run_name)(*args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _approve(run_name: str, thread: threading.Thread, comment: str = "all clients moved") -> None:
    run_id = find_flow_run(run_name=run_name, timeout=60)
    resume_with_input(run_id, {"approved": True, "comment": comment})
    thread.join(timeout=120)
    assert not thread.is_alive()


@pytest.mark.parametrize("direction", ["one-way", "two-way"])
def test_dns_window_every_client_write_survives(
    direction: str, object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b)
    run_name = f"dns-{uuid.uuid4().hex[:8]}"
    thread, outcome = _watch_in_thread(
        run_name,
        object_store_a,
        object_store_b,
        bucket=name,
        remove=True,
        watch=True,
        direction=direction,
        watch_interval_seconds=0.5,
    )
    try:
        wait_for_approval_form(find_flow_run(run_name=run_name, timeout=60), 60)
        assert set(contents(b, name)) == {f"k{i}" for i in range(5)}
        # Clients already on the new DNS write to the destination ...
        put(b, name, "new-on-destination", b"written by a switched client")
        put(b, name, "k1", b"v2 of k1, written on the destination")
        b.remove_object(name, "k2")
        # ... and clients still on the old DNS write to the source.
        put(a, name, "new-on-source", b"written by an old client")
        put(a, name, "k4", b"v2 of k4, written on the source")
        a.remove_object(name, "k3")
        # Source changes reach the destination during the window.
        eventually(
            lambda: (
                contents(b, name).get("new-on-source") == b"written by an old client"
                and contents(b, name).get("k4") == b"v2 of k4, written on the source"
                and "k3" not in contents(b, name)
            )
        )
        if direction == "two-way":  # and destination changes reach the source
            eventually(
                lambda: (
                    contents(a, name).get("new-on-destination") == b"written by a switched client"
                    and contents(a, name).get("k1") == b"v2 of k1, written on the destination"
                    and "k2" not in contents(a, name)
                )
            )
        put(b, name, "late", b"written on the destination just before the cutover")
        _approve(run_name, thread)
    finally:
        if thread.is_alive():
            _approve(run_name, thread, "cleanup")
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result["verified"] is True, result["verification"]
    dst = contents(b, name)
    expected = {
        "k0": b"v1 of k0",
        "k1": b"v2 of k1, written on the destination",  # never rolled back to the source version
        "k4": b"v2 of k4, written on the source",
        "new-on-destination": b"written by a switched client",  # never deleted ("not on source")
        "new-on-source": b"written by an old client",
        "late": b"written on the destination just before the cutover",
    }  # k2 (deleted by a client on the destination) and k3 (deleted on the source) stay deleted
    assert dst == expected
    if direction == "two-way":
        assert contents(a, name) == expected
    else:
        assert {"new-on-destination", "k1", "k2", "late"} <= set(result["kept"])


SCRIPT = textwrap.dedent(
    """
    import sys
    from blocks.object_store import ObjectStore
    from flows.bucket_mirror import bucket_mirror
    a, b = ObjectStore.load(sys.argv[1]), ObjectStore.load(sys.argv[2])
    bucket_mirror.with_options(flow_run_name=sys.argv[4])(
        a, b, bucket=sys.argv[3], watch=True, direction="two-way", watch_interval_seconds=0.5
    )
    """
)


def test_watch_resume_after_sigkill_copies_only_what_changed(
    object_store_a: ObjectStore, object_store_b: ObjectStore, tmp_path: Path
) -> None:
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b, n=30)
    tag = uuid.uuid4().hex[:8]
    object_store_a.save(f"jrn-a-{tag}", overwrite=True)
    object_store_b.save(f"jrn-b-{tag}", overwrite=True)
    script = tmp_path / "watch.py"
    script.write_text(SCRIPT)
    run_name = f"killed-{tag}"
    proc = subprocess.Popen(
        [sys.executable, str(script), f"jrn-a-{tag}", f"jrn-b-{tag}", name, run_name],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_approval_form(find_flow_run(run_name=run_name, timeout=90), 90)
        put(b, name, "dst-1", b"switched client")
        put(a, name, "src-1", b"old client")
        eventually(lambda: "dst-1" in contents(a, name) and "src-1" in contents(b, name))
        time.sleep(1.5)  # the pass that copied them has stored its journal
        put(a, name, "after-kill", b"written while the mirror is down")
        b.remove_object(name, "k0")
        put(b, name, "k5", b"new version on the destination")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    result = bucket_mirror(
        object_store_a, object_store_b, bucket=name, watch=True, direction="two-way", auto_approve=True
    )
    assert result["verified"] is True, result["verification"]
    # The killed run never released its lease and Prefect still shows it running: the re-run took
    # the lease once it had stayed unchanged for its ttl.
    assert [n.split(": ", 1)[1] for n in result["lease"]] == [
        f"took over the lease of {run_name!r} (unchanged for 15s)"
    ]
    # Resumed from the journal: no re-copy of the 30 mirrored objects, only the three changes.
    assert result["copied"] + result["overwritten"] <= 1
    assert result["copied_back"] + result["overwritten_back"] + result["deleted_back"] <= 2
    expected = {f"k{i}": f"v1 of k{i}".encode() for i in range(1, 30)}
    expected.update(
        {
            "k5": b"new version on the destination",
            "dst-1": b"switched client",
            "src-1": b"old client",
            "after-kill": b"written while the mirror is down",
        }
    )
    assert contents(b, name) == expected
    assert contents(a, name) == expected  # the delete on the destination propagated (both sides had k0)


@pytest.mark.parametrize(
    ("rule", "winner_content"),
    [
        ("newest", b"destination edit (later)"),
        ("source", b"source edit"),
        ("destination", b"destination edit (later)"),
    ],
)
def test_conflict_rules_on_real_stores(
    rule: str, winner_content: bytes, object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b, n=2)
    first = bucket_mirror(object_store_a, object_store_b, bucket=name, direction="two-way", conflict=rule)
    assert first["verified"] is True and first["copied"] == 2
    put(a, name, "k0", b"source edit")
    time.sleep(1.1)  # S3 modification times have 1 s resolution
    put(b, name, "k0", b"destination edit (later)")
    put(a, name, "k1", b"source wins over a delete with newest")
    b.remove_object(name, "k1")
    second = bucket_mirror(object_store_a, object_store_b, bucket=name, direction="two-way", conflict=rule)
    assert second["verified"] is True
    by_key = {c["key"]: c for c in second["conflicts"]}
    assert set(by_key) == {"k0", "k1"}
    assert contents(a, name)["k0"] == contents(b, name)["k0"] == winner_content
    k1_winner = {"newest": "source", "source": "source", "destination": "destination"}[rule]
    assert by_key["k1"]["winner"] == k1_winner
    if k1_winner == "source":  # a write beats a delete under "newest"
        assert contents(b, name)["k1"] == b"source wins over a delete with newest"
    else:
        assert "k1" not in contents(a, name) and "k1" not in contents(b, name)


def test_watch_resume_after_the_approval_does_not_ask_again(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    """A run killed after "DNS cutover done" was approved: the re-run goes straight to the final pass.

    The journal of such a run records the approval (written right after it, before the final pass);
    the state is set here the way that run leaves it. Once the cutover is verified the record is
    cleared, so a later watch over the same buckets (the next DNS move) asks again.
    """
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b, n=3)
    first = bucket_mirror(object_store_a, object_store_b, bucket=name, direction="two-way")
    assert first["verified"] is True and first["copied"] == 3
    (journal,) = [o.object_name for o in b.list_objects(name, prefix=JOURNAL_PREFIX, recursive=True)]
    header, entries = load_journal(b, name, str(journal))
    assert header is not None and not header.get("cutover_approved")
    save_journal(b, name, str(journal), {**header, "cutover_approved": True}, entries)
    put(a, name, "late", b"written after the approval, before the kill")

    # Not asked again: without auto-approval a pause would time out after 3 s and fail the run.
    resumed = bucket_mirror(
        object_store_a,
        object_store_b,
        bucket=name,
        watch=True,
        direction="two-way",
        approval_timeout_seconds=3,
    )
    assert resumed["resumed_after_cutover"] is True and resumed["verified"] is True
    assert contents(b, name)["late"] == b"written after the approval, before the kill"
    header, _ = load_journal(b, name, str(journal))
    assert header is not None and header["cutover_approved"] is False

    with pytest.raises(ApprovalTimedOut):  # the next watch over these buckets asks again
        bucket_mirror(
            object_store_a,
            object_store_b,
            bucket=name,
            watch=True,
            direction="two-way",
            approval_timeout_seconds=3,
        )


@pytest.mark.parametrize("direction", ["one-way", "two-way"])
def test_dns_window_multipart_copies_are_not_mistaken_for_client_writes(
    object_store_a: ObjectStore, object_store_b: ObjectStore, direction: str
) -> None:
    """A multipart source object (ETag ``<md5>-2``) is written to the destination with one PUT (a
    plain MD5 ETag). The journal remembers the ETag the write returned: the next pass sees nothing
    changed (no "client write" kept, nothing copied back over the source), and a later source
    delete reaches the destination."""
    a, b, bucket = _bucket_pair(object_store_a, object_store_b, "mpj")
    big = os.urandom(8 * 1024 * 1024 + 17)
    a.put_object(bucket, "big.bin", io.BytesIO(big), len(big), part_size=5 * 1024 * 1024)
    assert a.stat_object(bucket, "big.bin").etag.strip('"').endswith("-2")
    for i in range(4):  # a source that is not emptied by the delete (deletes stay under their cap)
        put(a, bucket, f"small-{i}", b"x" * i)

    def one_pass() -> Any:
        return _journal_pass(a, b, bucket, direction)

    first = one_pass()
    assert sorted(x.key for x in first.plan.forward) == [
        "big.bin",
        "small-0",
        "small-1",
        "small-2",
        "small-3",
    ]
    assert b.get_object(bucket, "big.bin").read() == big
    second = one_pass()
    assert (second.plan.forward, second.plan.backward, second.plan.kept) == ([], [], [])
    a.remove_object(bucket, "big.bin")
    third = one_pass()
    assert [(x.kind.value, x.key) for x in third.plan.forward] == [("delete", "big.bin")]
    assert sorted(contents(b, bucket)) == ["small-0", "small-1", "small-2", "small-3"]


def test_dns_window_one_shot_sync_after_a_watch_honours_its_journal(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    """After a journal session kept a client write on the destination, a plain one-shot sync with
    ``remove=True`` (journal left unset) switches to journal mode instead of deleting that write;
    a dry run over such a pair is refused naming ``journal``."""
    from stateferry.errors import InputError

    a, b, bucket = _bucket_pair(object_store_a, object_store_b, "oneshot")
    for i in range(4):
        put(a, bucket, f"k{i}", b"v%d" % i)

    def journal_pass() -> Any:
        return _journal_pass(a, b, bucket)

    journal_pass()
    put(b, bucket, "client-wrote-this", b"switched client")  # a client already on the new DNS
    assert [k for k, _ in journal_pass().plan.kept] == ["client-wrote-this"]

    with pytest.raises(InputError) as err:
        bucket_mirror(source=object_store_a, destination=object_store_b, bucket=bucket, dry_run=True)
    assert err.value.field == "journal"
    bucket_mirror(source=object_store_a, destination=object_store_b, bucket=bucket, remove=True)
    assert contents(b, bucket)["client-wrote-this"] == b"switched client"
    # asked for explicitly, the journal is ignored (the user's decision): the write is deleted
    bucket_mirror(
        source=object_store_a, destination=object_store_b, bucket=bucket, remove=True, journal=False
    )
    assert "client-wrote-this" not in contents(b, bucket)


@pytest.mark.parametrize("direction", ["one-way", "two-way"])
def test_dns_window_cutover_verification_accepts_the_mirrors_own_multipart_copies(
    object_store_a: ObjectStore, object_store_b: ObjectStore, direction: str
) -> None:
    """The final verification compares each key with what the journal recorded for both sides: a
    multipart source copied with one PUT (different ETag kinds, same bytes) is verified, not
    reported as a difference that fails the run."""
    a, b, bucket = _bucket_pair(object_store_a, object_store_b, "mpv")
    big = os.urandom(6 * 1024 * 1024 + 5)
    a.put_object(bucket, "big.bin", io.BytesIO(big), len(big), part_size=5 * 1024 * 1024)
    put(a, bucket, "small", b"s")
    summary = bucket_mirror(
        source=object_store_a, destination=object_store_b, bucket=bucket, journal=True, direction=direction
    )
    assert summary["verified"] is True, summary
    assert b.get_object(bucket, "big.bin").read() == big


def test_dns_window_a_client_write_during_a_pass_is_not_overwritten_or_deleted(
    object_store_a: ObjectStore, object_store_b: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients write to the destination after the pass listed it but before it acts: the key
    planned for an overwrite, the one planned for a delete and the one planned for a copy are each
    re-read right before the write and left alone; the next pass keeps them as client writes."""
    import tasks.s3_journal as s3_journal

    a, b, bucket = _bucket_pair(object_store_a, object_store_b, "race")
    for i in range(8):
        put(a, bucket, f"k{i}", b"v1-%d" % i)

    def journal_pass() -> Any:
        return _journal_pass(a, b, bucket)

    journal_pass()  # the session's first pass: in sync
    put(a, bucket, "k0", b"source v2")  # overwrite planned
    a.remove_object(bucket, "k1")  # delete planned
    put(a, bucket, "new", b"source new")  # copy planned
    planner = s3_journal.plan_with_journal

    def then_clients_write(*args: Any, **kwargs: Any) -> Any:
        plan = planner(*args, **kwargs)
        time.sleep(1.1)  # the client writes are newer than the source's (stores keep seconds)
        for key in ("k0", "k1", "new"):  # after the listing, before the transfers
            put(b, bucket, key, b"client " + key.encode())
        return plan

    monkeypatch.setattr(s3_journal, "plan_with_journal", then_clients_write)
    raced = journal_pass()
    assert sorted(raced.forward.changed_meanwhile) == ["k0", "k1", "new"]
    assert {k: contents(b, bucket)[k] for k in ("k0", "k1", "new")} == {
        "k0": b"client k0",
        "k1": b"client k1",
        "new": b"client new",
    }
    monkeypatch.setattr(s3_journal, "plan_with_journal", planner)
    after = journal_pass()  # decided again: the client writes are newer and kept (conflict rule)
    assert {k for k, _ in after.plan.kept} == {"k0", "k1", "new"}
    assert contents(b, bucket)["k0"] == b"client k0" and contents(b, bucket)["k1"] == b"client k1"


def test_watch_resume_after_a_first_pass_killed_half_way_deletes_no_client_write(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    """The session is on storage before the first pass acts: killed before its transfers and re-run
    after a client wrote to the destination, the pass no longer treats the client's key as a leftover
    from before the session (remove=True would delete it)."""
    from tasks.fault_points import InjectedFault, crash_after

    a, b, bucket = _bucket_pair(object_store_a, object_store_b, "killed")
    for i in range(6):
        put(a, bucket, f"k{i}", b"v%d" % i)

    def journal_pass() -> Any:
        return _journal_pass(a, b, bucket)

    with crash_after("journal_session_saved"), pytest.raises(InjectedFault):
        journal_pass()  # the worker dies right after the session was saved
    put(b, bucket, "client-wrote-this", b"switched client")
    resumed = journal_pass()
    assert [k for k, _ in resumed.plan.kept] == ["client-wrote-this"]
    assert contents(b, bucket)["client-wrote-this"] == b"switched client"
    assert sorted(contents(b, bucket)) == ["client-wrote-this", *[f"k{i}" for i in range(6)]]


def test_dns_window_writes_after_the_final_pass_on_the_new_side_are_kept_on_the_old_side_fail(
    object_store_a: ObjectStore, object_store_b: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the final pass and the verification, a client on the new DNS writes to the
    destination: the run passes and lists it as kept. A client still on the old DNS writes to the
    source: the run fails naming the key (it must be mirrored before the source goes away)."""
    import flows.bucket_mirror_journal as bmj
    from stateferry.errors import PreconditionFailed

    a, b, bucket = _bucket_pair(object_store_a, object_store_b, "late")
    for i in range(4):
        put(a, bucket, f"k{i}", b"v%d" % i)
    verify = bmj.verify_journal_mirror
    late: dict[str, Any] = {}

    def clients_then_verify(*args: Any, **kwargs: Any) -> Any:
        late["write"]()
        return verify(*args, **kwargs)

    monkeypatch.setattr(bmj, "verify_journal_mirror", clients_then_verify)
    late["write"] = lambda: (put(b, bucket, "k0", b"new-dns client"), put(b, bucket, "fresh", b"x"))
    summary = bucket_mirror(source=object_store_a, destination=object_store_b, bucket=bucket, journal=True)
    assert summary["verified"] is True
    assert contents(b, bucket)["k0"] == b"new-dns client"
    late["write"] = lambda: put(a, bucket, "k1", b"old-dns client")
    with pytest.raises(PreconditionFailed, match="changed on the source after the final pass"):
        bucket_mirror(source=object_store_a, destination=object_store_b, bucket=bucket, journal=True)


def test_dns_window_checksum_verification_compares_bytes_when_etag_kinds_differ(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    """A pair whose ETags are of different kinds (multipart source, plain-MD5 destination) and for
    which the journal records nothing: ``verify="etag"`` cannot tell and fails; ``verify="checksum"``
    compares the stored bytes and passes, and fails again once a byte differs."""
    from flows.bucket_mirror_journal import verify_journal_mirror
    from planning.mirror import MirrorOptions
    from tasks.s3_mirror_pass import open_session

    a, b, bucket = _bucket_pair(object_store_a, object_store_b, "cks")
    body = os.urandom(6 * 1024 * 1024)
    a.put_object(bucket, "big.bin", io.BytesIO(body), len(body), part_size=5 * 1024 * 1024)
    b.put_object(bucket, "big.bin", io.BytesIO(body), len(body), part_size=64 * 1024 * 1024)  # one PUT
    session = open_session(object_store_a, object_store_b, bucket, None, "", None, 4)
    ok, _, _ = verify_journal_mirror.fn(session, MirrorOptions(verify="etag"), True)
    assert not ok
    ok, detail, _ = verify_journal_mirror.fn(session, MirrorOptions(verify="checksum"), True)
    assert ok, detail
    bad = body[:-1] + bytes([body[-1] ^ 1])
    b.put_object(bucket, "big.bin", io.BytesIO(bad), len(bad), part_size=64 * 1024 * 1024)
    ok, _, _ = verify_journal_mirror.fn(session, MirrorOptions(verify="checksum"), True)
    assert not ok
