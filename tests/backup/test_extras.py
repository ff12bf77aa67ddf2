"""Issue 18: PostgreSQL globals (roles) and optional MySQL users/grants next to the dumps.

Real PostgreSQL and MariaDB; the tasks run directly. Both parts are restored only when asked,
idempotently, and their password hashes never reach results or messages.
"""

from __future__ import annotations

import gzip
import io
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from backup.helpers import mysql_block, mysql_exec, pg_block, pg_exec
from backup.test_complete import _resolved
from backup.test_complete_restore import _publish, _restore
from blocks.database import Database
from stateferry.errors import InputError
from tasks.backup_verify import inventory_source
from tasks.dump_extras import pg_globals_producer
from tasks.restore_jobs import plan_restore, select_backup


def _part(tmp_path: Path, name: str) -> tuple[dict[str, Any], bytes]:
    (manifest_path,) = tmp_path.glob("complete/*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    part = next(p for p in manifest["parts"] if p["name"] == name)
    return part, gzip.decompress((manifest_path.parent / name).read_bytes())


def test_complete_postgres_globals_round_trip(postgres: Any, tmp_path: Path) -> None:
    """Roles (with password hashes and memberships) are stored as their own part, come back only
    when asked, before the database that they own, and a second restore keeps existing roles."""
    db = pg_block(postgres)
    tag = secrets.token_hex(3)
    name, app, grp, pw = f"glob_{tag}", f"app_{tag}", f"grp_{tag}", f"pw-{tag}"
    pg_exec(
        db, f"CREATE ROLE {grp} NOLOGIN", f"CREATE ROLE {app} LOGIN PASSWORD '{pw}'", f"GRANT {grp} TO {app}"
    )
    pg_exec(db, f"CREATE DATABASE {name} OWNER {app}")
    try:
        pg_exec(db, f"SET ROLE {app}", "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)", database=name)
        r = _resolved("postgres", db, name, tmp_path)
        _publish(r, inventory_source.fn(r, [name]))
        part, script = _part(tmp_path, "globals.pgdumpall.gz")
        assert part["extra"] == "globals" and part["role_passwords"] is True
        assert {app, grp, "postgres"} <= set(part["roles"])
        assert f"CREATE ROLE {app};".encode() in script and b"SCRAM-SHA-256$" in script

        sel = select_backup.fn(r, "latest", None)
        with pytest.raises(InputError) as err:
            plan_restore(r, sel, None, None, False, restore_users=True)
        assert err.value.field == "restore_users"
        assert "restore roles" in plan_restore(r, sel, None, None, False, restore_globals=True)[1]

        pg_exec(db, f"DROP DATABASE {name} WITH (FORCE)", f"DROP ROLE {app}", f"DROP ROLE {grp}")
        done = _restore(r, restore_extra=True)
        assert {app, grp} <= set(done["globals"]["created_roles"]) and done["globals"]["own_role_kept"]
        assert "SCRAM" not in json.dumps(done) and pw not in json.dumps(done)
        login = Database(engine="postgres", host=db.host, port=db.port, user=app, password=SecretStr(pw))
        assert pg_exec(login, "SELECT x FROM t", database=name) == [(1,)]  # the hash came back
        assert pg_exec(db, f"SELECT pg_has_role('{app}', '{grp}', 'MEMBER')") == [(True,)]
        assert pg_exec(db, "SELECT tableowner FROM pg_tables WHERE tablename = 't'", database=name) == [
            (app,)
        ]

        done = _restore(r, overwrite=True, restore_extra=True)  # again: existing roles are no error
        assert {app, grp, "postgres"} <= set(done["globals"]["existing_roles"])
        assert pg_exec(db, "SELECT 1") == [(1,)]  # the restoring role's password was not replaced

        sink = io.BytesIO()
        info = pg_globals_producer(db, passwords=False)(sink)
        assert info["role_passwords"] is False and b"SCRAM" not in sink.getvalue()
        assert f"CREATE ROLE {app};".encode() in sink.getvalue()
    finally:
        pg_exec(db, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg_exec(db, f"DROP ROLE IF EXISTS {app}", f"DROP ROLE IF EXISTS {grp}")


def test_complete_mariadb_users_and_grants_round_trip(mariadb: Any, tmp_path: Path) -> None:
    """With ``users: true`` the accounts holding grants on the database (database- and table-level,
    not others) are stored; restored only when asked, idempotently, passwords included."""
    db = mysql_block(mariadb)
    tag = secrets.token_hex(3)
    name, user, reader, other = f"users_{tag}", f"sfu_{tag}", f"sfr_{tag}", f"sfo_{tag}"
    mysql_exec(db, f"CREATE DATABASE {name}")
    mysql_exec(db, "CREATE TABLE t (x INT)", "INSERT INTO t VALUES (7)", database=name)
    mysql_exec(
        db,
        f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{tag}'",
        f"GRANT SELECT, INSERT ON {name}.* TO '{user}'@'%'",
        f"CREATE USER '{reader}'@'localhost'",
        f"GRANT SELECT ON {name}.t TO '{reader}'@'localhost'",
        f"CREATE USER '{other}'@'%'",
    )
    try:
        r = _resolved("mysql", db, name, tmp_path, users=True)
        _publish(r, inventory_source.fn(r, [name]))
        part, script = _part(tmp_path, "users.sql.gz")
        assert part["accounts"] == sorted([[user, "%"], [reader, "localhost"]])
        assert f"CREATE USER IF NOT EXISTS `{user}`@`%`".encode() in script

        mysql_exec(db, f"DROP USER '{user}'@'%'", f"DROP USER '{reader}'@'localhost'")
        done = _restore(r, overwrite=True)  # not asked: no users
        assert "users" not in done and not mysql_exec(db, f"SELECT 1 FROM mysql.user WHERE User = '{user}'")
        done = _restore(r, overwrite=True, restore_extra=True)
        assert done["users"]["accounts"] == sorted([f"{user}@%", f"{reader}@localhost"])
        login = Database(
            engine="mysql", host=db.host, port=db.port, user=user, password=SecretStr(f"pw-{tag}")
        )
        assert mysql_exec(login, "SELECT x FROM t", database=name) == [(7,)]
        grants = " ".join(g for (g,) in mysql_exec(db, f"SHOW GRANTS FOR '{reader}'@'localhost'"))
        assert f"GRANT SELECT ON `{name}`.`t`" in grants
        assert "pw-" not in json.dumps(done) and "*" not in json.dumps(done["users"])
        _restore(r, overwrite=True, restore_extra=True)  # idempotent
    finally:
        mysql_exec(db, f"DROP DATABASE IF EXISTS {name}")
        for account in (f"'{user}'@'%'", f"'{reader}'@'localhost'", f"'{other}'@'%'"):
            mysql_exec(db, f"DROP USER IF EXISTS {account}")


@pytest.mark.parametrize(
    ("kind", "key"),
    [("postgres", "users"), ("mysql", "globals"), ("mariadb", "role_passwords")],
)
def test_complete_extras_options_belong_to_their_engine(kind: str, key: str) -> None:
    """``users`` is MySQL's, ``globals`` / ``role_passwords`` PostgreSQL's: elsewhere refused by name."""
    from planning.backup_config import parse_job

    job = {"job": "x", "type": kind, "storages": [{"storage": "local", "backup_dir": "/tmp/x"}]}
    with pytest.raises(InputError) as err:
        parse_job({**job, "sources": [{"connect": {"block": "b"}, key: True}]})
    assert err.value.field == f"sources[0].{key}"
    ok = parse_job({**job, "sources": [{"connect": {"block": "b"}}]}).source
    assert ok.users is False and ok.globals is True and ok.role_passwords is True  # type: ignore[union-attr]


def test_complete_hostile_globals_part_refused_before_connecting(tmp_path: Path) -> None:
    """A globals part holding a psql meta-command is refused while it is read (no server needed)."""
    from tasks.restore_extras import restore_pg_globals

    marker = tmp_path / "marker"
    part = tmp_path / "g.gz"
    part.write_bytes(gzip.compress(f"CREATE ROLE x;\n\\! touch {marker}\n".encode()))
    db = Database(engine="postgres", host="127.0.0.1", port=1, user="u", password=SecretStr("p"))
    with pytest.raises(InputError) as err:
        restore_pg_globals(db, part, {"roles": ["x"], "tablespaces": []})
    assert err.value.field == "backup" and not marker.exists()


def test_complete_postgres_globals_by_a_non_superuser_keep_roles_without_hashes(postgres: Any) -> None:
    """Managed PostgreSQL gives no superuser: pg_dumpall cannot read pg_authid. The globals part is
    still written (roles without password hashes) and says so, instead of failing every backup."""
    db = pg_block(postgres)
    tag = secrets.token_hex(3)
    backup, pw = f"bk_{tag}", f"pw-{tag}"
    pg_exec(
        db, f"CREATE ROLE {backup} LOGIN PASSWORD '{pw}'", f"CREATE ROLE other_{tag} LOGIN PASSWORD 'x{pw}'"
    )
    try:
        as_backup = Database(
            engine="postgres", host=db.host, port=db.port, user=backup, password=SecretStr(pw)
        )
        sink = io.BytesIO()
        info = pg_globals_producer(as_backup, passwords=True)(sink)
        assert info["role_passwords"] is False and "pg_authid" in info["role_passwords_skipped"]
        assert f"CREATE ROLE other_{tag};".encode() in sink.getvalue() and b"SCRAM" not in sink.getvalue()
        full = io.BytesIO()
        assert (
            pg_globals_producer(db, passwords=True)(full)["role_passwords"] is True
        )  # a superuser keeps them
        assert b"SCRAM-SHA-256$" in full.getvalue()
    finally:
        pg_exec(db, f"DROP ROLE IF EXISTS {backup}", f"DROP ROLE IF EXISTS other_{tag}")
