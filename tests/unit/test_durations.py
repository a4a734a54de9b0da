"""Duration strings: what parses, to what, what is refused and how durations are written."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from simtask.durations import DURATION_PATTERN, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1d", timedelta(days=1)),
        ("2d12h", timedelta(days=2, hours=12)),
        ("1m1ms", timedelta(minutes=1, milliseconds=1)),
        ("0s", timedelta(0)),
        ("0.25s", timedelta(milliseconds=250)),
        ("10m10m", timedelta(minutes=20)),
        ("1.000001s", timedelta(seconds=1, microseconds=1)),
    ],
)
def test_parse_accepts_go_style_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must not be empty"),
        ("-5s", "negative"),
        ("-1h30m", "negative"),
        ("5", "not valid"),
        ("5w", "not valid"),
        ("5us", "not valid"),
        ("1h 30m", "not valid"),
        (" 5s", "not valid"),
        ("1.h", "not valid"),
        (".5h", "not valid"),
        ("h", "not valid"),
        ("5S", "not valid"),
        ("99999999999999d", "too long"),
    ],
)
def test_parse_refuses_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_parse_refuses_a_non_string() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(90)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(hours=1, minutes=2, seconds=3), "1h2m3s"),
        (timedelta(minutes=1, seconds=23), "1m23s"),
        (timedelta(hours=2), "2h"),
        (timedelta(hours=1, seconds=3), "1h3s"),
        (timedelta(days=3, minutes=1), "3d1m"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=1, milliseconds=500), "1.5s"),
        (timedelta(seconds=1, milliseconds=5), "1.005s"),
        (timedelta(microseconds=999), "0s"),
        (timedelta(seconds=2, microseconds=999), "2s"),
        (timedelta(seconds=-90), "-1m30s"),
        (timedelta(microseconds=-1), "0s"),
    ],
)
def test_format(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize(
    "value",
    [
        timedelta(milliseconds=1),
        timedelta(seconds=59, milliseconds=999),
        timedelta(days=400, hours=23, minutes=59, seconds=1),
        timedelta(hours=5, milliseconds=120),
    ],
)
def test_format_parses_back(value: timedelta) -> None:
    text = format_duration(value)
    assert re.match(DURATION_PATTERN, text), text
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["90s", "1h30m", "1.5h", "7d", "0s", "5", "1x", "-1s", "1.h", ""])
def test_pattern_and_parser_agree(text: str) -> None:
    """What the CRD's pattern lets through, the parser accepts, and the other way round."""
    matches = re.match(DURATION_PATTERN, text) is not None
    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert matches == parsed
