"""Every restore proves itself: the restored copy's inventory against the one in the manifest.

The manifest's ``inventory`` (per database, ``files`` or ``etcd``) says what the backup holds; a
restore lists the same kinds in what it restored and fails naming each missing or different object.
A difference the backup's own verification accepted as the source's drift during the dump
(``verification.drift``) is what the archive truly holds and is not a failure now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stateferry.errors import PermanentError
from tasks.backup_crypto import open_plain
from tasks.inventory import compare_inventories, inventory_table
from tasks.restore_ops import etcd_snapshot_status, spooled_snapshot


class RestoreIncomplete(PermanentError):
    """The restored copy lacks (or differs in) objects the backup's inventory lists."""

    def __init__(self, message: str, expected: dict[str, Any], restored: dict[str, Any]) -> None:
        super().__init__(message)
        self.expected, self.restored = expected, restored

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.expected, self.restored))


def expected_inventory(manifest: dict[str, Any], section: str) -> dict[str, Any] | None:
    """What the manifest says ``section`` (a database, ``files``, ``etcd``) holds; None if unrecorded."""
    inventory = manifest.get("inventory") or {}
    want = inventory.get(section)
    return want if isinstance(want, dict) else None


def _accepted_drift(manifest: dict[str, Any]) -> set[str]:
    verification = manifest.get("verification")
    drift = verification.get("drift") if isinstance(verification, dict) else None
    return {d for d in drift if isinstance(d, str)} if isinstance(drift, list) else set()


def restored_problems(manifest: dict[str, Any], section: str, restored: dict[str, Any]) -> list[str]:
    """Every object of the manifest's inventory missing or different in ``restored`` (pure).

    A difference the backup's verification accepted as the source's drift during the dump (listed
    in ``verification.drift``, same message) is the archive's true content and not a failure.

    Args:
        manifest: the (checked) manifest of the backup.
        section: the database name in the backup, ``files`` or ``etcd``.
        restored: the inventory listed in what was restored.
    """
    return _problems_and_notes(manifest, section, restored)[0]


def _rows_exact(manifest: dict[str, Any]) -> bool:
    """MySQL lists the source just before the dump, not in its snapshot: its row counts describe the
    archive only after a verification reconciled them (drift recorded). PostgreSQL's inventory is
    taken in the dump's own snapshot; files and etcd describe the part itself."""
    verification = manifest.get("verification")
    verified = isinstance(verification, dict) and verification.get("result") == "ok"
    return manifest.get("engine") != "mysql" or verified


def _problems_and_notes(
    manifest: dict[str, Any], section: str, restored: dict[str, Any]
) -> tuple[list[str], list[str]]:
    want = expected_inventory(manifest, section)
    if want is None:
        return [], []
    notes: list[str] = []
    if not _rows_exact(manifest) and isinstance(want.get("tables"), dict):
        # row counts taken before an unverified dump may differ from the archive: a note, not a failure
        got_tables = restored.get("tables") if isinstance(restored.get("tables"), dict) else {}
        notes = [
            p + " (row counts of an unverified MySQL backup are taken just before the dump)"
            for p in compare_inventories(section, {"tables": want["tables"]}, {"tables": got_tables})
            if " restored, " in p
        ]
        want = {**want, "tables": sorted(want["tables"])}
        restored = {**restored, "tables": sorted(got_tables or {})}
    accepted = _accepted_drift(manifest)
    return [p for p in compare_inventories(section, want, restored) if p not in accepted], notes


class InventoryCheck:
    """Collects expected / restored inventories and problems of one restore."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        self.expected: dict[str, Any] = {}
        self.restored: dict[str, Any] = {}
        self.problems: list[str] = []
        self.not_compared: dict[str, str] = {}
        self.notes: list[str] = []
        self.narrowed = _narrowed_sections(manifest)

    def add(
        self,
        section: str,
        restored: dict[str, Any],
        fallback: dict[str, Any] | None = None,
    ) -> list[str]:
        """Compare one restored section; returns its problems (also kept).

        ``fallback`` is what to expect when the manifest has no inventory for the section (older
        manifests: the part's own facts).
        """
        want = expected_inventory(self.manifest, section)
        self.expected[section] = want if want is not None else (fallback or {})
        self.restored[section] = restored
        if section in self.narrowed:
            self.not_compared[section] = f"the dump was narrowed by {', '.join(self.narrowed[section])}"
            return []
        if want is None and fallback is not None:
            found = compare_inventories(section, fallback, restored)
        else:
            found, notes = _problems_and_notes(self.manifest, section, restored)
            self.notes += notes
        self.problems += found
        return found

    def raise_if_problems(self, what: str, consequence: str) -> None:
        """Raise :class:`RestoreIncomplete` naming every problem (with what happened to the copy)."""
        if self.problems:
            raise RestoreIncomplete(
                f"{what} is incomplete ({consequence}): " + "; ".join(printable(p) for p in self.problems),
                self.expected,
                self.restored,
            )

    def record(self) -> dict[str, Any]:
        """``{"expected", "restored", "compared"}`` for the flow's result."""
        return {
            "expected": self.expected,
            "restored": self.restored,
            "compared": [s for s, want in self.expected.items() if want and s not in self.not_compared],
            "not_compared": self.not_compared,
            "notes": [printable(n) for n in self.notes],
        }


def printable(text: str) -> str:
    """Names in a manifest are untrusted: no control characters (log lines), bounded length."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:300]


def _narrowed_sections(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Sections whose dump was narrowed by options (``--schema``, ``--ignore-table`` ...): the
    whole-database inventory cannot be compared with what such a dump restores."""
    out: dict[str, list[str]] = {}
    for part in manifest.get("parts") or []:
        keys = part.get("narrowed_by") if isinstance(part, dict) else None
        if not isinstance(keys, list) or not keys:
            continue
        shown = [str(k)[:40] for k in keys]
        for section in part.get("databases") or [part.get("database")]:
            if isinstance(section, str):
                out[section] = shown
    return out


def inventory_markdown(expected: dict[str, Any], restored: dict[str, Any]) -> list[str]:
    """The restore summary's side-by-side table (expected in the manifest / restored)."""
    if not expected:
        return []
    rows = inventory_table(expected, restored)
    rows[0] = "| database | kind | backup (manifest) | restored |"
    return ["", "## Inventory (backup / restored)", "", *rows]


# --------------------------------------------------------------------------------------------------
# etcd: key count and revision of a snapshot and of a data dir restored from it

ETCD_KEYS = ("totalKey", "revision", "hash")


def etcd_inventory(snapshot: Path) -> dict[str, Any]:
    """``{"totalKey", "revision", "hash"}`` of a snapshot file (``etcdctl snapshot status``)."""
    status = etcd_snapshot_status(snapshot)
    return {k: status.get(k) for k in ETCD_KEYS}


def etcd_data_dir_problems(data_dir: Path, want: dict[str, Any]) -> list[str]:
    """The data dir restored from a snapshot must be at the snapshot's revision and hold at least its
    keys (``snapshot restore`` rewrites the membership, so the hash differs and etcd's own
    bookkeeping may add a key)."""
    db = data_dir / "member" / "snap" / "db"
    if not db.exists():
        return [f"etcd: {data_dir} holds no member/snap/db after the restore"]
    got = etcd_snapshot_status(db)
    problems = compare_inventories(
        "etcd data dir",
        {"etcd": {"revision": want.get("revision")}},
        {"etcd": {"revision": got.get("revision")}},
    )
    if int(got.get("totalKey") or 0) < int(want.get("totalKey") or 0):
        problems.append(
            f"etcd data dir: {got.get('totalKey')} keys restored, {want.get('totalKey')} in the snapshot"
        )
    return problems


@task(name="etcd_backup_inventory", cache_policy=NO_CACHE)
def etcd_backup_inventory(
    storage: Any, job: str, backup_id: str, part: str, identities: list[Any] | None = None
) -> dict[str, Any]:
    """Key count, revision and hash of the (unpublished) snapshot part, for the manifest when no
    verification ran; ``identities`` decrypt an encrypted part."""
    with (
        storage.open_read(job, backup_id, part, published=False) as fh,
        open_plain(fh, identities, field="encryption.identity_secret", what=part) as plain,
        spooled_snapshot(plain) as snap,
    ):
        return etcd_inventory(snap)
