"""Validation rules users hit on a real API server (422 Invalid with causes naming the field)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from sandbox.apiserver import storage_rules
from sandbox.apiserver.errors import FieldError, RawValue, bad_request
from sandbox.apiserver.selectors import labels_match, selector_from_label_selector

Obj = dict[str, Any]
Errors = list[FieldError]

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def dns_label(value: str, field: str) -> Errors:
    """RFC 1123 label (namespaces, container names, port names)."""
    errs: Errors = []
    if len(value) > 63:
        errs.append(FieldError(field, "Invalid", value, "must be no more than 63 characters"))
    if not _LABEL_RE.match(value):
        errs.append(FieldError(field, "Invalid", value, LABEL_MSG))
    return errs


def dns_subdomain(value: str, field: str) -> Errors:
    """RFC 1123 subdomain (most object names)."""
    errs: Errors = []
    if len(value) > 253:
        errs.append(FieldError(field, "Invalid", value, "must be no more than 253 characters"))
    if not _SUBDOMAIN_RE.match(value):
        errs.append(FieldError(field, "Invalid", value, SUBDOMAIN_MSG))
    return errs


def dns1035(value: str, field: str) -> Errors:
    """RFC 1035 label (Service names)."""
    errs: Errors = []
    if len(value) > 63:
        errs.append(FieldError(field, "Invalid", value, "must be no more than 63 characters"))
    if not _DNS1035_RE.match(value):
        errs.append(FieldError(field, "Invalid", value, DNS1035_MSG))
    return errs


def path_segment(value: str, field: str) -> Errors:
    """Names of RBAC objects: anything that can be a URL path segment."""
    if value in (".", "..") or "/" in value or "%" in value:
        return [FieldError(field, "Invalid", value, "may not contain '/' or '%'")]
    return []


NAME_RULES: dict[tuple[str, str], Callable[[str, str], Errors]] = {
    ("", "namespaces"): dns_label,
    ("", "services"): dns1035,
    ("rbac.authorization.k8s.io", "roles"): path_segment,
    ("rbac.authorization.k8s.io", "rolebindings"): path_segment,
    ("rbac.authorization.k8s.io", "clusterroles"): path_segment,
    ("rbac.authorization.k8s.io", "clusterrolebindings"): path_segment,
}


def _qualified_key(key: str, field: str) -> Errors:
    prefix, _, name = key.rpartition("/")
    errs: Errors = []
    if prefix and not _SUBDOMAIN_RE.match(prefix):
        errs.append(FieldError(field, "Invalid", key, "prefix part " + SUBDOMAIN_MSG))
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.match(name):
        errs.append(
            FieldError(
                field,
                "Invalid",
                key,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            )
        )
    return errs


def labels(values: Any, field: str) -> Errors:
    """Label keys (qualified names) and values."""
    errs: Errors = []
    if not isinstance(values, dict):
        return errs
    for k, v in values.items():
        errs += _qualified_key(str(k), field)
        v = str(v)
        if len(v) > 63 or not _LABEL_VALUE_RE.match(v):
            errs.append(
                FieldError(
                    field,
                    "Invalid",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "  # noqa: E501
                    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',"  # noqa: E501
                    "  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",  # noqa: E501
                )
            )
    return errs


def metadata(obj: Obj, key: tuple[str, str], custom: bool) -> Errors:
    """Name and labels/annotations of any object."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    errs: Errors = []
    if not name:
        errs.append(FieldError("metadata.name", "Required", None, "name or generateName is required"))
    else:
        rule = NAME_RULES.get(key, dns_subdomain)
        errs += rule(name, "metadata.name")
    errs += labels(meta.get("labels"), "metadata.labels")
    controllers = []
    for ref in meta.get("ownerReferences") or []:
        if not isinstance(ref, dict):
            continue
        for field, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(field):
                errs.append(
                    FieldError(
                        f"metadata.ownerReferences.{field}", "Invalid", "", f"{what} must not be empty"
                    )
                )
        if ref.get("controller"):
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        errs.append(
            FieldError(
                "metadata.ownerReferences",
                "Invalid",
                RawValue("[]v1.OwnerReference{...}"),
                'Only one reference can have Controller set to true. Found "true" in references for '
                + " and ".join(controllers),
            )
        )
    for k in meta.get("annotations") or {}:
        errs += _qualified_key(str(k), "metadata.annotations")
    return errs


# ---- pods --------------------------------------------------------------------------------------------


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


def _template(spec: Obj, path: str, extra_volumes: set[str] | None = None) -> Errors:
    tmpl = spec.get("template")
    if not isinstance(tmpl, dict):
        return [FieldError(f"{path}.template", "Required", None, "")]
    errs = labels((tmpl.get("metadata") or {}).get("labels"), f"{path}.template.metadata.labels")
    errs += pod_spec(tmpl.get("spec"), f"{path}.template.spec", extra_volumes)
    return errs


def _selector_matches(spec: Obj, path: str) -> Errors:
    errs: Errors = []
    sel = spec.get("selector")
    if not sel:
        return [FieldError(f"{path}.selector", "Required", None, "")]
    if isinstance(sel, dict) and not sel.get("matchLabels") and not sel.get("matchExpressions"):
        errs.append(
            FieldError(f"{path}.selector", "Invalid", "null", "empty selector is invalid for deployment")
        )
        return errs
    tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not labels_match(selector_from_label_selector(sel), tmpl_labels):
        errs.append(
            FieldError(
                f"{path}.template.metadata.labels",
                "Invalid",
                _go_map(tmpl_labels),
                "`selector` does not match template `labels`",
            )
        )
    return errs


def _go_map(m: dict[str, Any]) -> Any:
    inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted(m.items()))
    return RawValue(f"map[string]string{{{inner}}}")


def _replicas(spec: Obj, path: str) -> Errors:
    r = spec.get("replicas")
    if isinstance(r, int) and r < 0:
        err = FieldError(f"{path}.replicas", "Invalid", r, "must be greater than or equal to 0")
        return [err, err]
    return []


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


def statefulset(obj: Obj, old: Obj | None) -> Errors:
    """StatefulSet rules incl. the fields an update may not change."""
    spec = obj.get("spec") or {}
    vct = {
        str((v.get("metadata") or {}).get("name"))
        for v in spec.get("volumeClaimTemplates") or []
        if isinstance(v, dict)
    }
    errs = _replicas(spec, "spec") + _selector_matches(spec, "spec") + _template(spec, "spec", vct)
    pmp = spec.get("podManagementPolicy")
    if pmp not in ("OrderedReady", "Parallel"):
        errs.append(
            FieldError("spec.podManagementPolicy", "Invalid", pmp, "must be 'OrderedReady' or 'Parallel'")
        )
    if old is not None:
        allowed = {
            "replicas",
            "template",
            "updateStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        }
        ospec = old.get("spec") or {}
        a = {k: v for k, v in spec.items() if k not in allowed}
        b = {k: v for k, v in ospec.items() if k not in allowed}
        if a != b:
            errs.append(
                FieldError(
                    "spec",
                    "Forbidden",
                    None,
                    "updates to statefulset spec for fields other than 'replicas', 'template', "
                    "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
                    "are forbidden",
                )
            )
    return errs


def deployment(obj: Obj, old: Obj | None) -> Errors:
    """Deployment rules; the selector is immutable."""
    spec = obj.get("spec") or {}
    errs = _replicas(spec, "spec") + _selector_matches(spec, "spec") + _template(spec, "spec")
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        errs.append(
            FieldError("spec.selector", "Invalid", RawValue("v1.LabelSelector{...}"), "field is immutable")
        )
    return errs


def replicaset(obj: Obj, old: Obj | None) -> Errors:
    """ReplicaSet / DaemonSet rules."""
    spec = obj.get("spec") or {}
    return _replicas(spec, "spec") + _selector_matches(spec, "spec") + _template(spec, "spec")


def job(obj: Obj, old: Obj | None) -> Errors:
    """Job rules: restartPolicy OnFailure/Never, template immutable, name usable as a label value."""
    spec = obj.get("spec") or {}
    errs = _selector_matches(spec, "spec") + _template(spec, "spec")
    name = obj["metadata"].get("name") or ""
    if len(name) > 63:
        errs.append(FieldError("metadata.name", "Invalid", name, "must be no more than 63 characters"))
    rp = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if rp not in ("OnFailure", "Never"):
        errs.append(
            FieldError(
                "spec.template.spec.restartPolicy",
                "NotSupported",
                rp,
                'supported values: "OnFailure", "Never"',
            )
        )
    if old is not None and (old.get("spec") or {}).get("template") != spec.get("template"):
        errs.append(
            FieldError(
                "spec.template", "Invalid", RawValue("core.PodTemplateSpec{...}"), "field is immutable"
            )
        )
    return errs


_CRON_FIELD = re.compile(
    r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$"
)
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def cron_schedule_ok(schedule: str) -> bool:
    """A 5-field cron expression or a macro, optionally with a ``CRON_TZ=``/``TZ=`` prefix."""
    s = schedule.strip()
    if s in _CRON_MACROS or s.startswith("@every "):
        return True
    fields = s.split()
    return len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields)


def cronjob(obj: Obj, old: Obj | None) -> Errors:
    """CronJob rules: schedule and job template."""
    spec = obj.get("spec") or {}
    errs: Errors = []
    name = obj["metadata"].get("name") or ""
    if len(name) > 52:
        errs.append(FieldError("metadata.name", "Invalid", name, "must be no more than 52 characters"))
    schedule = spec.get("schedule")
    if not schedule:
        errs.append(FieldError("spec.schedule", "Required", None, ""))
    elif not cron_schedule_ok(str(schedule)):
        errs.append(FieldError("spec.schedule", "Invalid", schedule, f"unparseable schedule: {schedule}"))
    jspec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    errs += _template(jspec, "spec.jobTemplate.spec")
    rp = ((jspec.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if rp not in ("OnFailure", "Never"):
        errs.append(
            FieldError(
                "spec.jobTemplate.spec.template.spec.restartPolicy",
                "NotSupported",
                rp,
                'supported values: "OnFailure", "Never"',
            )
        )
    return errs


def service(obj: Obj, old: Obj | None) -> Errors:
    """Service rules: ports, types, clusterIP immutability."""
    spec = obj.get("spec") or {}
    errs: Errors = []
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.append(
            FieldError(
                "spec.type",
                "NotSupported",
                stype,
                'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
            )
        )
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and stype != "ExternalName" and not (headless and stype == "ClusterIP"):
        errs.append(FieldError("spec.ports", "Required", None, ""))
    if stype == "ExternalName" and not spec.get("externalName"):
        errs.append(FieldError("spec.externalName", "Required", None, ""))
    if len(ports) > 1:
        for i, p in enumerate(ports):
            if isinstance(p, dict) and not p.get("name"):
                errs.append(FieldError(f"spec.ports[{i}].name", "Required", None, ""))
    seen: set[str] = set()
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            continue
        if p.get("name"):
            if p["name"] in seen:
                errs.append(FieldError(f"spec.ports[{i}].name", "Duplicate", p["name"]))
            seen.add(p["name"])
            errs += dns_label(p["name"], f"spec.ports[{i}].name")
        port = p.get("port")
        if port is None:
            errs.append(FieldError(f"spec.ports[{i}].port", "Required", None, ""))
        elif not 1 <= int(port) <= 65535:
            errs.append(
                FieldError(f"spec.ports[{i}].port", "Invalid", port, "must be between 1 and 65535, inclusive")
            )
        proto = p.get("protocol", "TCP")
        if proto not in ("TCP", "UDP", "SCTP"):
            errs.append(
                FieldError(
                    f"spec.ports[{i}].protocol",
                    "NotSupported",
                    proto,
                    'supported values: "SCTP", "TCP", "UDP"',
                )
            )
        if p.get("nodePort") is not None and stype not in ("NodePort", "LoadBalancer"):
            errs.append(
                FieldError(
                    f"spec.ports[{i}].nodePort",
                    "Forbidden",
                    None,
                    "may not be used when `type` is 'ClusterIP'",
                )
            )
    if old is not None:
        ospec = old.get("spec") or {}
        oips, nips = ospec.get("clusterIPs") or [], spec.get("clusterIPs") or []
        if oips and nips and oips[0] != nips[0] and stype != "ExternalName":
            errs.append(FieldError("spec.clusterIPs[0]", "Invalid", nips[0], "may not change once set"))
        changed = ospec.get("clusterIP") and spec.get("clusterIP") and ospec["clusterIP"] != spec["clusterIP"]
        if changed and not any(e.field == "spec.clusterIPs[0]" for e in errs):
            errs.append(
                FieldError("spec.clusterIPs[0]", "Invalid", spec["clusterIP"], "may not change once set")
            )
    return errs


def service_status(obj: Obj) -> Errors:
    """``/status`` of a Service: LoadBalancer ingress IPs must be IPs."""
    errs: Errors = []
    for i, ing in enumerate(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []):
        ip = ing.get("ip") if isinstance(ing, dict) else None
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                errs.append(
                    FieldError(
                        f"status.loadBalancer.ingress[{i}].ip", "Invalid", ip, "must be a valid IP address"
                    )
                )
    return errs


def secret_data(obj: Obj, kind: str = "Secret") -> None:
    """Raise 400 like the real decoder when Secret ``data`` is not base64."""
    for value in (obj.get("data") or {}).values():
        if not isinstance(value, str):
            continue
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pos = next((i for i, ch in enumerate(value) if not (ch.isalnum() or ch in "+/=")), 0)
            raise bad_request(
                f'{kind} in version "v1" cannot be handled as a {kind}: illegal base64 data at input byte {pos}'  # noqa: E501
            ) from None


def secret(obj: Obj, old: Obj | None) -> Errors:
    """Secret rules: key names, tls keys, immutable type/data."""
    errs: Errors = []
    data = obj.get("data") or {}
    for k in data:
        if not _CONFIG_KEY_RE.match(k):
            errs.append(
                FieldError(
                    f"data[{k}]",
                    "Invalid",
                    k,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',"  # noqa: E501
                    "  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                )
            )
    stype = obj.get("type", "Opaque")
    if stype == "kubernetes.io/tls":
        for k in ("tls.crt", "tls.key"):
            if k not in data:
                errs.append(FieldError(f"data[{k}]", "Required", None, ""))
    if old is not None:
        if old.get("type", "Opaque") != stype:
            errs.append(FieldError("type", "Invalid", stype, "field is immutable"))
        if old.get("immutable") and (old.get("data") != obj.get("data")):
            errs.append(FieldError("data", "Forbidden", None, "field is immutable when `immutable` is set"))
    return errs


def configmap(obj: Obj, old: Obj | None) -> Errors:
    """ConfigMap rules: keys, 1 MiB total, immutable."""
    errs: Errors = []
    total = 0
    for field in ("data", "binaryData"):
        for k, v in (obj.get(field) or {}).items():
            total += len(str(v))
            if not _CONFIG_KEY_RE.match(k):
                errs.append(
                    FieldError(
                        f"{field}[{k}]",
                        "Invalid",
                        k,
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
                        "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",  # noqa: E501
                    )
                )
    if total > 1024 * 1024:
        errs.append(FieldError("[]", "TooLong", None, "must have at most 1048576 bytes"))
    if old is not None and old.get("immutable"):
        for field in ("data", "binaryData"):
            if old.get(field) != obj.get(field):
                errs.append(
                    FieldError(field, "Forbidden", None, "field is immutable when `immutable` is set")
                )
    return errs


def pvc(obj: Obj, old: Obj | None) -> Errors:
    """PersistentVolumeClaim rules (storage_rules.py)."""
    return storage_rules.pvc(obj, old, quantity)


def crd(obj: Obj, old: Obj | None) -> Errors:
    """CustomResourceDefinition rules: name = plural.group, versions, scope."""
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    errs: Errors = []
    group = spec.get("group") or ""
    plural = names.get("plural") or ""
    if not group:
        errs.append(FieldError("spec.group", "Required", None, ""))
    if not plural:
        errs.append(FieldError("spec.names.plural", "Required", None, ""))
    if not names.get("kind"):
        errs.append(FieldError("spec.names.kind", "Required", None, ""))
    if group and plural and obj["metadata"].get("name") != f"{plural}.{group}":
        errs.append(
            FieldError(
                "metadata.name",
                "Invalid",
                obj["metadata"].get("name"),
                'must be spec.names.plural+"."+spec.group',
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errs.append(
            FieldError(
                "spec.scope", "NotSupported", spec.get("scope"), 'supported values: "Cluster", "Namespaced"'
            )
        )
    versions = spec.get("versions") or []
    if not versions or sum(1 for v in versions if v.get("storage")) != 1:
        errs.append(
            FieldError(
                "spec.versions", "Invalid", None, "must have exactly one version marked as storage version"
            )
        )
    return errs


VALIDATORS: dict[tuple[str, str], Callable[[Obj, Obj | None], Errors]] = {
    ("", "pods"): pod,
    ("", "services"): service,
    ("", "secrets"): secret,
    ("", "configmaps"): configmap,
    ("", "persistentvolumeclaims"): pvc,
    ("apps", "statefulsets"): statefulset,
    ("apps", "deployments"): deployment,
    ("apps", "replicasets"): replicaset,
    ("apps", "daemonsets"): replicaset,
    ("batch", "jobs"): job,
    ("batch", "cronjobs"): cronjob,
    ("apiextensions.k8s.io", "customresourcedefinitions"): crd,
}
