"""Hostile input to bucket_mirror (issue 11, finding 9): prefixes match at a ``/`` boundary.

Real SeaweedFS S3 stores and a Prefect server from tests/conftest.py.
"""

from __future__ import annotations

import io
import uuid

import pytest
from minio import Minio

from blocks.object_store import ObjectStore
from flows.bucket_mirror import bucket_mirror
from stateferry.errors import InputError

pytestmark = pytest.mark.usefixtures("prefect_server")


def _put(client: Minio, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data))


def _keys(client: Minio, bucket: str) -> set[str]:
    return {o.object_name or "" for o in client.list_objects(bucket, recursive=True)}


def _pair(a: Minio, b: Minio) -> str:
    name = f"hostile-mir-{uuid.uuid4().hex[:8]}"
    a.make_bucket(name)
    b.make_bucket(name)
    for key in ("logs/app.log", "logs-2024/jan.log", "logsfile"):
        _put(a, name, key, b"source " + key.encode())
    # On the destination: a stale folder object and neighbours that merely share the letters "logs".
    for key in ("logs/stale.log", "logs-2024/only-on-destination.log", "logs-archive/keep.log", "logsfile2"):
        _put(b, name, key, b"destination " + key.encode())
    return name


def test_hostile_mirror_prefix_matches_at_folder_boundary(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _pair(a, b)
    result = bucket_mirror(
        object_store_a, object_store_b, bucket=name, prefix="logs", remove=True, auto_approve=True
    )
    assert result["verified"] is True
    # Only logs/ is mirrored: its stale object goes, its file arrives; nothing outside logs/ is touched.
    assert _keys(b, name) == {
        "logs/app.log",
        "logs-2024/only-on-destination.log",
        "logs-archive/keep.log",
        "logsfile2",
    }
    assert result["deleted"] == 1 and result["copied"] == 1


def test_hostile_mirror_prefix_star_is_an_explicit_string_prefix(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _pair(a, b)
    # A '*' anywhere but at the end is refused before anything is written.
    before = _keys(b, name)
    with pytest.raises(InputError, match="prefix"):
        bucket_mirror(object_store_a, object_store_b, bucket=name, prefix="lo*gs", remove=True)
    with pytest.raises(InputError, match="destination_prefix"):
        bucket_mirror(object_store_a, object_store_b, bucket=name, prefix="logs", destination_prefix="x\ny")
    assert _keys(b, name) == before
    # "logs*" is what the user asked for: every key starting with "logs".
    result = bucket_mirror(
        object_store_a,
        object_store_b,
        bucket=name,
        prefix="logs*",
        remove=True,
        max_delete_ratio=1.0,
        auto_approve=True,
    )
    assert result["verified"] is True
    assert _keys(b, name) == {"logs/app.log", "logs-2024/jan.log", "logsfile"}
