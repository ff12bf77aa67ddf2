"""Verification of an ``inc_files`` backup: the whole chain restored into scratch, compared with the source.

After the new link is written (still unpublished), every link it depends on is read back from the
same storage and sha256-checked (and decrypted) exactly as a restore does, the new link's stored
bytes are checked against what was written, all of them are applied in order into a private scratch
directory (through the same TarGate and GNU tar as a restore), and the result is compared, entry by
entry, with the source as it is now (:mod:`planning.tree_compare`: changes made since the dump
started are drift, anything else fails the verification and the new backup is discarded).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from planning.backup_config import FilesSourceConfig
from planning.inc_chain import chain_to
from planning.tree_compare import TreeEntry, excluded, summarize, tree_differences
from stateferry.errors import StateferryError
from tasks.backup_jobs import Resolved
from tasks.backup_pipeline import PartResult
from tasks.dumpers import CHUNK, sha256_file, tree_digest
from tasks.inc_files import extract_link, links_of, main_part
from tasks.restore_jobs import Selected, verified_parts

__all__ = ["verify_inc_chain", "walk_tree"]


def walk_tree(root: Path, name: str, excludes: list[str]) -> dict[str, TreeEntry]:
    """Entries of ``root`` named as the archive names them (``name/...``), excluded ones left out."""
    out: dict[str, TreeEntry] = {}
    if not root.is_dir():
        return out
    st = root.lstat()
    out[name] = TreeEntry("d", "", max(st.st_mtime, st.st_ctime))
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = name if rel_dir == "." else f"{name}/{rel_dir}"
        dirnames[:] = [d for d in dirnames if not excluded(f"{prefix}/{d}", excludes)]
        for entry in sorted(dirnames + filenames):
            rel = f"{prefix}/{entry}"
            if excluded(rel, excludes):
                continue
            full = Path(dirpath, entry)
            st = full.lstat()
            changed = max(st.st_mtime, st.st_ctime)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = TreeEntry("l", os.readlink(full), changed)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = TreeEntry("d", "", changed)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = TreeEntry("f", sha256_file(full), changed)
    return out


def verify_inc_chain(
    r: Resolved,
    backup_id: str,
    parts: list[PartResult],
    reader_label: str,
    open_part: Callable[[str], contextlib.AbstractContextManager[BinaryIO]],
    dump_started: float,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Restore the chain up to the new backup into scratch and compare it with the source.

    Returns:
        ``(checks, problems, drift)``: what was checked, what fails the verification, and changes the
        source made since the dump started.
    """
    main = next(p for p in parts if isinstance(p.info.get("chain"), dict))
    chain = main.info["chain"]
    storage = r.storages[reader_label]
    problems: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="stateferry-verify-"))
    checks: dict[str, Any] = {"chain": []}
    try:
        prior = []
        manifests: dict[str, dict[str, Any]] = {}
        if chain.get("parent"):
            links, manifests = links_of(storage.list_backups(r.job.job))
            prior = chain_to({x.backup_id: x for x in links}, str(chain["parent"]))
        with contextlib.ExitStack() as stack:  # every earlier link checked before the first is applied
            files = []
            for x in prior:
                sel = Selected(reader_label, x.backup_id, manifests[x.backup_id])
                paths = stack.enter_context(verified_parts(r, sel))
                part = main_part(manifests[x.backup_id])
                assert part is not None
                files.append(paths[part["name"]])
            h = hashlib.sha256()
            with storage.open_read(r.job.job, backup_id, main.name, published=False) as raw:
                for chunk in iter(lambda: raw.read(CHUNK), b""):
                    h.update(chunk)
            if h.hexdigest() != main.sha256:
                found = h.hexdigest()
                return (
                    checks,
                    [f"{backup_id}/{main.name} reads back as sha256 {found}, written {main.sha256}"],
                    [],
                )
            for path in files:
                with open(path, "rb") as fh:
                    extract_link(fh, scratch)
            with open_part(main.name) as fh:
                extract_link(fh, scratch)
        checks["chain"] = [x.backup_id for x in prior] + [backup_id]
        checks.update(tree_digest(scratch))  # the tree this point restores: the manifest's inventory
        src = r.job.source
        assert isinstance(src, FilesSourceConfig)  # inc_files reads files on the worker
        excludes = list(src.excludes or [])
        drift: list[str] = []
        entries = 0
        for target in src.target:
            name = Path(target).name
            source = walk_tree(Path(target), name, excludes)
            restored = walk_tree(scratch / name, name, [])
            entries += len(restored)
            p, d = tree_differences(source, restored, started=dump_started)
            problems += p
            drift += d
        checks["entries"] = entries
        if problems:
            problems = [summarize(problems, "differences from the source")]
        return checks, problems, [summarize(drift, "changed since the dump started")] if drift else []
    except StateferryError as exc:
        return checks, [r.redact(f"restoring the chain into scratch failed: {exc}")], []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
