"""End-to-end tests of flows/bucket_mirror.py against two real SeaweedFS S3 stores and a Prefect server."""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error
from prefect_run import latest_artifact
from pydantic import SecretStr

from blocks.object_store import ObjectStore
from devservers.ports import free_port
from devservers.prefect_runs import find_flow_run, wait_for_approval_form
from devservers.s3 import SeaweedS3
from flows.bucket_mirror import bucket_mirror
from planning.mirror_journal import JOURNAL_PREFIX
from stateferry.errors import InputError, PreconditionFailed, TransientError

MiB = 1024 * 1024
pytestmark = pytest.mark.usefixtures("prefect_server")


def _bucket(tag: str) -> str:
    return f"mir-{tag}-{uuid.uuid4().hex[:8]}"


def _client(store: ObjectStore) -> Minio:
    return store.minio_client()


def put(client: Minio, bucket: str, key: str, data: bytes, **kw: Any) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data), **kw)


def snapshot(
    client: Minio, bucket: str, prefix: str = ""
) -> dict[str, tuple[int, str, tuple[tuple[str, str], ...]]]:
    """key -> (size, sha256 of stored bytes, preserved headers) for every object under prefix."""
    out: dict[str, tuple[int, str, tuple[tuple[str, str], ...]]] = {}
    for obj in client.list_objects(bucket, prefix=prefix or None, recursive=True):
        name = obj.object_name or ""
        if name.startswith(JOURNAL_PREFIX):  # the mirror's journal (watch / two-way mode)
            continue
        try:
            response = client.get_object(bucket, name)
        except S3Error as exc:  # a running watch deleted it between the listing and the GET
            if exc.code == "NoSuchKey":
                continue
            raise
        try:
            data = response.read(decode_content=False)
            headers = tuple(
                sorted(
                    (k.lower(), v)
                    for k, v in response.headers.items()
                    if k.lower().startswith("x-amz-meta-")
                    or k.lower()
                    in ("content-type", "cache-control", "content-encoding", "content-disposition")
                )
            )
        finally:
            response.close()
            response.release_conn()
        out[name[len(prefix) :]] = (len(data), hashlib.sha256(data).hexdigest(), headers)
    return out


def etags(client: Minio, bucket: str) -> dict[str, str]:
    return {o.object_name or "": o.etag or "" for o in client.list_objects(bucket, recursive=True)}


@pytest.fixture
def buckets(object_store_a: ObjectStore, object_store_b: ObjectStore) -> Iterator[tuple[str, Minio, Minio]]:
    """A fresh source bucket on store A (destination of the same name is created by the flow)."""
    name = _bucket("t")
    a, b = _client(object_store_a), _client(object_store_b)
    a.make_bucket(name)
    yield name, a, b


def test_sync_then_source_changes_are_reproduced_exactly(
    buckets: tuple[str, Minio, Minio], object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    name, a, b = buckets
    put(
        a,
        name,
        "docs/a.txt",
        b"hello world 1",
        content_type="text/plain",
        metadata={"x-amz-meta-owner": "ops", "Cache-Control": "max-age=60", "Content-Disposition": "inline"},
    )
    put(a, name, "docs/b.bin", b"\x00" * 1000)
    put(a, name, "gone.txt", b"bye")
    put(a, name, "meta.txt", b"same content", content_type="text/plain")
    zipped = gzip.compress(b"compressible " * 500)
    put(
        a,
        name,
        "site/app.js",
        zipped,
        content_type="application/javascript",
        metadata={"Content-Encoding": "gzip"},
    )
    big = bytes(range(256)) * (12 * MiB // 256)
    put(a, name, "big/multipart.bin", big, part_size=5 * MiB)  # 3-part ETag on the source
    put(a, name, "big/streamed.bin", big[: 3 * MiB + 7])  # piped GET -> PUT (over stream_min)
    put(a, name, "tmp/skip.tmp", b"excluded")

    first = bucket_mirror(object_store_a, object_store_b, bucket=name, exclude=["*.tmp"], auto_approve=True)
    assert first["verified"] is True
    assert first["copied"] == 7
    # verified from the pass: every write's destination ETag equals the source's, no re-listing
    assert first["confirmed"] == 7
    assert "confirmed by the destination's ETag" in first["verification"]
    assert first["failures_last_pass"] == []
    src = snapshot(a, name)
    del src["tmp/skip.tmp"]
    assert (
        snapshot(b, name) == src
    )  # bytes (gzip body not decoded), content-type, user metadata, cache headers
    # a multipart source up to single_put_max is piped into one PUT: the destination's ETag is the MD5
    # of the source's bytes (confirmed against the MD5 of the stream)
    assert etags(b, name)["big/multipart.bin"].strip('"') == hashlib.md5(big).hexdigest()

    # Changes on the source: new, deleted, same-size edit, grown object, new metadata only.
    time.sleep(1.1)  # S3 modification times have 1 s resolution
    put(a, name, "docs/new.txt", b"brand new")
    a.remove_object(name, "gone.txt")
    put(
        a,
        name,
        "docs/a.txt",
        b"hello world 2",
        content_type="text/plain",
        metadata={"x-amz-meta-owner": "ops", "Cache-Control": "max-age=60", "Content-Disposition": "inline"},
    )
    put(a, name, "docs/b.bin", b"\x00" * 2000)
    a.copy_object(
        name,
        "meta.txt",
        CopySource(name, "meta.txt"),
        metadata={"x-amz-meta-label": "blue", "Content-Type": "text/markdown"},
        metadata_directive=REPLACE,
    )

    # Dry run: the plan, nothing changed.
    before = snapshot(b, name)
    plan = bucket_mirror(
        object_store_a, object_store_b, bucket=name, remove=True, exclude=["*.tmp"], dry_run=True
    )
    assert snapshot(b, name) == before
    assert plan["planned"]["copy"] == 1
    assert plan["planned"]["overwrite"] == 3  # a.txt (etag), b.bin (size), meta.txt (metadata)
    assert plan["planned"]["delete"] == 1
    assert plan["planned"]["inspect"] == 0
    plan_md = latest_artifact("bucket-mirror-plan")
    assert "| copy | 1 |" in plan_md and "docs/new.txt" in plan_md and "metadata differs" in plan_md

    second = bucket_mirror(
        object_store_a, object_store_b, bucket=name, remove=True, exclude=["*.tmp"], auto_approve=True
    )
    # ... and the real run did exactly what the dry run planned.
    assert second["copied"] == plan["planned"]["copy"]
    assert second["overwritten"] + second["metadata_updated"] == plan["planned"]["overwrite"]
    assert second["metadata_updated"] == 1
    assert second["deleted"] == plan["planned"]["delete"]
    assert second["verified"] is True
    src = snapshot(a, name)
    del src["tmp/skip.tmp"]
    assert snapshot(b, name) == src

    # remove=False keeps extras on the destination; a pass with nothing to do changes nothing.
    put(b, name, "extra-on-destination.txt", b"keep me")
    a.remove_object(name, "docs/new.txt")
    third = bucket_mirror(
        object_store_a, object_store_b, bucket=name, remove=False, exclude=["*.tmp"], auto_approve=True
    )
    assert third["copied"] == third["overwritten"] == third["deleted"] == 0
    assert {"extra-on-destination.txt", "docs/new.txt"} <= set(snapshot(b, name))


def test_same_store_server_side_copy_with_saved_blocks(object_store_a: ObjectStore) -> None:
    name = _bucket("ss")
    a = _client(object_store_a)
    a.make_bucket(name)
    for i in range(5):
        put(a, name, f"in/{i}.txt", f"object {i}".encode(), metadata={"x-amz-meta-i": str(i)})
    block_name = f"mirror-{uuid.uuid4().hex[:8]}"
    object_store_a.save(block_name, overwrite=True)
    loaded = ObjectStore.load(block_name)
    assert isinstance(loaded, ObjectStore)
    result = bucket_mirror(
        loaded, loaded, bucket=name, prefix="in/", destination_prefix="out/", auto_approve=True
    )
    assert result["copied"] == 5 and result["verified"] is True
    assert snapshot(a, name, "out/") == snapshot(a, name, "in/")
    # Same location twice is refused before anything is written.
    with pytest.raises(InputError, match="destination") as err:
        bucket_mirror(loaded, loaded, bucket=name, prefix="in/", auto_approve=True)
    assert "same location" in str(err.value)


def _wait_paused(run_name: str, timeout: float = 60) -> UUID:
    """The run's id once it is paused with its approval form (input schema) written."""
    run_id = find_flow_run(run_name=run_name, timeout=timeout)
    wait_for_approval_form(run_id, timeout)
    return run_id


def _eventually(check: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


def test_watch_mirrors_changes_until_cutover_is_approved(
    buckets: tuple[str, Minio, Minio], object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    from prefect.flow_runs import resume_flow_run

    name, a, b = buckets
    for i in range(4):
        put(a, name, f"k{i}", f"v{i}".encode())
    run_name = f"watch-{uuid.uuid4().hex[:8]}"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = bucket_mirror.with_options(flow_run_name=run_name)(
                object_store_a,
                object_store_b,
                bucket=name,
                remove=True,
                watch=True,
                watch_interval_seconds=1.0,
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        flow_run = _wait_paused(run_name)
        assert set(snapshot(b, name)) == {"k0", "k1", "k2", "k3"}
        # Written and deleted during the watch: reproduced within the interval (+ one pass).
        put(a, name, "during-watch", b"new while watching")
        a.remove_object(name, "k0")
        took = _eventually(
            lambda: set(snapshot(b, name)) == {"k1", "k2", "k3", "during-watch"},
            timeout=30,
        )
        assert took < 12
        put(a, name, "late", b"written just before the cutover")
        # The operator approves "DNS cutover done" (what the UI's resume form sends).
        resume_flow_run(flow_run, run_input={"approved": True, "comment": "all clients moved"})
        thread.join(timeout=120)
        assert not thread.is_alive()
    finally:
        if thread.is_alive():  # never leave a paused run behind
            run_state = _wait_paused(run_name, timeout=5)
            resume_flow_run(run_state, run_input={"approved": True, "comment": "cleanup"})
            thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result["mode"] == "watch"
    assert result["verified"] is True
    assert result["watch"]["mode"] == "polling"  # SeaweedFS has no bucket notifications
    assert "NotImplemented" in result["watch"]["detail"]
    assert result["watch"]["approval_comment"] == "all clients moved"
    assert snapshot(b, name) == snapshot(a, name)
    _assert_run_artifacts(flow_run, object_store_a)


def _assert_run_artifacts(flow_run_id: Any, store: ObjectStore) -> None:
    """Progress artifacts were reported during the passes; no secret reached the API."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        run = client.read_flow_run(flow_run_id)
    kinds = {a.type for a in artifacts}
    assert {"progress", "markdown"} <= kinds, kinds
    assert any(a.type == "progress" and float(str(a.data)) == 100.0 for a in artifacts)
    secret = store.secret_key.get_secret_value()
    assert secret not in repr(run.parameters)
    assert all(secret not in str(a.data) for a in artifacts)


def test_destination_restart_mid_pass_converges(
    buckets: tuple[str, Minio, Minio],
    object_store_a: ObjectStore,
    object_store_b: ObjectStore,
    s3_b: SeaweedS3,
) -> None:
    name, a, b = buckets
    payload = bytes(range(256)) * 256  # 64 KiB
    for i in range(600):
        put(a, name, f"obj/{i:04d}", payload[:-4] + i.to_bytes(4, "big"))
    for i in range(3):
        put(a, name, f"large/{i}", payload * 64)  # 4 MiB

    restarted: dict[str, float] = {}

    def restart_soon() -> None:
        _eventually(
            lambda: b.bucket_exists(name) and any(True for _ in b.list_objects(name, prefix="obj/")), 60
        )
        restarted["begin"] = time.monotonic()
        s3_b.restart()
        restarted["end"] = time.monotonic()

    restarter = threading.Thread(target=restart_soon, daemon=True)
    restarter.start()
    results: list[dict[str, Any]] = []
    for _attempt in range(3):  # "run again if needed"
        try:
            results.append(
                bucket_mirror(object_store_a, object_store_b, bucket=name, workers=8, auto_approve=True)
            )
            break
        except Exception as exc:
            results.append({"error": str(exc)})
            restarter.join(timeout=90)
    finished = time.monotonic()
    restarter.join(timeout=90)
    print(results, restarted)
    assert restarted["begin"] < finished  # the server went down while the flow was mirroring
    assert results[-1].get("verified") is True, results
    assert results[-1]["copied"] + sum(r.get("copied", 0) for r in results[:-1]) >= 1
    b2 = _client(object_store_b)
    assert snapshot(b2, name) == snapshot(a, name)


def test_source_unreachable_deletes_nothing(
    buckets: tuple[str, Minio, Minio], object_store_b: ObjectStore
) -> None:
    name, _a, b = buckets
    b.make_bucket(name)
    put(b, name, "precious", b"must survive")
    dead = ObjectStore(endpoint=f"127.0.0.1:{free_port()}", access_key="x", secret_key=SecretStr("y"))
    with pytest.raises(TransientError, match=r"source store .* is unreachable") as err:
        bucket_mirror(
            dead,
            object_store_b,
            bucket=name,
            remove=True,
            allow_empty_source=True,
            max_delete_ratio=1.0,
            auto_approve=True,
        )
    assert "Nothing was copied or deleted" in str(err.value)
    assert [o.object_name for o in b.list_objects(name, recursive=True)] == ["precious"]


@pytest.mark.parametrize(
    ("case", "field", "fragment"),
    [
        ("unknown-bucket", "bucket", "does not exist on the source"),
        ("wrong-credentials", "source", "rejected the credentials"),
        ("identical", "destination", "same location"),
        ("bad-duration", "newer_than", "not a duration"),
        ("short-destination-bucket", "destination_bucket", "not a valid S3 bucket name"),
        ("option-like-destination-bucket", "destination_bucket", "not a valid S3 bucket name"),
    ],
)
def test_bad_input_fails_before_writing(
    case: str, field: str, fragment: str, object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    name = _bucket("bad")
    a, b = _client(object_store_a), _client(object_store_b)
    source, destination = object_store_a, object_store_b
    if case != "unknown-bucket":
        a.make_bucket(name)
        put(a, name, "x", b"x")
    if case == "wrong-credentials":
        source = object_store_a.model_copy(update={"secret_key": SecretStr("wrong-secret")})
    if case == "identical":
        destination = object_store_a
    kwargs: dict[str, Any] = {"newer_than": "soon"} if case == "bad-duration" else {}
    if case == "short-destination-bucket":
        kwargs["destination_bucket"] = "d0"
    if case == "option-like-destination-bucket":
        kwargs["destination_bucket"] = "--endpoint-url=http://evil"
    with pytest.raises(InputError) as err:
        bucket_mirror(source, destination, bucket=name, auto_approve=True, **kwargs)
    assert err.value.field == field
    assert fragment in str(err.value)
    assert "wrong-secret" not in str(err.value)
    assert not b.bucket_exists(name)  # nothing written on the destination


def test_whole_store_mode_creates_missing_buckets(tmp_path: Path, object_store_b: ObjectStore) -> None:
    with SeaweedS3(tmp_path / "src") as fresh:
        source = ObjectStore(
            endpoint=fresh.endpoint, access_key=fresh.access_key, secret_key=SecretStr(fresh.secret_key)
        )
        a = _client(source)
        names = [_bucket("w1"), _bucket("w2")]
        for n in names:
            a.make_bucket(n)
            put(a, n, "file", n.encode())
        result = bucket_mirror(source, object_store_b, auto_approve=True)
        assert set(names) <= set(result["buckets_created"])
        b = _client(object_store_b)
        for n in names:
            assert snapshot(b, n) == snapshot(a, n)


def test_deletes_over_the_cap_wait_for_approval_and_empty_source_never_deletes(
    buckets: tuple[str, Minio, Minio], object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    from prefect.flow_runs import resume_flow_run

    from tasks.approvals import ApprovalRejected

    name, a, b = buckets
    for i in range(4):
        put(a, name, f"k{i}", b"v")
    bucket_mirror(object_store_a, object_store_b, bucket=name, auto_approve=True)
    for i in range(1, 4):
        a.remove_object(name, f"k{i}")  # 3 of 4 destination objects to delete: over max_delete_ratio=0.5

    # Rejected in the UI: nothing deleted.
    run_name = f"cap-{uuid.uuid4().hex[:8]}"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = bucket_mirror.with_options(flow_run_name=run_name)(
                object_store_a, object_store_b, bucket=name, remove=True
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    paused = _wait_paused(run_name)
    assert "k1" in latest_artifact("approval-mirror-deletes-1")
    resume_flow_run(paused, run_input={"approved": False, "comment": "not yet"})
    thread.join(timeout=60)
    assert isinstance(outcome.get("error"), ApprovalRejected)
    assert len(list(b.list_objects(name))) == 4

    # Approved: exactly the withheld deletes are done.
    result = bucket_mirror(object_store_a, object_store_b, bucket=name, remove=True, auto_approve=True)
    assert result["deleted"] == 3 and result["verified"] is True
    assert [o.object_name for o in b.list_objects(name)] == ["k0"]

    # An empty source never wipes the destination (unless allow_empty_source=True).
    a.remove_object(name, "k0")
    with pytest.raises(PreconditionFailed, match="withheld"):
        bucket_mirror(
            object_store_a, object_store_b, bucket=name, remove=True, max_delete_ratio=1.0, auto_approve=True
        )
    assert [o.object_name for o in b.list_objects(name)] == ["k0"]
    emptied = bucket_mirror(
        object_store_a,
        object_store_b,
        bucket=name,
        remove=True,
        max_delete_ratio=1.0,
        allow_empty_source=True,
        auto_approve=True,
    )
    assert emptied["deleted"] == 1 and list(b.list_objects(name)) == []


def test_checksum_verification_catches_what_size_and_mtime_miss(
    buckets: tuple[str, Minio, Minio], object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    name, a, b = buckets
    size = 6 * MiB
    put(a, name, "blob", b"A" * size, part_size=5 * MiB)  # multipart ETag "...-2"
    b.make_bucket(name)
    time.sleep(1.1)
    put(b, name, "blob", b"B" * size, part_size=64 * MiB)  # same size, single-part ETag, newer

    by_etag = bucket_mirror(object_store_a, object_store_b, bucket=name, auto_approve=True)
    assert by_etag["overwritten"] == 0  # size + mtime cannot tell (what mc does)
    by_checksum = bucket_mirror(
        object_store_a, object_store_b, bucket=name, verify="checksum", auto_approve=True
    )
    assert by_checksum["overwritten"] == 1 and by_checksum["verified"] is True
    assert snapshot(b, name) == snapshot(a, name)
    assert etags(b, name)["blob"].strip('"') == hashlib.md5(b"A" * size).hexdigest()  # one PUT
    assert "PASSED" in latest_artifact("bucket-mirror-summary")


def test_one_failing_object_is_reported_and_does_not_abort_the_pass(
    buckets: tuple[str, Minio, Minio], object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    name, a, b = buckets
    long_name = "x" * 200  # fine on the source; with the destination prefix the name exceeds 255 bytes
    for key in ("a", "b", long_name, "c"):
        put(a, name, key, key.encode())
    dst_prefix = "mirrored-" + "p" * 60
    with pytest.raises(PreconditionFailed) as err:
        bucket_mirror(
            object_store_a,
            object_store_b,
            bucket=name,
            destination_prefix=dst_prefix + "*",  # a string prefix, not a folder
            max_passes=1,
            auto_approve=True,
        )
    message = str(err.value)
    assert "1 objects failed" in message and "KeyTooLong" in message
    assert sorted(o.object_name or "" for o in b.list_objects(name, recursive=True)) == [
        f"{dst_prefix}{k}" for k in ("a", "b", "c")
    ]
    summary = latest_artifact("bucket-mirror-summary")
    assert "FAILED" in summary and long_name in summary


def test_prefetched_listing_keeps_order_and_reraises_listing_errors() -> None:
    from datetime import UTC, datetime

    from planning.mirror import ObjectEntry
    from tasks.s3_listing import prefetch

    t = datetime(2026, 1, 1, tzinfo=UTC)
    entries = [ObjectEntry(f"k{i:05d}", 1, "a" * 32, t) for i in range(2500)]
    assert list(prefetch(iter(entries), depth=2, batch=100)) == entries

    def broken() -> Iterator[ObjectEntry]:
        yield entries[0]
        raise TransientError("listing source bucket: connection reset")

    with pytest.raises(TransientError, match="connection reset"):
        list(prefetch(broken()))
