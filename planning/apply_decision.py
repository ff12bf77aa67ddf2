"""What a restore or migration does with an object that exists in the target (pure).

The server decides, not a client-side guess: the apply engine (``tasks/kube_apply.py``) sends the
object by server-side apply with ``dryRun=All`` (forced, so the answer shows every change the apply
would make) and hands the live object and that answer to :func:`decide_existing`:

* the difference is :func:`dry_run_diff` of the two (server defaults, validation, pruned fields and
  fields other managers keep all included; ``status``, server-rewritten metadata and the labels that
  change on every restore ignored; a Secret's values never shown, :mod:`planning.kube_redaction`);
* the fields the apply would take from other field managers come from the ``managedFields`` of the
  two (:func:`taken_fields`), never from an error text;
* stateferry forces only what it owns (:func:`flow_owns`): objects it put there (its own ``Apply``
  entry, or its ``app.kubernetes.io/managed-by`` label) and its ``stateferry.io/*`` labels and
  annotations everywhere. A field of an object another tool manages is reported as a conflict naming
  the managers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from planning.kube_redaction import SECRET_FIELDS, is_secret, secret_diff
from stateferry.errors import InputError

__all__ = [
    "BACKUP_NAME_LABEL",
    "FIELD_MANAGER",
    "FLOW_RUN_LABEL",
    "MANAGED_BY_LABEL",
    "RESTORE_NAME_LABEL",
    "ExistingDecision",
    "ExistingPolicy",
    "decide_existing",
    "dry_run_diff",
    "field_paths",
    "flow_owns",
    "path_text",
    "taken_fields",
]

BACKUP_NAME_LABEL = "stateferry.io/backup-name"
RESTORE_NAME_LABEL = "stateferry.io/restore-name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
FLOW_RUN_LABEL = "stateferry.io/flow-run-id"
#: the field manager of every object stateferry writes by server-side apply
FIELD_MANAGER = "stateferry"

#: Labels that change on every restore and never count as a difference.
_VOLATILE_LABELS = (RESTORE_NAME_LABEL, FLOW_RUN_LABEL)
#: Metadata a server rewrites on every write: never a difference of a dry-run answer.
_SERVER_META = ("resourceVersion", "generation", "managedFields", "creationTimestamp", "uid", "selfLink")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class ExistingPolicy(StrEnum):
    """What a restore does with an object that already exists in the target."""

    SKIP = "skip"
    UPDATE = "update"

    @classmethod
    def parse(
        cls, value: str | ExistingPolicy, field_name: str = "existing_resource_policy"
    ) -> ExistingPolicy:
        """Validate a user-given policy."""
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InputError(field_name, f"{value!r} is not a policy", "use `skip` or `update`") from None


# --------------------------------------------------------------------------------------------------
# the difference: live object against the server's dry-run answer


def _fmt(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 120 else s[:117] + "..."


def _full_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    o = dict(obj)
    o.pop("status", None)
    meta = dict(o.get("metadata") or {})
    o["metadata"] = meta
    for k in _SERVER_META:
        meta.pop(k, None)
    meta["labels"] = {k: v for k, v in (meta.get("labels") or {}).items() if k not in _VOLATILE_LABELS}
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
    return o


def _diff_both(path: str, live: Any, after: Any, out: list[str]) -> None:
    """Field by field in both directions: ``+`` only after, ``-`` only live, ``~`` changed."""
    if isinstance(after, dict) and isinstance(live, dict):
        for k in sorted(set(after) | set(live), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in live:
                if after[k] not in (None, {}, [], ""):
                    out.append(f"+ {sub}: {_fmt(after[k])}")
            elif k not in after:
                if live[k] not in (None, {}, [], ""):
                    out.append(f"- {sub}: {_fmt(live[k])}")
            else:
                _diff_both(sub, live[k], after[k], out)
        return
    if isinstance(after, list) and isinstance(live, list) and len(after) == len(live):
        for i, (lv, av) in enumerate(zip(live, after, strict=True)):
            _diff_both(f"{path}[{i}]", lv, av, out)
        return
    if after != live:
        out.append(f"~ {path}: {_fmt(live)} -> {_fmt(after)}")


def dry_run_diff(live: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What a write really changes: the live object against the server's ``dryRun=All`` answer to
    it, field by field in both directions (server defaults included; ``status``, server-rewritten
    metadata and volatile labels ignored). Secret ``data``/``stringData`` are reported per key
    without values.

    Returns:
        Lines ``~ path: live -> after``, ``+ path: after`` and ``- path: live``; empty if equal.
    """
    a, b = _full_view(live), _full_view(after)
    secret_lines: list[str] = []
    if is_secret(live) or is_secret(after):
        secret_lines = secret_diff(a, b)
        for f in SECRET_FIELDS:
            a.pop(f, None)
            b.pop(f, None)
    out: list[str] = []
    _diff_both("", a, b, out)
    return out + secret_lines


# --------------------------------------------------------------------------------------------------
# field ownership (metadata.managedFields)

Path = tuple[str, ...]


def field_paths(fields_v1: Any, prefix: Path = ()) -> set[Path]:
    """The fields a ``fieldsV1`` document names, as tuples of its keys (``("f:data", "f:k")``)."""
    out: set[Path] = set()
    if not isinstance(fields_v1, Mapping):
        return out
    if not fields_v1 and prefix:
        out.add(prefix)
    for k, v in fields_v1.items():
        if k == ".":
            out.add(prefix)
        else:
            out |= field_paths(v, (*prefix, str(k)))
    return out


def path_text(path: Path) -> str:
    """``.spec.containers[name="c"].image``: a field path as the API server writes it."""
    out = []
    for el in path:
        kind, _, rest = el.partition(":")
        if kind == "f":
            out.append("." + rest)
        elif kind == "k":
            try:
                keys = json.loads(rest)
            except ValueError:
                keys = {}
            items = keys.items() if isinstance(keys, dict) else ()
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in items) + "]")
        elif kind == "v":
            out.append(f"[={rest}]")
        else:
            out.append(f"[{rest}]")
    return "".join(out)


def _managers(obj: Mapping[str, Any]) -> dict[tuple[str, str, str, str], set[Path]]:
    """(manager, operation, apiVersion, subresource) -> fields, of ``obj``'s managedFields."""
    out: dict[tuple[str, str, str, str], set[Path]] = {}
    for e in (obj.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(e, Mapping):
            continue
        ident = (
            str(e.get("manager") or ""),
            str(e.get("operation") or ""),
            str(e.get("apiVersion") or ""),
            str(e.get("subresource") or ""),
        )
        out.setdefault(ident, set()).update(field_paths(e.get("fieldsV1")))
    return out


def _describe(ident: tuple[str, str, str, str]) -> str:
    manager, _op, _version, sub = ident
    return json.dumps(manager) + (f" (subresource {sub})" if sub else "")


def taken_fields(live: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[str]]:
    """The fields a (forced) apply by :data:`FIELD_MANAGER` takes from other field managers.

    A forced apply moves every conflicting field (one another manager owns and the apply changes)
    to the applier, so the conflicts are exactly what other managers own in ``live`` and no longer
    own in ``after`` (the server's dry-run answer).

    Returns:
        Manager (``"kubectl-edit"``, with its subresource if any) -> field paths, sorted.
    """
    before, now = _managers(live), _managers(after)
    out: dict[str, list[str]] = {}
    for ident, fields in before.items():
        if ident[0] == FIELD_MANAGER and ident[1] == "Apply":
            continue
        lost = fields - now.get(ident, set())
        leaves = {p for p in lost if not any(len(q) > len(p) and q[: len(p)] == p for q in lost)}
        if leaves:
            out.setdefault(_describe(ident), []).extend(sorted(path_text(p) for p in leaves))
    return {k: sorted(v) for k, v in sorted(out.items())}


def _is_provenance(path_string: str) -> bool:
    """stateferry's own labels and annotations (``stateferry.io/*``; not the managed-by label, which
    says whose the object is and is never taken from another tool)."""
    for prefix in (".metadata.labels.", ".metadata.annotations."):
        if path_string.startswith(prefix):
            return path_string[len(prefix) :].startswith("stateferry.io/")
    return False


def flow_owns(live: Mapping[str, Any]) -> bool:
    """True when stateferry put ``live`` there: its own ``Apply`` entry in managedFields, or its
    ``app.kubernetes.io/managed-by: stateferry`` label (objects restored before server-side apply)."""
    meta = live.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == FIELD_MANAGER:
        return True
    return any(m == FIELD_MANAGER and op == "Apply" for m, op, _v, _s in _managers(live))


# --------------------------------------------------------------------------------------------------
# the decision


@dataclass(frozen=True)
class ExistingDecision:
    """What happens to one object that exists in the target.

    Attributes:
        result: ``unchanged`` | ``skipped-existing`` | ``conflict`` | ``would-update`` | ``update``.
        message: why (the conflicting managers and fields, what the update takes over).
        diff: how the apply changes the live object (:func:`dry_run_diff`).
        force: apply with ``force=true`` (every field the apply takes is stateferry's).
    """

    result: str
    message: str = ""
    diff: tuple[str, ...] = ()
    force: bool = False


def _fields_text(taken: Mapping[str, Iterable[str]], limit: int = 6) -> str:
    parts = []
    for manager, paths in taken.items():
        shown = list(paths)
        more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
        parts.append(f"{manager}: {', '.join(shown[:limit])}{more}")
    return "; ".join(parts)


def decide_existing(
    live: Mapping[str, Any], after: Mapping[str, Any], policy: ExistingPolicy, *, dry_run: bool
) -> ExistingDecision:
    """Decide from the live object and the server's forced ``dryRun=All`` apply answer ``after``.

    * no difference -> ``unchanged`` (nothing is written, whatever the policy);
    * ``skip`` -> ``skipped-existing`` with the diff;
    * ``update`` -> ``update`` (``would-update`` in a dry run), forced when it takes fields from
      other managers and stateferry owns the object (:func:`flow_owns`) or only its provenance
      labels are taken; otherwise ``conflict`` naming each manager and field (nothing is written).
    """
    diff = tuple(dry_run_diff(live, after))
    if not diff:
        return ExistingDecision("unchanged")
    if policy is ExistingPolicy.SKIP:
        return ExistingDecision(
            "skipped-existing", f"exists and differs in {len(diff)} field(s); policy is skip", diff
        )
    taken = taken_fields(live, after)
    foreign = {m: [p for p in paths if not _is_provenance(p)] for m, paths in taken.items()}
    foreign = {m: paths for m, paths in foreign.items() if paths}
    if foreign and not flow_owns(live):
        return ExistingDecision(
            "conflict",
            f"fields owned by other field managers ({_fields_text(foreign)}): not forced, stateferry "
            "did not create this object; nothing was written. Fix: change or remove them with the "
            "tool that manages the object, or delete it in the target, and re-run",
            diff,
        )
    took = f"; takes over fields last written by {_fields_text(taken)}" if taken else ""
    if dry_run:
        return ExistingDecision("would-update", f"diff from a server-side dry run of the update{took}", diff)
    return ExistingDecision("update", took.removeprefix("; "), diff, force=bool(taken))
