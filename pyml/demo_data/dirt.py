"""Rendering as text, and the dirt a source system adds: messy case and dates, unknown codes,
bad numbers, duplicate rows and orphan foreign keys.

Each function draws from the generator it is given, in a fixed order: the same seed gives the
same dirt in the same places.
"""

from __future__ import annotations

import numpy as np

from .business import Columns, take

ORPHAN_BASE = 900_000_000  # customer ids from here on do not exist
DIRT = 0.02  # share of rows hit by each kind of dirt


def as_text(values: np.ndarray) -> np.ndarray:
    """Render numbers as text (object dtype so dirt can replace single values)."""
    return values.astype(str).astype(object)


def stamp(values: np.ndarray, with_time: bool) -> np.ndarray:
    """Render datetimes as ISO text: 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS'; NaT -> ''."""
    unit = "s" if with_time else "D"
    text = np.strings.replace(np.datetime_as_string(values.astype(f"datetime64[{unit}]")), "T", " ")
    return np.where(np.isnat(values), "", text).astype(object)


def pick(rng: np.random.Generator, n: int, share: float = DIRT) -> np.ndarray:
    """Indices of a random `share` of n rows."""
    return np.flatnonzero(rng.random(n) < share)


def mess_case(rng: np.random.Generator, col: np.ndarray, share: float = 0.06) -> None:
    """Upper-case, title-case or pad a share of the values, in place."""
    for i in pick(rng, len(col), share):
        v = str(col[i])
        col[i] = (v.upper(), v.title(), f"  {v} ", f" {v.upper()}")[rng.integers(0, 4)]


def mess_dates(rng: np.random.Generator, col: np.ndarray, impossible: bool = True) -> None:
    """Rewrite a share of ISO dates in other formats and, optionally, some impossible dates."""
    for i in pick(rng, len(col), 0.08):
        v = str(col[i])
        if not v:
            continue
        y, m, d, rest = v[:4], v[5:7], v[8:10], v[10:]
        col[i] = (f"{m}/{d}/{y}{rest[:6]}", f"{d}.{m}.{y}", f"{y}/{m}/{d}",
                  f"{y}-{m}-{d}T{rest.strip() or '00:00:00'}")[rng.integers(0, 4)]
    if impossible:
        bad = ["2099-01-01", "1900-01-01", "2025-02-30", "2024-13-01", "31/02/2025"]
        for i in pick(rng, len(col), 0.006):
            col[i] = bad[rng.integers(0, len(bad))]


def replace_some(rng: np.random.Generator, col: np.ndarray, values: list[str], share: float
                 ) -> None:
    """Replace a share of values with values drawn from `values` (unknown codes, bad numbers)."""
    for i in pick(rng, len(col), share):
        col[i] = values[rng.integers(0, len(values))]


def with_duplicates(rng: np.random.Generator, cols: Columns, share: float = DIRT) -> Columns:
    """Repeat a share of rows exactly, each copy next to its original."""
    n = len(next(iter(cols.values())))
    rows = np.sort(np.concatenate([np.arange(n), pick(rng, n, share)]), kind="stable")
    return take(cols, rows)


def with_orphans(rng: np.random.Generator, cols: Columns, id_col: str, share: float = 0.01,
                  ) -> Columns:
    """Append copies of a share of rows that point at customers that do not exist."""
    n = len(cols[id_col])
    extra = take(cols, pick(rng, n, share))
    k = len(extra[id_col])
    extra[id_col] = as_text(np.arange(n + 1, n + k + 1))  # ids are 1..n so far
    extra["customer_id"] = as_text(ORPHAN_BASE + rng.integers(0, 10_000_000, k))
    return {c: np.concatenate([cols[c], extra[c]]) for c in cols}
