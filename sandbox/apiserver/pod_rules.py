"""Pod rules: the PodSpec (volumes, containers, env, ports, resources, mounts, restartPolicy)
and the few fields a pod update may change."""

from __future__ import annotations

import re
from typing import Any

from sandbox.apiserver.errors import FieldError
from sandbox.apiserver.meta_rules import Errors, Obj, dns_label
from sandbox.apiserver.quantity import quantity

_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def pod_spec(spec: Any, path: str, extra_volumes: set[str] | None = None) -> Errors:
    """Validate a PodSpec at ``path``."""
    errs: Errors = []
    if not isinstance(spec, dict):
        return [FieldError(path, "Required", None, "")]
    volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
    for i, vol in enumerate(spec.get("volumes") or []):
        vname = vol.get("name") if isinstance(vol, dict) else None
        if not vname:
            errs.append(FieldError(f"{path}.volumes[{i}].name", "Required", None, ""))
        else:
            errs += dns_label(vname, f"{path}.volumes[{i}].name")
    volumes |= extra_volumes or set()
    containers = spec.get("containers")
    if not containers:
        errs.append(FieldError(f"{path}.containers", "Required", None, ""))
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            cpath = f"{path}.{group}[{i}]"
            if not isinstance(c, dict):
                continue
            cname = c.get("name")
            if not cname:
                errs.append(FieldError(f"{cpath}.name", "Required", None, ""))
            else:
                errs += dns_label(cname, f"{cpath}.name")
                if cname in names:
                    errs.append(FieldError(f"{cpath}.name", "Duplicate", cname))
                names.add(cname)
            if not c.get("image"):
                errs.append(FieldError(f"{cpath}.image", "Required", None, ""))
            for j, env in enumerate(c.get("env") or []):
                ename = env.get("name") if isinstance(env, dict) else None
                if not ename:
                    errs.append(FieldError(f"{cpath}.env[{j}].name", "Required", None, ""))
                elif not _ENV_NAME_RE.match(ename):
                    errs.append(
                        FieldError(
                            f"{cpath}.env[{j}].name",
                            "Invalid",
                            ename,
                            "a valid environment variable name must consist of alphabetic characters, digits, "  # noqa: E501
                            "'_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or "
                            "'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is "
                            "'[-._a-zA-Z][-._a-zA-Z0-9]*')",
                        )
                    )
            for j, port in enumerate(c.get("ports") or []):
                cp = port.get("containerPort") if isinstance(port, dict) else None
                if cp is None:
                    errs.append(FieldError(f"{cpath}.ports[{j}].containerPort", "Required", None, ""))
                elif not 1 <= int(cp) <= 65535:
                    errs.append(
                        FieldError(
                            f"{cpath}.ports[{j}].containerPort",
                            "Invalid",
                            cp,
                            "must be between 1 and 65535, inclusive",
                        )
                    )
                if isinstance(port, dict) and port.get("name"):
                    errs += port_name(str(port["name"]), f"{cpath}.ports[{j}].name")
            errs += _resources(c.get("resources"), f"{cpath}.resources")
            for j, vm in enumerate(c.get("volumeMounts") or []):
                if not isinstance(vm, dict):
                    continue
                if not vm.get("mountPath"):
                    errs.append(FieldError(f"{cpath}.volumeMounts[{j}].mountPath", "Required", None, ""))
                if vm.get("name") not in volumes:
                    errs.append(FieldError(f"{cpath}.volumeMounts[{j}].name", "NotFound", vm.get("name")))
    rp = spec.get("restartPolicy")
    if rp not in (None, "Always", "OnFailure", "Never"):
        errs.append(
            FieldError(
                f"{path}.restartPolicy",
                "NotSupported",
                rp,
                'supported values: "Always", "OnFailure", "Never"',
            )
        )
    return errs


def port_name(value: str, field: str) -> Errors:
    """IANA_SVC_NAME (container port names): at most 15 characters, a-z0-9 and '-', a letter."""
    errs: Errors = []
    if len(value) > 15:
        errs.append(FieldError(field, "Invalid", value, "must be no more than 15 characters"))
    if not re.fullmatch(r"[-a-z0-9]+", value):
        errs.append(
            FieldError(
                field,
                "Invalid",
                value,
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            )
        )
    if "--" in value:
        errs.append(FieldError(field, "Invalid", value, "must not contain consecutive hyphens"))
    if not re.search(r"[a-z]", value):
        errs.append(FieldError(field, "Invalid", value, "must contain at least one letter (a-z)"))
    if value.startswith("-") or value.endswith("-"):
        errs.append(FieldError(field, "Invalid", value, "must not begin or end with a hyphen"))
    return errs


def _resources(res: Any, path: str) -> Errors:
    if not isinstance(res, dict):
        return []
    errs: Errors = []
    requests, limits = res.get("requests") or {}, res.get("limits") or {}
    for name, req in requests.items():
        if name in limits:
            r, lim = quantity(req), quantity(limits[name])
            if r is not None and lim is not None and r > lim:
                errs.append(
                    FieldError(
                        f"{path}.requests",
                        "Invalid",
                        str(req),
                        f"must be less than or equal to {name} limit of {limits[name]}",
                    )
                )
    return errs


def pod(obj: Obj, old: Obj | None) -> Errors:
    """Pod rules; updates may change only a few fields."""
    errs = pod_spec(obj.get("spec"), "spec")
    if old is not None:
        spec, ospec = dict(obj.get("spec") or {}), dict(old.get("spec") or {})
        for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
            spec.pop(key, None)
            ospec.pop(key, None)
        images = [c.get("image") for c in spec.get("containers") or []]
        strip = [{k: v for k, v in c.items() if k != "image"} for c in spec.get("containers") or []]
        ostrip = [{k: v for k, v in c.items() if k != "image"} for c in ospec.get("containers") or []]
        spec["containers"], ospec["containers"] = strip, ostrip
        if ospec.get("nodeName") is None and spec.get("nodeName") is not None:
            ospec["nodeName"] = spec["nodeName"]  # binding
        if spec != ospec and images:
            errs.append(
                FieldError(
                    "spec",
                    "Forbidden",
                    None,
                    "pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "  # noqa: E501
                    "to 1 if it was previously negative)",
                )
            )
    return errs
