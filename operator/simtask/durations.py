"""Duration strings of the API (`spec.timeToLive`, `spec.ttlAfterFinished`): parse and format.

The grammar is Go's compound durations ("90s", "1h30m", "1.5h", "500ms") plus a day
unit ("1d" = 24h). `DURATION_PATTERN` is the same grammar as the CRDs' OpenAPI pattern,
so whatever the API server accepts, `parse_duration` accepts too.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

#: The CRDs' `pattern` for duration fields; tests check both stay the same.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"

_UNIT_SECONDS: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_WHOLE = re.compile(DURATION_PATTERN)
# "ms" must come before "m" so that "500ms" is not read as 500 minutes and a stray "s".
_TERM = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_EXAMPLES = '"90s", "1h30m", "1.5h", "500ms" or "2d"'


def parse_duration(text: str) -> timedelta:
    """The timedelta a duration string such as "1h30m" stands for.

    Raises ValueError, saying what is wrong, for an empty, negative or malformed
    string or an unknown unit. Precision is one microsecond.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as {_EXAMPLES}, not {text!r}")
    if not text:
        raise ValueError(f"a duration must not be empty; use for example {_EXAMPLES}")
    if text.lstrip().startswith("-"):
        raise ValueError(f"duration {text!r} is negative; durations must be zero or more")
    if not _WHOLE.match(text):
        raise ValueError(
            f"duration {text!r} is not valid: use numbers with the units ms, s, m, h or d, "
            f"for example {_EXAMPLES}"
        )
    seconds = Decimal(0)
    for number, unit in _TERM.findall(text):
        try:
            seconds += Decimal(number) * _UNIT_SECONDS[unit]
        except InvalidOperation as exc:  # pragma: no cover - the pattern admits only digits
            raise ValueError(f"duration {text!r} is not valid") from exc
    try:
        return timedelta(microseconds=int(seconds * 1_000_000))
    except OverflowError as exc:
        raise ValueError(f"duration {text!r} is too long") from exc


def format_duration(value: timedelta) -> str:
    """A compact string for `value`, such as "1h2m3s", "45s", "1.5s", "250ms" or "0s".

    Zero components are left out and days are written as "d", so the result parses
    back with `parse_duration`. Time is rounded down to the millisecond; a negative
    value is written with a leading "-".
    """
    if value < timedelta(0):
        text = format_duration(-value)
        return text if text == "0s" else "-" + text
    total_ms = value // timedelta(milliseconds=1)
    if total_ms == 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    days, rest = divmod(total_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    parts: list[str] = []
    if days:
        parts.append(f"{days}d")
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds or millis:
        parts.append(f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)
