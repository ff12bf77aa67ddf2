"""Kubernetes label selectors, parsed and matched as the API server does (pure). Re-exported by
:mod:`planning.resources`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from stateferry.errors import InputError

__all__ = ["LabelSelector"]


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" also match objects without the key (as the API server does)
        return not present or value not in self.values


_REQ_RE = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[\w./-]+)"
    r"|(?P<skey>[\w./-]+)\s*(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\)"
    r"|(?P<ekey>[\w./-]+)\s*(?P<eqop>==|!=|=)\s*(?P<val>[\w.-]*)"
    r"|(?P<xkey>[\w./-]+))\s*$"
)


@dataclass(frozen=True)
class LabelSelector:
    """A parsed Kubernetes label selector (``app=web,tier in (a,b),!legacy``).

    Attributes:
        text: the selector as given (passed unchanged to the API server's ``labelSelector``).
    """

    text: str
    requirements: tuple[_Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None, *, field_name: str = "label_selector") -> LabelSelector:
        """Parse ``text``; raise :class:`InputError` naming ``field_name`` if it is malformed."""
        text = (text or "").strip()
        if not text:
            return cls("")
        reqs: list[_Requirement] = []
        for part in _split_selector(text):
            m = _REQ_RE.match(part)
            if not m:
                raise InputError(
                    field_name,
                    f"{part!r} is not a valid label selector requirement",
                    "use `key=value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` or `!key`, "
                    "joined by commas",
                )
            if m.group("nkey"):
                reqs.append(_Requirement(m.group("nkey"), "!exists"))
            elif m.group("skey"):
                vals = tuple(v.strip() for v in m.group("vals").split(",") if v.strip())
                reqs.append(_Requirement(m.group("skey"), m.group("setop"), vals))
            elif m.group("ekey"):
                op = "=" if m.group("eqop") in ("=", "==") else "!="
                reqs.append(_Requirement(m.group("ekey"), op, (m.group("val"),)))
            else:
                reqs.append(_Requirement(m.group("xkey"), "exists"))
        return cls(text, tuple(reqs))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """True if ``labels`` satisfy every requirement (an empty selector matches everything)."""
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _split_selector(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]
