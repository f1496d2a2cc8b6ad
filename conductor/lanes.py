"""A lane's identity and whether it is over, shared by the scheduler and the token reconciler.

A lane (a disk's chain `d<N>`, or the VM's `vm` chain) holds its concurrency tokens as
`WAVE/VM/LANE`, the same in every run of the VM: a retry or resume that sends it again while an
older run's chain is still in flight reuses the token instead of taking a second one. What was
sent in which run is recorded per run, as `WAVE/VM/LANE#RUN`.
"""
from __future__ import annotations

TERMINAL = ("failed", "cancelled")


def holder(wave: str, vm: str, lane: str) -> str:
    return f"{wave}/{vm}/{lane}"


def lane_id(holder_name: str, run: int) -> str:
    return f"{holder_name}#{run}"


def parse_holder(name: str) -> tuple[str, str, str] | None:
    """(wave, vm, lane) of a holder; None for a name that is not one (e.g. an older format)."""
    wave, _, rest = name.partition("/")
    vm, _, lane = rest.rpartition("/")
    return (wave, vm, lane) if wave and vm and lane else None


def stage_done(record: dict, run: int) -> bool:
    return record.get("status") == "succeeded" and record.get("run") == str(run)


def lane_over(records: list[dict], run: int) -> bool:
    """Every stage succeeded in run `run`, or one failed or was cancelled and none is still running (a
    cancel marks the stages that wait as cancelled at once; the running one stops when its worker sees
    the flag, or finishes if a retry cleared the flag first)."""
    if all(stage_done(r, run) for r in records):
        return True
    return any(r.get("status") in TERMINAL for r in records) and not any(r.get("status") == "running" for r in records)
