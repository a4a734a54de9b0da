"""Index range strings such as `0-99,200,300-349`: a batch's `spec.indexes`, and its
`status.succeededIndexes` / `status.failedIndexes` (like the Job API's `completedIndexes`).

`parse` accepts any valid string (ranges in any order, overlapping); `format` writes the
compact form: ascending, merged, a range only where it saves characters ("0-3,7,9-12").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: One range string, as the CRD's OpenAPI pattern checks it: indexes 0 to 99999.
PATTERN = r"^[0-9]{1,5}(-[0-9]{1,5})?(,[0-9]{1,5}(-[0-9]{1,5})?)*$"
_PATTERN = re.compile(PATTERN)


class RangeError(ValueError):
    """A range string that cannot be read."""


def parse(text: str) -> list[int]:
    """The indexes `text` names, ascending and without repeats; "" names none."""
    if text == "":
        return []
    if not _PATTERN.match(text):
        raise RangeError(f"{text!r} is not a range string such as 0-99,200,300-349")
    indexes: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if hi < lo:
            raise RangeError(f"range {part!r} ends before it starts")
        indexes.update(range(lo, hi + 1))
    return sorted(indexes)


def count(text: str) -> int:
    """How many indexes `text` names, without listing them."""
    return len(parse(text))


def format(indexes: Iterable[int]) -> str:
    """The compact range string of `indexes` (any order, repeats allowed); "" for none."""
    parts: list[str] = []
    ordered = sorted(set(indexes))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j == i:
            parts.append(str(ordered[i]))
        elif j == i + 1:
            parts += [str(ordered[i]), str(ordered[j])]
        else:
            parts.append(f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
