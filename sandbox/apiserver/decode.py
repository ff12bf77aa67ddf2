"""Structural decoding of request bodies against the kubernetes client's models.

A real API server decodes JSON into Go structs: a number where a string belongs fails the whole
request (400 on create/update, 422 on patch) and unknown fields are silently dropped (or rejected
with ``fieldValidation=Strict``). The official Python client's model classes carry the same type
information (``openapi_types`` / ``attribute_map``), so they drive this decoder.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from kubernetes.client import models as _models

_QUANTITY_KEYS = {
    "requests",
    "limits",
    "capacity",
    "allocatable",
    "hard",
    "used",
    "overhead",
    "sizeLimit",
    "default",
    "defaultRequest",
    "max",
    "min",
    "maxLimitRequestRatio",
    "allocatedResources",
    "storage",
}
_INT64_KEYS = {
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "deletionGracePeriodSeconds",
    "generation",
    "expirationSeconds",
    "tolerationSeconds",
    "observedGeneration",
    "startingDeadlineSeconds",
    "supplementalGroups",
}


class DecodeError(Exception):
    """The body cannot be decoded into the Kind's Go type (Go's ``json: cannot unmarshal ...``)."""


@functools.cache
def _fields(model: str) -> dict[str, str] | None:
    cls = getattr(_models, model, None)
    if cls is None:
        return None
    return {json_key: _normalise(cls.openapi_types[attr]) for attr, json_key in cls.attribute_map.items()}


_ZERO = {"str": "", "int": 0, "bool": False, "float": 0.0}


@functools.cache
def _required_scalars(model: str) -> tuple[tuple[str, Any], ...]:
    """(JSON key, Go zero value) of the scalar fields without ``omitempty`` (required in the OpenAPI).

    Go serialises such fields even when the client left them out (``restartCount: 0``,
    ``imageID: ""``, ``exitCode: 0``), and the Python client's models insist on them.
    """
    cls = getattr(_models, model, None)
    fields = getattr(cls, "model_fields", None)
    if cls is None or not fields:
        return ()
    out = []
    for attr, json_key in cls.attribute_map.items():
        ftype = _normalise(cls.openapi_types[attr])
        if ftype in _ZERO and attr in fields and fields[attr].is_required():
            out.append((json_key, _ZERO[ftype]))
    return tuple(out)


def _normalise(type_str: str) -> str:
    """``List[X]`` -> ``list[X]``, ``Dict[str, X]`` -> ``dict(str, X)``, ``bytes`` -> ``str``."""
    if type_str.startswith(("List[", "list[")):
        return "list[" + _normalise(type_str[5:-1]) + "]"
    if type_str.startswith(("Dict[", "dict(")):
        inner = type_str[5:-1].split(",", 1)[1].strip()
        return "dict(str, " + _normalise(inner) + ")"
    return "str" if type_str == "bytes" else type_str


def _go_type(type_str: str, key: str) -> str:
    if type_str == "str":
        return "string"
    if type_str == "int":
        return "int64" if key in _INT64_KEYS else "int32"
    if type_str == "bool":
        return "bool"
    if type_str == "float":
        return "float64"
    if type_str.startswith("list["):
        return "[]" + _go_type(type_str[5:-1], key)
    if type_str.startswith("dict("):
        return "map[string]" + _go_type(type_str[5:-1].split(",", 1)[1].strip(), key)
    if type_str in ("datetime", "date"):
        return "v1.Time"
    return "v1." + re.sub(
        r"^(V\d+(?:alpha\d+|beta\d+)?|CoreV1|EventsV1|StorageV1|AuthenticationV1)", "", type_str
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _struct_name(model: str) -> str:
    return _go_type(model, "")[3:]


class Decoder:
    """Check and prune one object against its model; collect unknown fields for strict validation."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.unknown: list[str] = []
        self._saved: DecodeError | None = None

    def decode(self, obj: dict[str, Any], model: str) -> dict[str, Any]:
        """Return ``obj`` with unknown fields dropped; raise DecodeError on a type mismatch.

        Like Go's decoder, a type mismatch is remembered and decoding goes on (the first one is
        reported), while a failing custom unmarshaler (a malformed quantity) aborts at once.
        """
        out = self._struct(obj, model, "", "", model)
        if self._saved is not None:
            raise self._saved
        return out

    def _struct(self, obj: Any, model: str, go_path: str, path: str, parent: str) -> Any:
        fields = _fields(model)
        if fields is None:
            return obj
        out: dict[str, Any] = {}
        for key, value in obj.items():
            ftype = fields.get(key)
            sub = f"{path}.{key}" if path else key
            gsub = f"{go_path}.{key}" if go_path else key
            if ftype is None:
                self.unknown.append(sub)
                continue
            out[key] = self._value(value, ftype, gsub, sub, model, key)
        for key, zero in _required_scalars(model):
            if out.get(key) is None:
                out[key] = zero
        return out

    def _value(self, value: Any, ftype: str, go_path: str, path: str, struct: str, key: str) -> Any:
        if value is None:
            return None
        if ftype == "object":
            return value
        ok: bool
        if ftype == "str":
            ok = isinstance(value, str) or (
                key in _QUANTITY_KEYS and isinstance(value, int | float) and not isinstance(value, bool)
            )
        elif ftype == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif ftype == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif ftype == "bool":
            ok = isinstance(value, bool)
        elif ftype in ("datetime", "date"):
            ok = isinstance(value, str)
        elif ftype.startswith("list["):
            if not isinstance(value, list):
                return self._fail(value, ftype, go_path, struct, key)
            inner = ftype[5:-1]
            return [self._value(v, inner, go_path, f"{path}[{i}]", struct, key) for i, v in enumerate(value)]
        elif ftype.startswith("dict("):
            if not isinstance(value, dict):
                return self._fail(value, ftype, go_path, struct, key)
            inner = ftype[5:-1].split(",", 1)[1].strip()
            return {k: self._value(v, inner, go_path, f"{path}[{k}]", struct, key) for k, v in value.items()}
        else:
            if not isinstance(value, dict):
                return self._fail(value, ftype, go_path, struct, key)
            return self._struct(value, ftype, go_path, path, struct)
        if not ok:
            return self._fail(value, ftype, go_path, struct, key)
        if ftype == "str" and key in _QUANTITY_KEYS:
            _check_quantity(value)
        return value

    def _fail(self, value: Any, ftype: str, go_path: str, struct: str, key: str) -> None:
        if self._saved is None:
            self._saved = DecodeError(
                f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                f"{_struct_name(struct)}.{go_path} of type {_go_type(ftype, key)}"
            )


_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_QUANTITY_SUFFIXES = {"", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}


def _check_quantity(value: Any) -> None:
    """resource.ParseQuantity: abort decoding on a malformed quantity (``1gi``)."""
    if not isinstance(value, str):
        return
    m = _QUANTITY_RE.match(value)
    if not m:
        raise DecodeError(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        )
    suffix = m.group(2)
    if suffix not in _QUANTITY_SUFFIXES and not re.fullmatch(r"[eE][-+]?[0-9]+", suffix):
        raise DecodeError("unable to parse quantity's suffix")
