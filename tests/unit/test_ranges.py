"""Range strings: parse and format round-trip, and the compact form."""

from __future__ import annotations

import random

import pytest

from simtask import ranges


@pytest.mark.parametrize(
    ("text", "indexes"),
    [
        ("", []),
        ("0", [0]),
        ("0-3", [0, 1, 2, 3]),
        ("0-3,7,9-12", [0, 1, 2, 3, 7, 9, 10, 11, 12]),
        ("5,5,1-2", [1, 2, 5]),
        ("3-5,4-6", [3, 4, 5, 6]),
        ("7-7", [7]),
    ],
)
def test_parse(text: str, indexes: list[int]) -> None:
    assert ranges.parse(text) == indexes


@pytest.mark.parametrize("text", ["-1", "1-", "a", "1,,2", "1 ,2", "3-1", ",", "1-2-3", "123456"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ranges.RangeError):
        ranges.parse(text)


@pytest.mark.parametrize(
    ("indexes", "text"),
    [
        ([], ""),
        ([0], "0"),
        ([0, 1], "0,1"),
        ([0, 1, 2], "0-2"),
        ([12, 0, 1, 2, 3, 7, 9, 10, 11], "0-3,7,9-12"),
        ([3, 7], "3,7"),
        ([1, 1, 1], "1"),
    ],
)
def test_format_is_compact(indexes: list[int], text: str) -> None:
    assert ranges.format(indexes) == text


def test_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(300):
        indexes = sorted(rng.sample(range(200), rng.randint(0, 120)))
        text = ranges.format(indexes)
        assert ranges.parse(text) == indexes
        assert ranges.format(ranges.parse(text)) == text
        assert ranges.count(text) == len(indexes)


def test_pattern_is_the_parsers() -> None:
    assert ranges.PATTERN.startswith("^") and ranges.PATTERN.endswith("$")
