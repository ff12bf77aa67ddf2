"""Sharded bucket_mirror passes on a Dask LocalCluster of 2 worker processes (real SeaweedFS, Prefect)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from minio import Minio

from blocks.object_store import ObjectStore
from flows.bucket_mirror import bucket_mirror
from stateferry.errors import InputError

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def dask_cluster(prefect_server: Any) -> Iterator[str]:
    """A Dask LocalCluster of 2 worker processes (started once: the workers inherit PREFECT_API_URL)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield str(cluster.scheduler_address)


def _fill(client: Minio, bucket: str, keys: list[str], tag: bytes) -> None:
    def put(key: str) -> None:
        data = tag + key.encode() * 20
        client.put_object(bucket, key, io.BytesIO(data), len(data))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))


def _listing(client: Minio, bucket: str) -> dict[str, tuple[int, str]]:
    return {
        o.object_name or "": (o.size or 0, o.etag or "") for o in client.list_objects(bucket, recursive=True)
    }


def test_sharded_pass_on_dask_mirrors_the_bucket_and_merges_one_report(
    object_store_a: ObjectStore, object_store_b: ObjectStore, dask_cluster: str
) -> None:
    name = f"shard-{uuid.uuid4().hex[:8]}"
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    a.make_bucket(name)
    b.make_bucket(name)
    keys = [f"k/{i:04d}" for i in range(240)]
    _fill(a, name, keys, b"v1")
    # the destination already holds some of it: 20 identical, 10 stale, 5 extra (deleted by remove)
    _fill(b, name, keys[:20], b"v1")
    _fill(b, name, keys[20:30], b"old")
    _fill(b, name, [f"zz-extra/{i}" for i in range(5)], b"x")

    result = bucket_mirror(
        object_store_a,
        object_store_b,
        bucket=name,
        remove=True,
        auto_approve=True,
        shards=4,
        dask_address=dask_cluster,
        workers=4,
    )

    assert result["mode"] == "sharded" and result["shards"] == 4
    assert len(result["shard_seconds"]) == 4
    assert result["copied"] == 210 and result["overwritten"] == 10 and result["deleted"] == 5
    assert result["verified"] is True, result["verification"]
    assert result["failures_last_pass"] == []
    assert _listing(b, name) == _listing(a, name)

    again = bucket_mirror(
        object_store_a,
        object_store_b,
        bucket=name,
        remove=True,
        shards=3,
        dask_address=dask_cluster,
        workers=4,
    )
    assert again["copied"] == again["overwritten"] == again["deleted"] == 0
    assert again["verified"] is True


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"shards": 0}, "shards"),
        ({"shards": 2, "watch": True}, "shards"),
        ({"shards": 2, "dask_address": "tcp://x:1 --evil"}, "dask_address"),
    ],
)
def test_sharded_bad_input_fails_before_writing(
    object_store_a: ObjectStore, object_store_b: ObjectStore, kwargs: dict[str, Any], field: str
) -> None:
    name = f"shard-{uuid.uuid4().hex[:8]}"
    object_store_a.minio_client().make_bucket(name)
    with pytest.raises(InputError) as info:
        bucket_mirror(object_store_a, object_store_b, bucket=name, auto_approve=True, **kwargs)
    assert info.value.field == field
    assert not object_store_b.minio_client().bucket_exists(name)
