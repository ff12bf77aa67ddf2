"""Table tests for the backup job config parser (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from planning.backup_config import (
    DEFAULT_MYSQLDUMP_KEYS,
    FilesSourceConfig,
    job_to_parameters,
    parse_job,
    parse_job_yaml,
)
from planning.storage_config import LocalStorageConfig, S3StorageConfig
from stateferry.errors import InputError

JOBS_DIR = Path(__file__).resolve().parents[1] / "deployments" / "jobs"

SEED_LIKE = """
- job: redmine-mysql
  type: mysql
  tmp_dir: /var/nxs-backup/databases/mysql/dump_tmp
  schedule: "0 0 * * *"
  sources:
  - connect: {block: redmine-db}
    target: [redmine_db]
    gzip: yes
    is_slave: no
    extra_keys: '--opt --add-drop-database --routines --comments --create-options
      --quote-names --order-by-primary --hex-blob'
  storages:
  - storage: local
    enable: yes
    backup_dir: /var/nxs-backup/databases/mysql/dump
    store: {days: 6, weeks: 4, month: 6}
  - storage: s3
    enable: yes
    object_store: backups-s3
    bucket_name: backups
    backup_dir: /nxs-backup/databases/mysql/dump
    store: {days: 2, weeks: 1, month: 6}
"""


def test_seed_like_job_parses() -> None:
    job = parse_job_yaml(SEED_LIKE)
    assert job.job == "redmine-mysql" and job.engine == "mysql"
    local, s3 = job.storages
    assert isinstance(local, LocalStorageConfig) and isinstance(s3, S3StorageConfig)
    assert (local.store.days, local.store.weeks, local.store.months) == (6, 4, 6)
    assert (s3.store.days, s3.store.weeks, s3.store.months) == (2, 1, 6)
    assert s3.backup_dir == "nxs-backup/databases/mysql/dump"
    args = job.source.dump_args("mysql")  # type: ignore[union-attr]
    assert args[: len(DEFAULT_MYSQLDUMP_KEYS.split())] == DEFAULT_MYSQLDUMP_KEYS.split()
    assert args[-1] == "--single-transaction"
    assert parse_job(job_to_parameters(job)) == job


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"type": "mariadb", "sources": [{"connect": {"block": "x"}}]}, ("mysql", [])),
        (
            {"type": "postgresql", "sources": [{"connect": {"block": "x"}, "target": ["a", "b"]}]},
            ("postgres", ["a", "b"]),
        ),
        (
            {"type": "desc_files", "sources": [{"target": ["/srv/files/"], "excludes": ["*.tmp"]}]},
            ("files", ["/srv/files"]),
        ),
        ({"type": "etcd", "sources": [{"connect": {"block": "etcd"}}]}, ("etcd", None)),
    ],
)
def test_engines_and_aliases(data: dict[str, object], expected: tuple[str, list[str] | None]) -> None:
    job = parse_job({"job": "j", **data, "storages": [{"storage": "local", "backup_dir": "/b"}]})
    assert job.engine == expected[0]
    if expected[1] is not None:
        assert job.source.target == expected[1]  # type: ignore[union-attr]
    if job.engine == "files":
        assert isinstance(job.source, FilesSourceConfig) and job.source.excludes == ["*.tmp"]


def _job(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "job": "j1",
        "type": "mysql",
        "sources": [{"connect": {"block": "db"}}],
        "storages": [{"storage": "local", "backup_dir": "/backups", "store": {"days": 1}}],
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    ("data", "field", "fix_words"),
    [
        (_job(type="oracle"), "type", "mysql"),
        (_job(job="Bad Name"), "job", "a-z"),
        (
            _job(storages=[{"storage": "local", "backup_dir": "/b", "store": {"days": -1}}]),
            "storages[0].store.days",
            ">= 0",
        ),
        (
            _job(storages=[{"storage": "local", "backup_dir": "/b", "store": {"weeks": -3}}]),
            "storages[0].store.weeks",
            ">= 0",
        ),
        (
            _job(storages=[{"storage": "local", "backup_dir": "/b", "store": {"month": -1}}]),
            "storages[0].store.months",
            ">= 0",
        ),
        (
            _job(storages=[{"storage": "local", "backup_dir": "/b", "store": {"weekly_weekday": "someday"}}]),
            "storages[0].store.weekly_weekday",
            "sunday",
        ),
        (_job(storages=[{"storage": "ftp", "backup_dir": "/b"}]), "storages[0].storage", "local, s3 or sftp"),
        (
            _job(storages=[{"storage": "local", "backup_dir": "relative"}]),
            "storages[0].backup_dir",
            "absolute",
        ),
        (_job(storages=[]), "storages", ""),
        (_job(storages=[{"storage": "local", "backup_dir": "/b", "enable": False}]), "storages", "enable"),
        (
            _job(storages=[{"storage": "s3", "object_store": "s", "bucket_name": "Bad_Bucket"}]),
            "storages[0].bucket_name",
            "a-z",
        ),
        (
            _job(storages=[{"storage": "s3", "object_store": "s", "bucket": "bk", "secret_access_key": "x"}]),
            "storages[0].secret_access_key",
            "ObjectStore block",
        ),
        (
            _job(sources=[{"connect": {"db_host": "h", "db_password": "hunter2"}}]),
            "sources[0].connect.db_password",
            "block",
        ),
        (
            _job(sources=[{"connect": {"block": "db"}, "extra_keys": "--opt -psecret"}]),
            "sources[0].extra_keys",
            "Database block",
        ),
        (_job(sources=[]), "sources", "one source"),
        (
            _job(sources=[{"connect": {"block": "db"}, "is_slave": True}]),
            "sources[0].is_slave",
            "single-transaction",
        ),
        (_job(sources=[{"connect": {"block": "db"}, "gzip": False}]), "sources[0].gzip", "gzip"),
        (_job(timezone="Mars/Olympus"), "timezone", "IANA"),
        (_job(sources=[{"connect": {"block": "db"}, "bogus": 1}]), "sources[0].bogus", "remove"),
        (_job(type="files", sources=[{"target": ["rel/path"]}]), "sources[0].target", "absolute"),
        (
            _job(type="postgres", sources=[{"connect": {"block": "db"}, "format": "zip"}]),
            "sources[0].format",
            "",
        ),
        (
            _job(storages=[{"storage": "sftp", "sftp_server": "ssh", "backup_dir": "srv/b"}]),
            "storages[0].backup_dir",
            "absolute",
        ),
        (
            _job(storages=[{"storage": "sftp", "sftp_server": "ssh", "backup_dir": "/srv/../etc"}]),
            "storages[0].backup_dir",
            "..",
        ),
        (
            _job(storages=[{"storage": "sftp", "sftp_server": "-oProxyCommand=x", "backup_dir": "/b"}]),
            "storages[0].sftp_server",
            "SftpServer",
        ),
        (_job(compression="xz"), "compression", ""),
        (_job(compression="gzip", compression_level=6), "compression_level", "0..3"),
        (_job(compression="zstd", compression_level=22), "compression_level", "1..19"),
        (_job(sources=[{"connect": {"block": "db"}, "gzip": False}]), "sources[0].gzip", "zstd"),
        (_job(notify={"on_success": True}), "notify", "notify.email"),
        (
            _job(notify={"block": "custom-webhook/ops", "email": {"credentials": "m", "to": ["a@b.org"]}}),
            "notify",
            "exactly one",
        ),
        (_job(notify={"block": "ops"}), "notify.block", "custom-webhook/ops"),
        (
            _job(notify={"email": {"credentials": "m", "to": ["a@b.org\r\nBcc: evil@x.org"]}}),
            "notify.email.to",
            "name@example.org",
        ),
        (_job(notify={"email": {"credentials": "m", "to": ["a@b.org, evil@x.org"]}}), "notify.email.to", "@"),
        (_job(notify={"email": {"credentials": "m", "to": ["Ops <a@b.org>"]}}), "notify.email.to", "@"),
        (
            _job(notify={"email": {"credentials": "m", "to": ["a@b.org"], "from": "x@y.org\nTo: z@w.org"}}),
            "notify.email.from",
            "@",
        ),
        (
            _job(notify={"email": {"credentials": "-m", "to": ["a@b.org"]}}),
            "notify.email.credentials",
            "block",
        ),
        (_job(notify={"email": {"credentials": "m", "to": []}}), "notify.email.to", ""),
    ],
)
def test_bad_config_names_field_and_fix(data: dict[str, object], field: str, fix_words: str) -> None:
    with pytest.raises(InputError) as info:
        parse_job(data)
    assert info.value.field == field
    assert fix_words in info.value.fix or fix_words in info.value.problem
    assert "hunter2" not in str(info.value) and "psecret" not in str(info.value)


def test_bad_yaml_is_input_error() -> None:
    with pytest.raises(InputError, match="not valid YAML"):
        parse_job_yaml("job: [unclosed")


@pytest.mark.parametrize("path", sorted(JOBS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_example_jobs_parse(path: Path) -> None:
    job = parse_job_yaml(path.read_text())
    assert job.schedule, "every example job has a cron schedule"
    assert path.stem == job.job


def test_email_notification_round_trips_as_a_parameter() -> None:
    notify = {"email": {"credentials": "ops-smtp", "to": ["oncall@example.org"], "from": "bk@example.org"}}
    job = parse_job(_job(notify=notify))
    assert job.notify is not None and job.notify.email is not None
    assert job.notify.email.sender == "bk@example.org" and job.notify.label == "email/ops-smtp"
    assert parse_job(job_to_parameters(job)) == job
