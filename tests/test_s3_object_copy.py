"""The lean small-object path of tasks/s3_object_copy.py against two real SeaweedFS stores."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime

from blocks.object_store import ObjectStore
from planning.mirror import Action, ActionKind, ObjectEntry
from tasks.s3_clients import mirror_client
from tasks.s3_transfer import Transferrer

KEYS = ("plain.txt", "a b+c%d/é ü?.txt", "semi;colon=x&y~z", "deep/er/path/#hash")


def _copy(key: str, size: int) -> Action:
    entry = ObjectEntry(key=key, size=size, etag="", last_modified=datetime.now(UTC))
    return Action(ActionKind.COPY, key, size, "missing", source=entry)


def test_odd_keys_are_copied_and_a_vanished_object_is_counted(
    object_store_a: ObjectStore, object_store_b: ObjectStore
) -> None:
    a, b = mirror_client(object_store_a), mirror_client(object_store_b)
    src, dst = f"oc-{uuid.uuid4().hex[:8]}", f"oc-{uuid.uuid4().hex[:8]}"
    a.make_bucket(src)
    b.make_bucket(dst)
    for key in KEYS:
        body = key.encode() * 3
        a.put_object(src, key, io.BytesIO(body), len(body), content_type="text/x-odd")
    actions = [_copy(key, len(key.encode()) * 3) for key in KEYS] + [_copy("vanished.txt", 5)]
    report = Transferrer(a, b, workers=2).run(actions, src, dst)
    assert report.failures == []
    assert (report.copied, report.confirmed, report.vanished) == (len(KEYS), len(KEYS), 1)
    for key in KEYS:
        response = b.get_object(dst, key)
        try:
            assert response.read() == key.encode() * 3
            assert response.headers["content-type"] == "text/x-odd"
        finally:
            response.close()
            response.release_conn()
    assert sorted(o.object_name or "" for o in b.list_objects(dst, recursive=True)) == sorted(KEYS)
