"""What a database holds, object kind by object kind (for the manifest and for verification).

An inventory is ``{kind: [names]}`` for name lists and ``{kind: {name: value}}`` where a value must
come back too (row counts, sequence values, enum labels, md5 digests of view, trigger, routine and
event definitions, so a changed body is "different", not only a missing name). The same function
lists the source at
backup time and the restored copy, and :func:`compare_inventories` names every missing or
different object.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blocks.database import Database

#: kinds listed for MySQL/MariaDB and PostgreSQL, in display order.
MYSQL_KINDS = ("tables", "views", "triggers", "routines", "events", "sequences", "definitions")
POSTGRES_KINDS = (
    "tables",
    "views",
    "materialized_views",
    "triggers",
    "routines",
    "sequences",
    "extensions",
    "enum_types",
    "large_objects",
    "owners",
    "privileges",
    "comments",
    "definitions",
)


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


#: where events are listed: the server's view of them, or (a server started without grant tables,
#: whose event scheduler cannot be on and whose information_schema then lists none) the table itself
_EVENTS_SQL = {
    "information_schema": "SELECT event_name, event_definition FROM information_schema.events"
    " WHERE event_schema = %s",
    "mysql.event": "SELECT name, body FROM mysql.event WHERE db = %s",
}


def _digest(text: Any, database: str = "") -> str:
    """md5 of a definition, with the database's own qualifier left out (a copy under another name, or
    a view the server shows as `db`.`t`, has the same definition)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    body = str(text or "")
    if database:
        body = body.replace(_q(database) + ".", "")
    return hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()


def mysql_inventory(
    db: Database, database: str, *, events_from: str = "information_schema"
) -> dict[str, Any]:
    """Tables (exact row counts), views, triggers, routines, events and sequences (next value) of one
    database."""
    conn = db.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = %s",
                (database,),
            )
            tables: dict[str, int] = {}
            sequences: dict[str, int] = {}
            views: list[str] = []
            for name, kind in cur.fetchall():
                if kind == "VIEW":
                    views.append(name)
                elif kind == "SEQUENCE":  # MariaDB: read without advancing it
                    cur.execute(f"SELECT next_not_cached_value FROM {_q(name)}")
                    sequences[name] = int(cur.fetchone()[0])
                else:
                    cur.execute(f"SELECT COUNT(*) FROM {_q(name)}")
                    tables[name] = int(cur.fetchone()[0])
            definitions: dict[str, str] = {}
            cur.execute(
                "SELECT table_name, view_definition FROM information_schema.views WHERE table_schema = %s",
                (database,),
            )
            definitions.update({f"view {n}": _digest(d, database) for n, d in cur.fetchall()})
            cur.execute(
                "SELECT trigger_name, action_statement FROM information_schema.triggers"
                " WHERE trigger_schema = %s",
                (database,),
            )
            found = cur.fetchall()
            triggers = sorted(r[0] for r in found)
            definitions.update({f"trigger {n}": _digest(d, database) for n, d in found})
            cur.execute(
                "SELECT routine_type, routine_name, routine_definition FROM information_schema.routines"
                " WHERE routine_schema = %s",
                (database,),
            )
            found = [(f"{t.lower()} {n}", d) for t, n, d in cur.fetchall()]
            routines = sorted(r[0] for r in found)
            definitions.update({n: _digest(d, database) for n, d in found})
            cur.execute(_EVENTS_SQL[events_from], (database,))
            found = cur.fetchall()
            events = sorted(r[0] for r in found)
            definitions.update({f"event {n}": _digest(d, database) for n, d in found})
        return {
            "tables": dict(sorted(tables.items())),
            "views": sorted(views),
            "triggers": triggers,
            "routines": routines,
            "events": events,
            "sequences": dict(sorted(sequences.items())),
            "definitions": dict(sorted(definitions.items())),
        }
    finally:
        conn.close()


_PG_USER = "NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"


def postgres_inventory(db: Database, database: str, conn: Any = None) -> dict[str, Any]:
    """Tables (exact row counts), views, materialised views, triggers, routines, sequences (with
    values), extensions, enum types (with labels) and the number of large objects of one database.

    With ``conn`` (an open connection, e.g. inside the dump's snapshot) that connection is used and
    left open.
    """
    own = conn is None
    if own:
        conn = db.connect(database)
    try:
        with conn.cursor() as cur:

            def names(sql: str) -> list[str]:
                cur.execute(sql)
                return sorted(str(r[0]) for r in cur.fetchall())

            cur.execute(
                "SELECT n.nspname, c.relname, c.relkind FROM pg_class c"
                f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname {_PG_USER}"
                " AND c.relkind IN ('r', 'p', 'v', 'm', 'S')"
            )
            rels = cur.fetchall()
            tables: dict[str, int] = {}
            sequences: dict[str, int] = {}
            views: list[str] = []
            matviews: list[str] = []
            for schema, name, kind in rels:
                qual = f"{schema}.{name}"
                ident = ".".join('"' + p.replace('"', '""') + '"' for p in (schema, name))
                if kind in ("r", "p"):
                    cur.execute(f"SELECT COUNT(*) FROM {ident}")
                    tables[qual] = int(cur.fetchone()[0])
                elif kind == "S":
                    cur.execute(f"SELECT last_value, is_called FROM {ident}")
                    value, called = cur.fetchone()
                    sequences[qual] = int(value) if called else int(value) - 1
                elif kind == "v":
                    views.append(qual)
                else:
                    matviews.append(qual)
            triggers = names(
                "SELECT n.nspname || '.' || c.relname || '.' || t.tgname FROM pg_trigger t"
                " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                f" WHERE NOT t.tgisinternal AND n.nspname {_PG_USER}"
            )
            routines = names(
                "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)"
                " || ')' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                f" WHERE n.nspname {_PG_USER} AND NOT EXISTS (SELECT 1 FROM pg_depend d"
                " WHERE d.objid = p.oid AND d.deptype = 'e')"
            )
            extensions = names("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'")
            cur.execute(
                "SELECT n.nspname || '.' || t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)"
                " FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
                " JOIN pg_namespace n ON n.oid = t.typnamespace GROUP BY 1"
            )
            enums = {str(k): str(v) for k, v in cur.fetchall()}
            cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
            large_objects = int(cur.fetchone()[0])
            cur.execute(
                "SELECT 'view ' || n.nspname || '.' || c.relname, pg_get_viewdef(c.oid) FROM pg_class c"
                f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname {_PG_USER}"
                " AND c.relkind IN ('v', 'm')"
                " UNION ALL SELECT 'trigger ' || n.nspname || '.' || c.relname || '.' || t.tgname,"
                " pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                f" WHERE NOT t.tgisinternal AND n.nspname {_PG_USER}"
                " UNION ALL SELECT 'routine ' || n.nspname || '.' || p.proname || '('"
                " || pg_get_function_identity_arguments(p.oid) || ')', pg_get_functiondef(p.oid)"
                f" FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname {_PG_USER}"
                " AND p.prokind IN ('f', 'p') AND NOT EXISTS (SELECT 1 FROM pg_depend d"
                " WHERE d.objid = p.oid AND d.deptype = 'e')"
            )
            definitions = {str(k): _digest(v) for k, v in cur.fetchall()}
            # who owns each relation, its grants and (a digest of) its comment: a restore without
            # them (pg_restore --no-owner / --no-acl, a dump without comments) is incomplete
            cur.execute(
                "SELECT n.nspname || '.' || c.relname, pg_get_userbyid(c.relowner), c.relacl::text,"
                " md5(obj_description(c.oid, 'pg_class')) FROM pg_class c"
                f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname {_PG_USER}"
                " AND c.relkind IN ('r', 'p', 'v', 'm', 'S')"
            )
            owners: dict[str, str] = {}
            privileges: dict[str, str] = {}
            comments: dict[str, str] = {}
            for qual, owner, acl, comment in cur.fetchall():
                owners[str(qual)] = str(owner)
                if acl is not None:
                    privileges[str(qual)] = str(acl)
                if comment is not None:
                    comments[str(qual)] = str(comment)
        return {
            "tables": dict(sorted(tables.items())),
            "views": sorted(views),
            "materialized_views": sorted(matviews),
            "triggers": triggers,
            "routines": routines,
            "sequences": dict(sorted(sequences.items())),
            "extensions": extensions,
            "enum_types": dict(sorted(enums.items())),
            "large_objects": large_objects,
            "owners": dict(sorted(owners.items())),
            "privileges": dict(sorted(privileges.items())),
            "comments": dict(sorted(comments.items())),
            "definitions": dict(sorted(definitions.items())),
        }
    finally:
        if own:
            conn.close()


#: the ``definitions`` entries of each kind a MySQL job may leave out (``skip_objects``)
_DEFINED_AS = {"events": ("event",), "routines": ("procedure", "function"), "triggers": ("trigger",)}


def without_kinds(inventory: dict[str, Any], kinds: set[str]) -> dict[str, Any]:
    """The inventory without ``kinds`` (and their ``definitions``): what a dump that left them out
    on purpose must still give back."""
    out = {k: v for k, v in inventory.items() if k not in kinds}
    prefixes = tuple(f"{p} " for k in kinds for p in _DEFINED_AS.get(k, ()))
    if prefixes and isinstance(out.get("definitions"), dict):
        out["definitions"] = {n: d for n, d in out["definitions"].items() if not n.startswith(prefixes)}
    return out


def _describe(kind: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {name: True for name in value}
    return {"": value}


def compare_inventories(
    database: str, before: dict[str, Any], restored: dict[str, Any], now: dict[str, Any] | None = None
) -> list[str]:
    """Every object of ``before`` that is missing or different in ``restored`` (and unexpected extras).

    A difference is forgiven only when ``now`` (the source listed again after the dump) agrees with
    the restored copy: the source changed while it was dumped, the dump is a snapshot in between.

    Returns:
        One message per problem, e.g. ``"shop: event nightly_cleanup missing from the restored copy"``,
        ``"etcd: revision is 4 restored, 9 in the source"``.
    """
    problems: list[str] = []
    for kind in before:
        want = _describe(kind, before[kind])
        got = _describe(kind, restored.get(kind, {} if isinstance(before[kind], dict | list) else None))
        cur = _describe(kind, (now or {}).get(kind, before[kind]))
        scalar = not isinstance(before[kind], dict | list)
        label = (kind if scalar else kind.rstrip("s")).replace("_", " ")
        for name, value in want.items():
            what = f"{label} {name}" if name else label
            if name not in got:
                if now is None or name in cur:
                    problems.append(f"{database}: {what} missing from the restored copy")
            elif got[name] != value and (now is None or cur.get(name) != got[name]):
                problems.append(f"{database}: {what} is {got[name]!r} restored, {value!r} in the source")
        for name in got:
            if name not in want and name not in cur:
                problems.append(f"{database}: unexpected {label} {name} in the restored copy")
    return problems


def inventory_table(before: dict[str, Any], restored: dict[str, Any] | None) -> list[str]:
    """Markdown rows ``| database | kind | source | restored |`` (counts, side by side)."""

    def count(v: Any) -> Any:
        if isinstance(v, dict | list):
            return len(v)
        return f"`{v[:12]}…`" if isinstance(v, str) and len(v) > 12 else v

    rows = ["| database | kind | source | restored |", "|---|---|---|---|"]
    for database, inv in before.items():
        got = (restored or {}).get(database, {})
        for kind, value in inv.items():
            restored_count = count(got[kind]) if kind in got else "—"
            rows.append(f"| {database} | {kind} | {count(value)} | {restored_count} |")
    return rows


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, int | str | bool | float)


def is_inventory(value: Any) -> bool:
    """True when ``value`` has the shape of a manifest inventory (read back from storage: untrusted).

    ``{section: {kind: [names] | {name: scalar} | scalar}}``; a section is a database, ``files`` or
    ``etcd``.
    """
    if not isinstance(value, dict):
        return False
    for section, kinds in value.items():
        if not isinstance(section, str) or not isinstance(kinds, dict):
            return False
        for kind, v in kinds.items():
            if not isinstance(kind, str):
                return False
            if isinstance(v, list):
                if not all(isinstance(n, str) for n in v):
                    return False
            elif isinstance(v, dict):
                if not all(isinstance(k, str) and _scalar(x) for k, x in v.items()):
                    return False
            elif not _scalar(v):
                return False
    return True
