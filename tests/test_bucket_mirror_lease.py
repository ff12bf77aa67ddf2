"""Re-runs of a journal-mode mirror against two real SeaweedFS stores and a Prefect server.

test_watch_resume_*: a re-run never acts beside a live run of the same pair (the lease), takes over
from a finished one at once, does not ask again for deletes approved before a crash; conflicts show
in each pass's artifact.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from minio import Minio
from prefect import flow
from prefect_run import latest_artifact
from test_bucket_mirror_journal import _fresh, _watch_in_thread, contents, put

from blocks.object_store import ObjectStore
from devservers.prefect_runs import find_flow_run, resume_with_input, wait_for_approval_form
from flows.bucket_mirror import bucket_mirror
from planning.mirror_journal import JOURNAL_PREFIX
from stateferry.errors import PreconditionFailed
from tasks.mirror_lease import lease_key

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.timeout(300)]


def _leases(client: Minio, bucket: str) -> list[str]:
    return [
        str(o.object_name)
        for o in client.list_objects(bucket, prefix=JOURNAL_PREFIX, recursive=True)
        if str(o.object_name).endswith(".lease.json")
    ]


def test_watch_resume_a_second_run_refuses_while_the_watch_is_alive(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b, n=3)
    run_name = f"lease-holder-{uuid.uuid4().hex[:8]}"
    thread, outcome = _watch_in_thread(
        run_name,
        object_store_a,
        object_store_b,
        bucket=name,
        watch=True,
        direction="two-way",
        watch_interval_seconds=1.0,
    )
    run_id = find_flow_run(run_name=run_name, timeout=60)
    wait_for_approval_form(run_id, 60)
    assert len(_leases(b, name)) == 1
    put(a, name, "while-refused", b"a client write the refused run must not touch")
    started = time.monotonic()
    with pytest.raises(PreconditionFailed) as refused:
        bucket_mirror(object_store_a, object_store_b, bucket=name, direction="two-way", remove=True)
    waited = time.monotonic() - started
    assert run_name in str(refused.value) and "nothing was changed" in str(refused.value)
    assert waited < 14, f"a live holder is refused without waiting for the ttl ({waited:.1f}s)"

    resume_with_input(run_id, {"approved": True, "comment": "moved"})
    thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["verified"] is True and outcome["result"]["lease"] == []
    assert contents(b, name)["while-refused"] == b"a client write the refused run must not touch"
    assert _leases(b, name) == []  # released at the end
    again = bucket_mirror(object_store_a, object_store_b, bucket=name, direction="two-way")
    assert again["verified"] is True


@flow(name="lease-probe-finished-run")
def _finished_run() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id)


def test_watch_resume_takes_over_the_lease_of_a_finished_run_at_once(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    """A run that crashed without releasing its lease: Prefect says it is over, so the re-run does
    not wait for the lease to go stale. Conflicts of a pass are listed in that pass's artifact."""
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b, n=2)
    first = bucket_mirror(object_store_a, object_store_b, bucket=name, direction="two-way")
    assert first["verified"] is True
    dead_owner = _finished_run()
    label = f"{name}/ -> {name}/"
    key = lease_key(label)
    body = json.dumps({"owner": dead_owner, "name": "crashed-watch", "token": "t0", "seq": 7}).encode()
    b.put_object(name, key, io.BytesIO(body), len(body))
    put(a, name, "k0", b"source edit")
    time.sleep(1.1)  # S3 modification times have 1 s resolution
    put(b, name, "k0", b"destination edit (later)")

    started = time.monotonic()
    resumed = bucket_mirror(object_store_a, object_store_b, bucket=name, direction="two-way")
    assert time.monotonic() - started < 14  # not the 15 s of a stale lease
    assert resumed["lease"] == [f"{label}: took over the lease of 'crashed-watch' (its run has finished)"]
    assert resumed["verified"] is True and [c["key"] for c in resumed["conflicts"]] == ["k0"]
    assert contents(a, name)["k0"] == contents(b, name)["k0"] == b"destination edit (later)"
    pass_artifact = latest_artifact("bucket-mirror-pass-conflicts")
    assert "Mirror pass 1: 1 conflicts (rule `newest`)" in pass_artifact and "`k0`" in pass_artifact
    assert _leases(b, name) == []


def test_watch_resume_waits_out_a_stale_lease_of_a_run_that_never_finished(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    """A lease whose owner is unknown to Prefect (its process was killed, its run never ended):
    the re-run takes it only once it has stayed unchanged for the ttl."""
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b, n=1)
    key = lease_key(f"{name}/ -> {name}/")
    body = json.dumps({"owner": str(uuid.uuid4()), "name": "killed-watch", "token": "t", "seq": 1}).encode()
    b.put_object(name, key, io.BytesIO(body), len(body))
    started = time.monotonic()
    out: dict[str, Any] = bucket_mirror(object_store_a, object_store_b, bucket=name, direction="two-way")
    assert 15 <= time.monotonic() - started < 60
    assert out["lease"] == [f"{name}/ -> {name}/: took over the lease of 'killed-watch' (unchanged for 15s)"]
    assert contents(b, name) == {"k0": b"v1 of k0"}


def test_watch_resume_deletes_approved_before_a_crash_are_not_asked_again(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    from tasks.approvals import ApprovalTimedOut
    from tasks.fault_points import InjectedFault, crash_after

    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b, n=4)
    sync = {"bucket": name, "journal": True, "remove": True}
    assert bucket_mirror(object_store_a, object_store_b, **sync)["copied"] == 4
    for i in range(1, 4):
        a.remove_object(name, f"k{i}")  # 3 of 4: over max_delete_ratio=0.5, withheld until approved
    with crash_after("mirror_deletes_approved"), pytest.raises(InjectedFault):
        bucket_mirror(object_store_a, object_store_b, auto_approve=True, **sync)
    assert sorted(contents(b, name)) == ["k0", "k1", "k2", "k3"]  # approved, killed before deleting

    # Not asked again: without auto-approval a pause would time out after 3 s and fail the run.
    resumed = bucket_mirror(object_store_a, object_store_b, approval_timeout_seconds=3, **sync)
    assert resumed["deleted"] == 3 and resumed["verified"] is True
    assert sorted(contents(b, name)) == ["k0"]
    assert not [
        o.object_name
        for o in b.list_objects(name, prefix=JOURNAL_PREFIX, recursive=True)
        if str(o.object_name).endswith(".deletes-approved.json.gz")
    ]  # the approval was used up

    for i in range(4, 8):
        put(a, name, f"k{i}", b"new")
    bucket_mirror(object_store_a, object_store_b, **sync)
    for i in range(4, 8):
        a.remove_object(name, f"k{i}")
    with pytest.raises(ApprovalTimedOut):  # other deletes: asked for again
        bucket_mirror(object_store_a, object_store_b, approval_timeout_seconds=3, **sync)
    assert sorted(contents(b, name)) == ["k0", "k4", "k5", "k6", "k7"]
