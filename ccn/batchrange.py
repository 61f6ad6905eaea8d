"""Batch ranges as cuda-convnet wrote them: ``1-5``, ``6``, ``1-3,7``."""

from __future__ import annotations

from .errors import InputError

MAX_BATCHES = 1_000_000  # batches in one --train-range / --test-range


def parse_range(text: str, option: str) -> list[int]:
    """``1-5`` -> [1, 2, 3, 4, 5]; ``6`` -> [6]; comma lists of those are joined."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                a, b = int(a), int(b)
                if b < a:
                    raise InputError(f"{option}: '{part}' counts down; write {b}-{a}.")
                if b - a + 1 > MAX_BATCHES:
                    raise InputError(f"{option}: '{part}' names {b - a + 1} batches; a range holds at most "
                                     f"{MAX_BATCHES}.")
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise InputError(f"{option}: expected a batch range like 1-5 or 6, got '{text}'.") from None
    if any(b < 0 for b in out):
        raise InputError(f"{option}: batch numbers cannot be negative ('{text}').")
    if len(out) > MAX_BATCHES:
        raise InputError(f"{option}: '{text}' names {len(out)} batches; a range holds at most {MAX_BATCHES}.")
    return out


def format_range(nums) -> str:
    """[1, 2, 3, 7] -> ``1-3,7`` (runs of consecutive numbers, in the given order; parse_range
    reads it back); ``none`` for no batches."""
    nums = [int(x) for x in nums]
    if not nums:
        return "none"
    out, start, prev = [], nums[0], nums[0]
    for x in nums[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(out)
