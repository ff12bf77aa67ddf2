"""Markdown rendering of a mirror plan (the plan artifact and the approval text). Pure."""

from __future__ import annotations

from planning.mirror import MirrorPlan

__all__ = ["render_plan_markdown"]


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def render_plan_markdown(plan: MirrorPlan, *, title: str, max_rows: int = 50) -> str:
    """Render a plan as Markdown: counts and bytes per kind, notes, and the first actions.

    Args:
        plan: The plan.
        title: Heading (e.g. ``"Mirror plan: a/bucket -> b/bucket"``).
        max_rows: Largest number of action rows listed.

    Returns:
        Markdown text.
    """
    lines = [f"## {title}", "", f"Verdict: **{plan.verdict.value}**", ""]
    lines += ["| action | objects | bytes |", "|---|---:|---:|"]
    for kind in ("copy", "overwrite", "delete", "skip", "inspect"):
        lines.append(f"| {kind} | {plan.counts[kind]} | {_human(plan.bytes[kind])} |")
    if plan.withheld_deletes:
        size = sum(a.size for a in plan.withheld_deletes)
        lines.append(f"| delete (withheld) | {len(plan.withheld_deletes)} | {_human(size)} |")
    lines.append("")
    for note in plan.notes:
        lines.append(f"- {note}")
    if plan.skip_reasons:
        lines.append("")
        lines.append("Skipped: " + ", ".join(f"{r}: {n}" for r, n in sorted(plan.skip_reasons.items())))
    labelled = [(a.kind.value, a) for a in plan.actions]
    labelled += [("delete (withheld)", a) for a in plan.withheld_deletes]
    shown = labelled[:max_rows]
    if shown:
        lines += ["", "| action | key | size | reason |", "|---|---|---:|---|"]
        for kind, a in shown:
            lines.append(f"| {kind} | `{a.key}` | {a.size} | {a.reason} |")
        rest = len(plan.actions) + len(plan.withheld_deletes) - len(shown)
        if rest > 0:
            lines.append(f"\n... and {rest} more")
    return "\n".join(lines) + "\n"
