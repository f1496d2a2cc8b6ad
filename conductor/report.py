"""A wave's Markdown summary, from the per-VM reports."""
from __future__ import annotations

from h2k_planner.models import Plan


def markdown(plan: Plan, reports: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in reports:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [
        f"# Wave {plan.wave}" + (f" ({plan.name})" if plan.name else ""),
        "",
        f"Output: `{plan.output.directory}` ({plan.output.format}). "
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ".",
        "",
        "| VM | host | status | disks | GiB | seconds | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        starts = [s["started"] for s in r["stages"] if s["started"]]
        ends = [s["ended"] for s in r["stages"] if s["ended"]]
        secs = f"{max(ends) - min(starts):.0f}" if starts and ends else "-"
        gib = sum(o["virtual_size"] for o in r["outputs"]) / 2**30
        errors = "; ".join(r["errors"]).replace("|", "\\|") or "-"
        lines.append(f"| {r['vm']} | {r['host']} | {r['status']} | {len(r['outputs'])} | {gib:.1f} | {secs} | {errors} |")
    return "\n".join(lines) + "\n"
