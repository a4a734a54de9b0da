"""What `kubectl simtask` prints, as pure functions of the objects: rows of tables, status
change lines, exit codes. No I/O, so every one is unit-tested on sample objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from rich.table import Table
from rich.text import Text

from simtask.durations import format_duration
from simtask.sdk.batch import BatchSummary
from simtask.sdk.outcome import Change
from simtask.sdk.queue import queued_group
from simtask.timestamps import parse_ts

#: Exit codes of SPEC §8, and one for "could not do it" (bad input, unknown object,
#: no permission, API unreachable), kept apart from "a task failed".
EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_ERROR = 2
EXIT_TIMEOUT = 124

#: Phase colours: green for success, red for endings in failure, yellow for the waits.
_STYLES = {
    "Success": "green",
    "Failed": "red",
    "Killed": "red",
    "Zombie": "red",
    "ExecutorFailed": "red",
    "ExecutorTerminatedByUser": "red",
    "ExecutorTerminatedTTLExceeded": "red",
    "TTLExceeded": "red",
    "SpotPreempted": "yellow",
    "ExecutorTerminated": "yellow",
    "PendingKilled": "yellow",
    "Held": "yellow",
    "PendingInput": "yellow",
    "Deleted": "red",
}


def phase_style(phase: str | None) -> str:
    """The rich style of a phase."""
    return _STYLES.get(phase or "", "cyan")


def exit_code(endings: Iterable[str], *, timed_out: bool = False) -> int:
    """SPEC §8's exit code for `wait`: 124 on a timeout, 1 when one of the objects ended in
    anything but Success, 0 when all did."""
    if timed_out:
        return EXIT_TIMEOUT
    return EXIT_SUCCESS if all(phase == "Success" for phase in endings) else EXIT_FAILURE


def clock(value: datetime | None, tz: tzinfo | None = None) -> str:
    """A time of day, in `tz` (default: the machine's local time zone)."""
    if value is None:
        return "-"
    return value.astimezone(tz).strftime("%H:%M:%S")


def stamp(value: datetime | None, tz: tzinfo | None = None) -> str:
    """A date and time, to the second."""
    if value is None:
        return "-"
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def span(start: datetime | None, end: datetime | None) -> str:
    """How long from `start` to `end`, to the second ("-" when either is unknown)."""
    if start is None or end is None:
        return "-"
    return format_duration(timedelta(seconds=round((end - start).total_seconds())))


def ref(change: Change) -> str:
    """The kubectl-style name of what changed: `simtask/NAME` or `simbatch/NAME`."""
    return f"{'simbatch' if change.kind == 'SimulationBatch' else 'simtask'}/{change.name}"


def counts_text(counts: Sequence[tuple[str, int]]) -> str:
    """Batch instance counts in words: "10 total: 4 pending, 5 Success, 1 Failed"."""
    total = dict(counts).get("total", 0)
    rest = [f"{n} {what}" for what, n in counts if what != "total"]
    return f"{total} total" + (": " + ", ".join(rest) if rest else "")


def change_line(change: Change, tz: tzinfo | None = None) -> Text:
    """One status change, as `wait` prints it: time, object, phase, then why."""
    line = Text(f"{clock(change.time, tz)}  {ref(change)}  ")
    line.append(change.phase, style=phase_style(change.phase))
    if change.attempt is not None:
        line.append(f"  attempt {change.attempt}", style="dim")
    if change.counts:
        line.append(f"  {counts_text(change.counts)}")
    why = ": ".join(part for part in (change.reason, change.message) if part)
    if why:
        line.append(f"  {why}", style="dim")
    return line


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def history_rows(
    obj: Mapping[str, Any], now: datetime | None = None, tz: tzinfo | None = None
) -> list[tuple[str, str, str, str, str, str]]:
    """The transitions of a task: time, attempt, phase, how long it stayed, reason,
    message. The last phase's stay runs until `now` unless the task has ended."""
    history = _status(obj).get("history") or []
    end = parse_ts(_status(obj).get("completionTime"))
    now = now or datetime.now(UTC)
    rows = []
    for i, entry in enumerate(history):
        start = parse_ts(entry.get("time"))
        if i + 1 < len(history):
            stay = span(start, parse_ts(history[i + 1].get("time")))
        else:
            stay = "" if end is not None else span(start, now)
        rows.append(
            (
                stamp(start, tz),
                str(entry.get("attempt") or ""),
                str(entry.get("phase") or ""),
                stay,
                str(entry.get("reason") or ""),
                str(entry.get("message") or ""),
            )
        )
    return rows


def _seconds(value: object) -> str:
    return "-" if value is None else f"{float(str(value)):.0f}"


def attempt_rows(
    obj: Mapping[str, Any], tz: tzinfo | None = None
) -> list[tuple[str, str, str, str, str, str, str, str, str]]:
    """The attempts of a task: number, phase ended in, node, group (spot or not), start,
    run time, exit code, CPU and GPU seconds."""
    rows = []
    for a in _status(obj).get("attempts") or []:
        start, end = parse_ts(a.get("startTime")), parse_ts(a.get("endTime"))
        group = str(a.get("machineGroup") or "-") + (" (spot)" if a.get("spot") else "")
        rows.append(
            (
                str(a.get("attempt") or ""),
                str(a.get("phase") or "running"),
                str(a.get("nodeName") or "-"),
                group,
                stamp(start, tz),
                span(start, end),
                "-" if a.get("exitCode") is None else str(a["exitCode"]),
                _seconds(a.get("cpuSeconds")),
                _seconds(a.get("gpuSeconds")),
            )
        )
    return rows


def compute_totals(obj: Mapping[str, Any]) -> tuple[float, float, float]:
    """CPU seconds, GPU seconds, and CPU seconds lost to preemptions, over all attempts."""
    cpu = gpu = lost = 0.0
    for a in _status(obj).get("attempts") or []:
        cpu += float(a.get("cpuSeconds") or 0)
        gpu += float(a.get("gpuSeconds") or 0)
        if a.get("phase") in ("SpotPreempted", "ExecutorTerminated"):
            lost += float(a.get("cpuSeconds") or 0)
    return cpu, gpu, lost


def history_tables(
    obj: Mapping[str, Any], now: datetime | None = None, tz: tzinfo | None = None
) -> list[Table | Text]:
    """What `history NAME` shows: a heading, the transitions, the attempts, the totals."""
    meta, status = obj.get("metadata") or {}, _status(obj)
    phase = str(status.get("phase") or "Pending")
    head = Text(f"simtask/{meta.get('name')}  ", style="bold")
    head.append(phase, style=phase_style(phase))
    head.append(
        f"  attempt {status.get('attempt') or 1}, {status.get('resubmissions') or 0} "
        f"resubmission(s)"
    )
    if status.get("duration"):
        head.append(f", ran {status['duration']}")
    out: list[Table | Text] = [head]
    transitions = Table("TIME", "ATTEMPT", "PHASE", "FOR", "REASON", "MESSAGE", box=None)
    for row in history_rows(obj, now, tz):
        transitions.add_row(*row[:2], Text(row[2], style=phase_style(row[2])), *row[3:])
    out.append(transitions)
    attempts = attempt_rows(obj, tz)
    if attempts:
        table = Table(
            "ATTEMPT", "ENDED", "NODE", "GROUP", "START", "RAN", "EXIT", "CPU-S", "GPU-S", box=None
        )
        for attempt in attempts:
            table.add_row(attempt[0], Text(attempt[1], style=phase_style(attempt[1])), *attempt[2:])
        out.append(table)
        cpu, gpu, lost = compute_totals(obj)
        out.append(
            Text(
                f"compute: {cpu:.0f} CPU-s, {gpu:.0f} GPU-s"
                + (f" ({lost:.0f} CPU-s lost to preemption)" if lost else "")
            )
        )
    return out


def summary_rows(summary: BatchSummary) -> list[tuple[str, str]]:
    """A batch's summary as label/value pairs."""
    rows = [
        ("phase", summary.phase),
        ("instances", counts_text((("total", summary.total), *summary.counts.items()))),
        ("succeeded indexes", summary.succeeded_indexes or "-"),
        ("failed indexes", summary.failed_indexes or "-"),
        ("resubmissions", str(summary.resubmissions)),
        ("compute", f"{summary.cpu_seconds:.0f} CPU-s, {summary.gpu_seconds:.0f} GPU-s"),
        ("started", stamp(summary.start_time)),
        ("completed", stamp(summary.completion_time)),
        ("ran", span(summary.start_time, summary.completion_time or None)),
    ]
    return rows


def summary_table(summary: BatchSummary) -> Table:
    """What `summary NAME` shows."""
    table = Table(
        show_header=False, box=None, title=f"simbatch/{summary.name}", title_justify="left"
    )
    for label, value in summary_rows(summary):
        table.add_row(label, Text(value, style=phase_style(value) if label == "phase" else ""))
    return table


def queue_rows(
    objs: Sequence[Mapping[str, Any]], now: datetime | None = None
) -> list[tuple[str, str, str, str, str]]:
    """Queued tasks (already in order): group, position, namespace, name, waiting since."""
    now = now or datetime.now(UTC)
    rows = []
    for obj in objs:
        meta, status = obj.get("metadata") or {}, _status(obj)
        since = None
        for entry in reversed(status.get("history") or []):
            if entry.get("phase") == "Submitted":
                since = parse_ts(entry.get("time"))
                break
        rows.append(
            (
                str(queued_group(obj) or ""),
                str(status.get("queuePosition")),
                str(meta.get("namespace") or ""),
                str(meta.get("name") or ""),
                span(since, now),
            )
        )
    return rows


def queue_table(objs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> Table:
    """What `queue` shows."""
    table = Table("GROUP", "POSITION", "NAMESPACE", "NAME", "WAITING", box=None)
    for row in queue_rows(objs, now):
        table.add_row(*row)
    return table
