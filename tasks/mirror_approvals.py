"""Approved mirror deletes, recorded next to the journal so a re-run does not ask again.

When the final pass of a journal-mode run withholds deletes (``max_delete_ratio``, an empty side),
the operator approves them in the UI. The approved keys of each bucket pair are written at once to
``.stateferry-mirror/<pair hash>.deletes-approved.json.gz``; a run killed before the approved pass
finished finds them there, and when the deletes it withholds are among them it does not ask again.
Keys outside the approved set (the sides changed since) are asked for. The record is removed once
the approved pass succeeded, so the next withheld deletes are asked for.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable

from minio import Minio

from stateferry.errors import NotFound, translate
from tasks.s3_journal import journal_key
from tasks.s3_listing import read_small_object, write_small_object

__all__ = ["clear_approved_deletes", "load_approved_deletes", "save_approved_deletes"]


def _key(label: str) -> str:
    return journal_key(label)[: -len(".jsonl.gz")] + ".deletes-approved.json.gz"


def load_approved_deletes(client: Minio, bucket: str, label: str) -> set[str]:
    """Keys whose deletes were approved for this pair (empty when none, or when unreadable: an
    unreadable record approves nothing)."""
    data = read_small_object(client, bucket, _key(label), what=f"the approved deletes of {label}")
    if data is None:
        return set()
    try:
        doc = json.loads(gzip.decompress(data))
        keys = doc.get("keys") if isinstance(doc, dict) else None
    except (ValueError, OSError, EOFError):
        return set()
    return {k for k in keys if isinstance(k, str)} if isinstance(keys, list) else set()


def save_approved_deletes(client: Minio, bucket: str, label: str, keys: Iterable[str]) -> None:
    """Record approved deletes for this pair (one PUT)."""
    data = gzip.compress(json.dumps({"pair": label, "keys": sorted(set(keys))}).encode())
    write_small_object(
        client, bucket, _key(label), data, "application/gzip", what=f"the approved deletes of {label}"
    )


def clear_approved_deletes(client: Minio, bucket: str, label: str) -> None:
    """Remove the record (the approved pass is done)."""
    try:
        client.remove_object(bucket, _key(label))
    except Exception as exc:
        err = translate(exc, context=f"clearing the approved deletes of {label}")
        if not isinstance(err, NotFound):
            raise err from exc
