"""Issue 15: ``type: inc_files``: GNU tar ``--listed-incremental`` chains on local + S3.

Real Prefect server, local directory and SeaweedFS S3; the runs are dated with the flow's ``now``
parameter so a month boundary can be crossed in one test.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest

from backup.helpers import local_manifests
from stateferry.errors import InputError
from tasks.inc_files import extract_link

pytestmark = pytest.mark.timeout(400)


def _t(month: int, day: int) -> dt.datetime:
    return dt.datetime(2026, month, day, 2, tzinfo=dt.UTC)


@pytest.fixture
def s3_block(prefect_server: Any, object_store_a: Any) -> str:
    name = f"inc-s3-{secrets.token_hex(3)}"
    object_store_a.save(name, overwrite=True)
    return name


def test_inc_files_chain_backup_restore_any_point_and_retention(s3_block: str, tmp_path: Path) -> None:
    from flows.backup import scheduled_backup
    from flows.restore import restore_backup

    src = tmp_path / "src" / "www"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_text("v1\n")
    (src / "d" / "big.bin").write_bytes(secrets.token_bytes(400_000))
    (src / "gone.txt").write_text("deleted on day 2\n")
    big = (src / "d" / "big.bin").read_bytes()
    name = f"inc-{secrets.token_hex(3)}"
    job: dict[str, Any] = {
        "job": name,
        "type": "inc_files",
        "sources": [{"target": [str(src)], "excludes": ["*.tmp"]}],
        "storages": [
            {"storage": "local", "backup_dir": str(tmp_path / "b"), "store": {"count": 1}},
            {"storage": "s3", "object_store": s3_block, "bucket_name": "backups", "backup_dir": "/inc"},
        ],
    }
    first = scheduled_backup(job, now=_t(3, 1))
    (src / "a.txt").write_text("v2\n")
    (src / "new.txt").write_text("added on day 2\n")
    (src / "gone.txt").unlink()
    (src / "skip.tmp").write_text("excluded")
    second = scheduled_backup(job, now=_t(3, 2))
    (src / "d" / "big.bin").write_bytes(b"small now")
    third = scheduled_backup(job, now=_t(3, 3))

    chains = [r["parts"][0]["chain"] for r in (first, second, third)]
    assert [c["level"] for c in chains] == [0, 1, 2]
    assert {c["full"] for c in chains} == {first["backup_id"]}
    assert chains[2]["parent"] == second["backup_id"]
    assert [p["name"] for p in second["parts"]] == ["files.tar.gz", "files.snar.gz"]
    assert second["parts"][0]["size"] < first["parts"][0]["size"] / 4  # only what changed
    # count: 1 keeps only the newest point, but never a link its chain needs
    assert len(local_manifests(tmp_path / "b", name)) == 3
    assert "needed by the chain of" in third["retention"][f"local:{tmp_path / 'b'}"]

    plan = restore_backup(job, backup=third["backup_id"], target_dir=str(tmp_path / "p3"), dry_run=True)
    assert any(f"chain from full {first['backup_id']} through 2 incremental" in a for a in plan["actions"])
    # any point, from either storage, into a new directory; deletions of a link are applied
    restore_backup(job, backup=second["backup_id"], target_dir=str(tmp_path / "p2"))
    p2 = tmp_path / "p2" / "www"
    assert (p2 / "a.txt").read_text() == "v2\n" and (p2 / "new.txt").exists()
    assert not (p2 / "gone.txt").exists() and not (p2 / "skip.tmp").exists()
    assert (p2 / "d" / "big.bin").read_bytes() == big
    out = restore_backup(job, target_dir=str(tmp_path / "p3"), storage=third["good"][1])  # latest, S3
    assert out["chain"] == [first["backup_id"], second["backup_id"], third["backup_id"]]
    assert (tmp_path / "p3" / "www" / "d" / "big.bin").read_bytes() == b"small now"
    restore_backup(job, backup=first["backup_id"], target_dir=str(tmp_path / "p1"))
    assert (tmp_path / "p1" / "www" / "gone.txt").exists() and not (
        tmp_path / "p1" / "www" / "new.txt"
    ).exists()
    with pytest.raises(Exception, match="new directory"):
        restore_backup(job, backup=second["backup_id"], target_dir=str(tmp_path / "p1"))

    # a corrupted incremental in the chain is reported, nothing is extracted
    link = tmp_path / "b" / name / second["backup_id"] / "files.tar.gz"
    good_bytes = link.read_bytes()
    link.write_bytes(good_bytes[:-40])
    with pytest.raises(Exception, match="corrupt"):
        restore_backup(job, backup=third["backup_id"], target_dir=str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()
    # ... also when its manifest was altered to match the truncated bytes (tar/gzip catch it)
    mpath = link.with_name("manifest.json")
    manifest = json.loads(mpath.read_text())
    import hashlib

    manifest["parts"][0].update(
        sha256=hashlib.sha256(good_bytes[:-40]).hexdigest(), size=len(good_bytes) - 40
    )
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="truncated"):
        restore_backup(job, backup=third["backup_id"], target_dir=str(tmp_path / "bad2"))
    link.write_bytes(good_bytes)

    # a new month starts a new chain; the old chain is then no longer needed by the kept point
    april = scheduled_backup(job, now=_t(4, 1))
    assert april["parts"][0]["chain"] == {"full": april["backup_id"], "parent": None, "level": 0}
    assert list(local_manifests(tmp_path / "b", name)) == [april["backup_id"]]


def test_inc_files_hostile_member_never_leaves_the_directory(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind in (
            ("ok.txt", tarfile.REGTYPE),
            ("link", tarfile.SYMTYPE),
            ("link/escape", tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = str(tmp_path / "outside") if kind == tarfile.SYMTYPE else ""
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "outside").mkdir()
    with pytest.raises(InputError, match="symlink"):
        extract_link(io.BytesIO(gzip.compress(buf.getvalue())), dest)
    assert not any((tmp_path / "outside").iterdir())

    dotdot = io.BytesIO()
    with tarfile.open(fileobj=dotdot, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InputError, match=r"\.\."):
        extract_link(io.BytesIO(gzip.compress(dotdot.getvalue())), dest)
    assert not (tmp_path / "evil.txt").exists()


def test_inc_files_config() -> None:
    from planning.backup_config import parse_job

    base = {
        "job": "i",
        "sources": [{"target": ["/srv"]}],
        "storages": [{"storage": "local", "backup_dir": "/b"}],
    }
    job = parse_job({**base, "type": "inc_files", "sources": [{"target": ["/srv"], "full_every": "7 days"}]})
    assert job.incremental and not parse_job({**base, "type": "files"}).incremental
    for data, field in (
        (
            {**base, "type": "files", "sources": [{"target": ["/srv"], "full_every": "week"}]},
            "sources[0].full_every",
        ),
        (
            {**base, "type": "inc_files", "sources": [{"target": ["/srv"], "full_every": "year"}]},
            "sources[0].full_every",
        ),
    ):
        with pytest.raises(InputError) as err:
            parse_job(data)
        assert err.value.field == field


def test_inc_files_verify_restores_the_whole_chain_and_reports_a_corrupt_link(
    prefect_server: Any, tmp_path: Path
) -> None:
    from flows.backup import scheduled_backup

    src = tmp_path / "src" / "www"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_text("v1\n")
    (src / "gone.txt").write_text("deleted before the second backup\n")
    (src / "d" / "link").symlink_to("../a.txt")
    name = f"incv-{secrets.token_hex(3)}"
    backups = tmp_path / "b"
    job: dict[str, Any] = {
        "job": name,
        "type": "inc_files",
        "verify": True,
        "sources": [{"target": [str(src)], "excludes": ["*.tmp"]}],
        "storages": [{"storage": "local", "backup_dir": str(backups)}],
    }
    first = scheduled_backup(job, now=_t(5, 1))
    assert first["verification"]["result"] == "ok"
    assert first["verification"]["checks"]["files"]["chain"] == [first["backup_id"]]
    (src / "a.txt").write_text("v2\n")
    (src / "gone.txt").unlink()
    (src / "skip.tmp").write_text("excluded: not expected back")
    second = scheduled_backup(job, now=_t(5, 2))
    files = second["verification"]["checks"]["files"]
    assert files["chain"] == [first["backup_id"], second["backup_id"]]
    assert files["entries"] == 4  # www, www/a.txt, www/d, www/d/link: the deletion applied, *.tmp left out
    assert second["verification"]["drift"] == []
    # the tree this point restores is the manifest's inventory; a chain restore is compared with it
    assert (
        second["inventory"]["files"]["file_count"] == 1 and second["inventory"]["files"]["total_bytes"] == 3
    )
    from flows.restore import restore_backup

    done = restore_backup(job, backup=second["backup_id"], target_dir=str(tmp_path / "point2"))
    assert done["inventory"]["compared"] == ["files"] and done["tree"] == second["inventory"]["files"]

    # the full on storage is damaged: the next incremental's verification names it and keeps nothing
    archive = backups / name / first["backup_id"] / "files.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    (src / "a.txt").write_text("v3\n")
    with pytest.raises(Exception) as err:
        scheduled_backup(job, now=_t(5, 3))
    assert "verification failed" in str(err.value) and first["backup_id"] in str(err.value)
    assert sorted(local_manifests(backups, name)) == sorted([first["backup_id"], second["backup_id"]])
