"""Workload rules: StatefulSet, Deployment, ReplicaSet / DaemonSet, Job and CronJob (replicas,
selector against template labels, the pod template, immutable fields, cron schedules)."""

from __future__ import annotations

import re
from typing import Any

from sandbox.apiserver.errors import FieldError, RawValue
from sandbox.apiserver.meta_rules import Errors, Obj, labels
from sandbox.apiserver.pod_rules import pod_spec
from sandbox.apiserver.selectors import labels_match, selector_from_label_selector


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
