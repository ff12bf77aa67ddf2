"""CustomResourceDefinitions: the resource types they serve, pruning and structural-schema validation."""

from __future__ import annotations

from typing import Any

from sandbox.apiserver.errors import FieldError, RawValue
from sandbox.apiserver.resources import ALL_VERBS, ResourceType

Obj = dict[str, Any]


def crd_resource_types(crd: Obj) -> list[ResourceType]:
    """One ResourceType per served version of ``crd``."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        sub = version.get("subresources") or {}
        subresources = frozenset(k for k in ("status", "scale") if k in sub)
        scale = sub.get("scale")
        scale_paths = (
            (
                scale.get("specReplicasPath", ".spec.replicas"),
                scale.get("statusReplicasPath", ".status.replicas"),
                scale.get("labelSelectorPath"),
            )
            if isinstance(scale, dict)
            else None
        )
        out.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                subresources=subresources,
                has_generation=True,
                model=None,
                categories=tuple(names.get("categories") or ()),
                verbs=ALL_VERBS,
                custom=True,
                crd_schemas={
                    "schema": (version.get("schema") or {}).get("openAPIV3Schema"),
                    "columns": version.get("additionalPrinterColumns") or [],
                },
                scale_paths=scale_paths,
            )
        )
    return out


def _schema(rt: ResourceType) -> Obj | None:
    if not rt.crd_schemas:
        return None
    schema = rt.crd_schemas.get("schema")
    return schema if isinstance(schema, dict) else None


def prune(rt: ResourceType, obj: Obj) -> Obj:
    """Drop fields the structural schema does not know (unless it preserves unknown fields)."""
    schema = _schema(rt)
    if schema is None:
        return obj
    out = {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "metadata")}
    rest = {k: v for k, v in obj.items() if k not in out}
    pruned = _prune(rest, schema)
    if isinstance(pruned, dict):
        out.update(pruned)
    return out


def _prune(value: Any, schema: Obj) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        if props is not None:
            keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
            return {
                k: (_prune(v, props[k]) if k in props else v)
                for k, v in value.items()
                if k in props or keep_unknown
            }
        if isinstance(addl, dict):
            return {k: _prune(v, addl) for k, v in value.items()}
        if (
            schema.get("type") == "object"
            and not schema.get("x-kubernetes-preserve-unknown-fields")
            and addl is None
        ):
            return {}
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(v, schema["items"]) for v in value]
    return value


_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def validate_custom(rt: ResourceType, obj: Obj) -> list[FieldError]:
    """Validate a custom resource against its version's openAPIV3Schema."""
    schema = _schema(rt)
    if schema is None:
        return []
    errs: list[FieldError] = []
    rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    props = schema.get("properties") or {}
    for key, value in rest.items():
        if key in props:
            _validate(value, props[key], key, errs)
    for req in schema.get("required") or []:
        if req not in obj:
            errs.append(FieldError(req, "Required", None, ""))
    return errs


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _validate(value: Any, schema: Obj, path: str, errs: list[FieldError]) -> None:
    if value is None:
        if not schema.get("nullable"):
            errs.append(
                FieldError(
                    path,
                    "Invalid",
                    None,
                    f'{path} in body must be of type {schema.get("type", "object")}: "null"',
                )
            )
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            errs.append(
                FieldError(
                    path,
                    "Invalid",
                    RawValue(_json_type(value)),
                    f"{path} in body must be of type integer or string",
                )
            )
        return
    stype = schema.get("type")
    if stype in _TYPES and not _TYPES[stype](value):
        errs.append(
            FieldError(
                path,
                "Invalid",
                RawValue(f'"{_json_type(value)}"'),
                f'{path} in body must be of type {stype}: "{_json_type(value)}"',
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(f'"{e}"' if isinstance(e, str) else str(e) for e in schema["enum"])
        errs.append(FieldError(path, "NotSupported", value, f"supported values: {allowed}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(
                FieldError(
                    path,
                    "Invalid",
                    value,
                    f"{path} in body should be greater than or equal to {schema['minimum']}",
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(
                FieldError(
                    path,
                    "Invalid",
                    value,
                    f"{path} in body should be less than or equal to {schema['maximum']}",
                )
            )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(FieldError(path, "TooLong", value, f"may not be longer than {schema['maxLength']}"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            errs.append(
                FieldError(
                    path,
                    "Invalid",
                    value,
                    f"{path} in body should be at least {schema['minLength']} chars long",
                )
            )
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for k, v in value.items():
            if k in props:
                _validate(v, props[k], f"{path}.{k}", errs)
            elif isinstance(schema.get("additionalProperties"), dict):
                _validate(v, schema["additionalProperties"], f"{path}.{k}", errs)
        for req in schema.get("required") or []:
            if req not in value:
                errs.append(FieldError(f"{path}.{req}", "Required", None, ""))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            _validate(v, schema["items"], f"{path}[{i}]", errs)
