"""The CronJob controller: Jobs ``<cronjob>-<minutes since epoch>`` on a 5-field cron schedule."""

from __future__ import annotations

import copy
import datetime as dt
import logging
from typing import Any

from sandbox.runtime.events import emit
from sandbox.runtime.kube import Kube, Obj
from sandbox.runtime.objects import as_int, meta, name_of, ns_of, owner_ref, terminating, uid_of
from sandbox.runtime.world import World

log = logging.getLogger(__name__)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_NAMES = {
    3: {m: i + 1 for i, m in enumerate(_MONTHS)},
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
SCHEDULED_ANN = "batch.kubernetes.io/cronjob-scheduled-timestamp"


class CronError(ValueError):
    """The schedule is not a valid cron expression."""


def parse_cron(expr: str) -> list[set[int]]:
    """Parse a standard 5-field cron expression (names, ranges, steps, lists, ``@daily`` ...)."""
    expr = _MACROS.get(expr.strip().lower(), expr.strip())
    if expr.upper().startswith(("TZ=", "CRON_TZ=")):
        expr = expr.split(None, 1)[1] if " " in expr else ""
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {expr!r}")
    out: list[set[int]] = []
    for idx, field in enumerate(fields):
        lo, hi = _RANGES[idx]
        values: set[int] = set()
        for part in field.lower().split(","):
            step = 1
            if "/" in part:
                part, step_s = part.split("/", 1)
                step = int(step_s)
                if step < 1:
                    raise CronError(f"bad step in {field!r}")
            if part in ("*", "?"):
                start, end = lo, hi
            elif "-" in part:
                a, b = part.split("-", 1)
                start, end = _value(a, idx), _value(b, idx)
            else:
                start = _value(part, idx)
                end = hi if step > 1 else start
            if idx == 4 and end == 7:
                end = 6
                values.add(0)
            if not (lo <= start <= hi and lo <= end <= hi and start <= end):
                raise CronError(f"{field!r} is out of range {lo}-{hi}")
            values.update(range(start, end + 1, step))
        out.append(values)
    return out


def _value(token: str, idx: int) -> int:
    names = _NAMES.get(idx, {})
    if token in names:
        return names[token]
    try:
        value = int(token)
    except ValueError as exc:
        raise CronError(f"bad value {token!r}") from exc
    return 0 if idx == 4 and value == 7 else value


def matches(spec: list[set[int]], t: dt.datetime) -> bool:
    """True if minute ``t`` matches the parsed schedule (day-of-month OR day-of-week, as cron does)."""
    minute, hour, dom, month, dow = spec
    if t.minute not in minute or t.hour not in hour or t.month not in month:
        return False
    dom_all, dow_all = len(dom) == 31, len(dow) == 7
    cron_dow = (t.weekday() + 1) % 7
    if dom_all or dow_all:
        return t.day in dom and cron_dow in dow
    return t.day in dom or cron_dow in dow


def last_due(spec: list[set[int]], since: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The most recent scheduled minute in ``(since, now]`` (searching at most 8 days back)."""
    t = now.replace(second=0, microsecond=0)
    floor = max(since, now - dt.timedelta(days=8))
    while t > floor:
        if matches(spec, t):
            return t
        t -= dt.timedelta(minutes=1)
    return None


def _parse_ts(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _job_finished(job: Obj) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def sync_cronjobs(kube: Kube, world: World, now: dt.datetime | None = None) -> None:
    """Reconcile every CronJob: start due Jobs, honour concurrencyPolicy, prune history."""
    now = now or dt.datetime.now(dt.UTC)
    jobs_by_owner = world.by_owner("jobs")
    for cj in world["cronjobs"]:
        if terminating(cj):
            continue
        try:
            _sync_one(kube, cj, jobs_by_owner.get(uid_of(cj), []), now)
        except Exception as exc:
            log.warning("cronjob %s/%s: %s", ns_of(cj), name_of(cj), exc)


def _sync_one(kube: Kube, cj: Obj, jobs: list[Obj], now: dt.datetime) -> None:
    spec = cj.get("spec") or {}
    status = cj.get("status") or {}
    active = [j for j in jobs if not _job_finished(j) and not terminating(j)]
    finished = [j for j in jobs if _job_finished(j)]
    new_status: dict[str, Any] = {
        "active": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name_of(j),
                "namespace": ns_of(j),
                "uid": uid_of(j),
            }
            for j in active
        ]
        or None,
        "lastScheduleTime": status.get("lastScheduleTime"),
        "lastSuccessfulTime": status.get("lastSuccessfulTime"),
    }
    done_ok = [j for j in finished if _job_finished(j) == "Complete"]
    if done_ok:
        latest = max(str((j.get("status") or {}).get("completionTime") or "") for j in done_ok)
        if latest and latest > str(new_status["lastSuccessfulTime"] or ""):
            new_status["lastSuccessfulTime"] = latest
    # history limits
    for kind, limit in (
        ("Complete", as_int(spec.get("successfulJobsHistoryLimit"), 3)),
        ("Failed", as_int(spec.get("failedJobsHistoryLimit"), 1)),
    ):
        olds = sorted(
            (j for j in finished if _job_finished(j) == kind),
            key=lambda j: meta(j).get("creationTimestamp") or "",
        )
        for j in olds[: max(0, len(olds) - limit)]:
            kube.delete("jobs", ns_of(j), name_of(j), propagation="Background")
    if not spec.get("suspend"):
        sched = parse_cron(str(spec.get("schedule") or ""))
        since = (
            _parse_ts(status.get("lastScheduleTime")) or _parse_ts(meta(cj).get("creationTimestamp")) or now
        )
        due = last_due(sched, since, now)
        deadline = spec.get("startingDeadlineSeconds")
        if due is not None and deadline is not None and (now - due).total_seconds() > float(deadline):
            due = None
        policy = spec.get("concurrencyPolicy") or "Allow"
        if due is not None and active and policy == "Forbid":
            due = None
        if due is not None:
            if active and policy == "Replace":
                for j in active:
                    kube.delete("jobs", ns_of(j), name_of(j), propagation="Background")
                new_status["active"] = None
            created = _create_job(kube, cj, due)
            if created is not None:
                emit(
                    kube,
                    cj,
                    "SuccessfulCreate",
                    f"Created job {name_of(created)}",
                    component="cronjob-controller",
                    kind="CronJob",
                    api_version="batch/v1",
                )
                ref = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name_of(created),
                    "namespace": ns_of(created),
                    "uid": uid_of(created),
                }
                new_status["active"] = [*(new_status["active"] or []), ref]
            new_status["lastScheduleTime"] = _ts(due)
    if {k: status.get(k) for k in new_status} != new_status:
        kube.patch("cronjobs", ns_of(cj), name_of(cj), {"status": new_status}, sub="status")


def _create_job(kube: Kube, cj: Obj, due: dt.datetime) -> Obj | None:
    template = copy.deepcopy((cj.get("spec") or {}).get("jobTemplate") or {})
    tmeta = template.get("metadata") or {}
    minutes = int(due.timestamp() // 60)
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{name_of(cj)}-{minutes}",
            "namespace": ns_of(cj),
            "labels": tmeta.get("labels") or {},
            "annotations": {**(tmeta.get("annotations") or {}), SCHEDULED_ANN: _ts(due)},
            "ownerReferences": [owner_ref(cj, "batch/v1", "CronJob")],
        },
        "spec": template.get("spec") or {},
    }
    return kube.create("jobs", ns_of(cj), body, exist_ok=True)
