"""PersistentVolumeClaim validation, create and update (kube-apiserver's
ValidatePersistentVolumeClaim / ValidatePersistentVolumeClaimUpdate of the 1.24 line)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from sandbox.apiserver.errors import FieldError

Obj = dict[str, Any]
Errors = list[FieldError]

IMMUTABLE_SPEC = "spec is immutable after creation except resources.requests for bound claims"


def _storage(spec: Obj) -> Any:
    return ((spec.get("resources") or {}).get("requests") or {}).get("storage")


def pvc(obj: Obj, old: Obj | None, quantity: Callable[[Any], Fraction | None]) -> Errors:
    """PersistentVolumeClaim rules. An update may set ``spec.volumeName`` once, grow
    ``resources.requests.storage`` of a bound claim, and change nothing else of ``spec``."""
    spec = obj.get("spec") or {}
    errs: Errors = []
    if not spec.get("accessModes"):
        errs.append(FieldError("spec.accessModes", "Required", None, "at least 1 access mode is required"))
    if not _storage(spec):
        errs.append(FieldError("spec.resources[storage]", "Required", None, ""))
    if old is None:
        return errs
    new_spec, old_spec = copy.deepcopy(spec), copy.deepcopy(old.get("spec") or {})
    if not old_spec.get("volumeName"):  # the binder sets it once
        if "volumeName" in new_spec:
            old_spec["volumeName"] = new_spec["volumeName"]
        else:
            old_spec.pop("volumeName", None)
    bound = (obj.get("status") or {}).get("phase") == "Bound"
    if bound and (new_spec.get("resources") or {}).get("requests") is not None:
        new_spec["resources"]["requests"]["storage"] = _storage(old_spec)
    if new_spec != old_spec:
        errs.append(FieldError("spec", "Forbidden", None, IMMUTABLE_SPEC))
    new_size, old_size = quantity(_storage(spec)), quantity(_storage(old.get("spec") or {}))
    if new_size is not None and old_size is not None and new_size < old_size:
        shrink = "field can not be less than previous value"
        errs.append(FieldError("spec.resources.requests.storage", "Forbidden", None, shrink))
    return errs
