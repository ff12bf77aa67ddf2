"""Resource quantities (``500m``, ``1Gi``, ``1e3``) as exact numbers."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

_SUFFIX = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


def quantity(value: Any) -> Fraction | None:
    """The numeric value of a resource quantity (None if it does not parse)."""
    m = re.fullmatch(r"([+-]?[0-9.]+)([eE][-+]?[0-9]+|[a-zA-Z]*)", str(value).strip())
    if not m:
        return None
    try:
        number = Fraction(m.group(1))
    except ValueError:
        return None
    suffix = m.group(2)
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix] if suffix in _SUFFIX else None
