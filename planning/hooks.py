"""Pure validation of quiesce exec hooks (Stork's pre/post exec rules) for ``quiesce="hooks"``.

Each hook selects running pods by namespace + label selector and runs argv lists (never a shell
string built from parameters: a string is refused, ``["sh", "-c", "..."]`` is the user's explicit
choice) in one container::

    {"namespace": "cms", "selector": "app=mysql", "container": "mysql",
     "pre": [["fsfreeze", "--freeze", "/var/lib/mysql"]],
     "post": [["fsfreeze", "--unfreeze", "/var/lib/mysql"]], "timeout_seconds": 60}

``pre`` commands run at the approval "stop the application", in every selected pod, before the
delta copy; ``post`` commands run after it (also when it failed, and for the pods whose ``pre``
ran when a later ``pre`` failed). A ``pre`` command must leave the application quiesced when it
returns (e.g. ``fsfreeze``, an application's own pause command): a lock held only by the exec
session (``FLUSH TABLES WITH READ LOCK`` in ``mysql -e``) ends with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from planning.param_lists import entry_maps, json_list
from planning.resources import LabelSelector
from stateferry.errors import InputError

__all__ = ["Hook", "parse_hooks"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_KEYS = frozenset({"namespace", "selector", "container", "pre", "post", "timeout_seconds"})
_MAX_ARGS = 256
_MAX_ARG_LEN = 8192


@dataclass(frozen=True)
class Hook:
    """One validated hook (``index`` = its position in the ``hooks`` parameter)."""

    index: int
    namespace: str
    selector: str
    container: str
    pre: tuple[tuple[str, ...], ...]
    post: tuple[tuple[str, ...], ...]
    timeout_seconds: int = 60

    @property
    def field(self) -> str:
        """The parameter name of this entry, for error messages."""
        return f"hooks[{self.index}]"


def _commands(value: Any, fld: str) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list):
        raise InputError(
            fld, f"is {type(value).__name__}", 'give a list of argv lists, e.g. [["fsfreeze", "-f", "/data"]]'
        )
    out = []
    for i, argv in enumerate(value):
        f = f"{fld}[{i}]"
        if isinstance(argv, str):
            raise InputError(
                f, "is a string (a shell command line)", 'give an argv list, e.g. ["sh", "-c", "sync"]'
            )
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InputError(f, f"is {argv!r}", "give a non-empty list of strings")
        if len(argv) > _MAX_ARGS or any(len(a) > _MAX_ARG_LEN or "\x00" in a for a in argv):
            raise InputError(
                f, "is too long or contains NUL", f"at most {_MAX_ARGS} arguments of {_MAX_ARG_LEN} chars"
            )
        if not argv[0].strip():
            raise InputError(f, "starts with an empty program name", "name the program first")
        out.append(tuple(argv))
    return tuple(out)


def parse_hooks(value: Sequence[Mapping[str, Any]] | str | None, namespaces: Sequence[str]) -> list[Hook]:
    """Validate the ``hooks`` parameter (a list, or its JSON text) of a migration.

    Args:
        value: the hooks.
        namespaces: the migrated source namespaces (a hook's ``namespace`` must be one; it may be
            left out when there is only one).

    Raises:
        InputError: naming ``hooks[i].<key>`` and the fix; also when no hook has a ``pre`` command.
    """
    value = json_list(value, "hooks", "{selector, container, pre, post}")
    if not value:
        raise InputError(
            "hooks", "is empty with quiesce='hooks'", "give at least one hook with a pre command"
        )
    out = []
    for i, fld, entry in entry_maps(value, "hooks", _KEYS, "{namespace, selector, container, pre, post}"):
        ns = entry.get("namespace") or (namespaces[0] if len(namespaces) == 1 else None)
        if ns not in namespaces:
            raise InputError(
                f"{fld}.namespace", f"is {ns!r}", f"name one of the migrated namespaces {list(namespaces)}"
            )
        selector = entry.get("selector")
        if not isinstance(selector, str) or not selector.strip():
            raise InputError(f"{fld}.selector", "is missing", "give a label selector such as 'app=mysql'")
        selector = LabelSelector.parse(selector, field_name=f"{fld}.selector").text
        container = entry.get("container")
        if not isinstance(container, str) or not _DNS_LABEL.match(container):
            raise InputError(
                f"{fld}.container", f"is {container!r}", "name the container (an RFC 1123 label)"
            )
        timeout = entry.get("timeout_seconds", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 3600:
            raise InputError(f"{fld}.timeout_seconds", f"is {timeout!r}", "give whole seconds from 1 to 3600")
        pre = _commands(entry.get("pre"), f"{fld}.pre")
        post = _commands(entry.get("post"), f"{fld}.post")
        if not pre and not post:
            raise InputError(fld, "has no pre or post command", "add pre (and post) argv lists")
        out.append(Hook(i, str(ns), selector, container, pre, post, timeout))
    if not any(h.pre for h in out):
        raise InputError("hooks", "has no pre command", "quiesce needs at least one pre command")
    return out
