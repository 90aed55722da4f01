"""The split hash in plain Python (hashlib.md5), the reference every engine's SQL must match.

Written from the definition in pyml/data/split.py's docstring, not from its code: the DuckDB
tests (tests/test_split.py) and the Spark tests compare their engine's bucket to this one.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from decimal import Decimal

BUCKETS = 1_000_000
SEPARATOR = "\x1f"  # chr(31)
NULL_PART = "\x1e"  # chr(30)

KeyPart = int | str | bool | datetime.date | Decimal | None


def key_text(value: KeyPart) -> str:
    """The canonical text of one key part (what `cast(k as varchar)` gives in both engines)."""
    if value is None:
        return NULL_PART
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    raise TypeError(f"{type(value).__name__} keys are not portable")


def bucket(salt: int, key: Sequence[KeyPart]) -> int:
    """The bucket (0 .. 999_999) of a key with a salt (the split seed, or seed + 1)."""
    text = SEPARATOR.join([str(int(salt)), *(key_text(v) for v in key)])
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:15], 16) % BUCKETS


def part(key: Sequence[KeyPart], seed: int, test_fraction: float,
         validation_fraction: float) -> int:
    """0 train, 1 validation, 2 holdout: the random/kfold split of a key."""
    if bucket(seed, key) < int(test_fraction * BUCKETS):
        return 2
    if bucket(seed + 1, key) < int(validation_fraction * BUCKETS):
        return 1
    return 0
