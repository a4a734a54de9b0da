"""Fold py-spy's collapsed stacks into the heaviest frames: a flame graph as a table.

    python bench/flame.py PROFILE.folded [--top 25] [--idle]

Self time is where the samples were taken; total time is every sample with the frame
anywhere on its stack. Samples of threads waiting in the event loop's selector are idle
and left out unless --idle is given.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

#: The event loop waiting for I/O: idle, though py-spy samples it.
IDLE = "(selectors.py:"


def fold(path: Path, *, idle: bool) -> tuple[int, Counter[str], Counter[str]]:
    total, own, inclusive = 0, Counter[str](), Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if not frames or not count.isdigit():
            continue
        if not idle and IDLE in frames[-1]:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return total, own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--idle", action="store_true")
    args = parser.parse_args()
    total, own, inclusive = fold(args.profile, idle=args.idle)
    print(f"{total} busy samples ({total / 50:.1f} s at 50 Hz)\n")
    print("| self % | frame |\n|---|---|")
    for frame, n in own.most_common(args.top):
        print(f"| {100 * n / total:5.1f} | `{frame}` |")
    print("\n| total % | frame |\n|---|---|")
    for frame, n in inclusive.most_common(args.top):
        print(f"| {100 * n / total:5.1f} | `{frame}` |")


if __name__ == "__main__":
    main()
