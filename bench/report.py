"""Numbers into summaries, and summaries into Markdown."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Summary = dict[str, float | int | None]


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Iterable[float]) -> Summary:
    """Count, p50, p99, max and mean of `values` (seconds)."""
    vals = list(values)
    return {
        "n": len(vals),
        "p50": percentile(vals, 50),
        "p99": percentile(vals, 99),
        "max": max(vals) if vals else None,
        "mean": sum(vals) / len(vals) if vals else None,
    }


def deltas(start: Mapping[str, float], end: Mapping[str, float]) -> list[float]:
    """end[name] - start[name] for every name in both."""
    return [end[n] - start[n] for n in start if n in end]


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell; '—' for nothing."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def fmt_p50_p99(s: Summary, unit: str = "s") -> str:
    if not s.get("n"):
        return "—"
    return f"{fmt(s['p50'], 3)} / {fmt(s['p99'], 3)} {unit}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: The resources whose writes are counted per task; the rest is the cluster's background.
FAMILIES = ("simulationtasks", "jobs", "pods", "events")


def writes_by_resource(diff: Mapping[tuple[str, str, str, str], int]) -> dict[str, dict[str, int]]:
    """Writes as {"resource[/subresource]": {verb: count}} (every status code)."""
    out: dict[str, dict[str, int]] = {}
    for (resource, sub, verb, _code), count in diff.items():
        key = f"{resource}/{sub}" if sub else resource
        out.setdefault(key, {})
        out[key][verb] = out[key].get(verb, 0) + count
    return dict(sorted(out.items()))


def failed_writes(diff: Mapping[tuple[str, str, str, str], int]) -> dict[str, int]:
    """Writes answered with an error code, as {"resource[/sub] VERB code": count}."""
    out: dict[str, int] = {}
    for (resource, sub, verb, code), count in diff.items():
        if code and not code.startswith("2"):
            key = f"{resource}/{sub}" if sub else resource
            out[f"{key} {verb} {code}"] = out.get(f"{key} {verb} {code}", 0) + count
    return dict(sorted(out.items()))


def family_of(key: str) -> str:
    resource = key.split("/")[0]
    return resource if resource in FAMILIES else "other"


def writes_per_object(by_resource: Mapping[str, Mapping[str, int]], n: int) -> dict[str, float]:
    """Writes per object by resource[/subresource], per family and in total (the families)."""
    out: dict[str, float] = {}
    for key, verbs in by_resource.items():
        total = sum(verbs.values())
        out[key] = total / n
        fam = f"{family_of(key)} (all)"
        out[fam] = out.get(fam, 0.0) + total / n
    out["total (simulationtasks+jobs+pods+events)"] = sum(
        v for k, v in out.items() if k.endswith(" (all)") and not k.startswith("other")
    )
    return out
