"""Synthetic benchmark tables in DuckDB: N rows x 20 DOUBLE features (5% NULL) and a binary
target with signal, optionally plus 4 string categorical columns (cardinality 10..1000)
(variant `cat`), or with 100 DOUBLE features instead of 20 (variant `wide`, for the
bigger-than-memory training benchmark).

    python -m bench.synth --rows 1000000 --variant cat --db bench/out/synth_1m_cat.duckdb
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

N_FLOAT = 20
N_WIDE = 100
VARIANTS = ("float", "cat", "wide")
CARDINALITIES = (10, 100, 500, 1000)
TABLE = "synth"
OUT = Path(__file__).resolve().parent / "out"  # benchmark files (git-ignored)


def feature_names(variant: str) -> list[str]:
    """Feature columns of a variant, in table order."""
    names = [f"x{i}" for i in range(N_WIDE if variant == "wide" else N_FLOAT)]
    if variant == "cat":
        names += [f"c{i}" for i in range(len(CARDINALITIES))]
    return names


def generate(db: Path, rows: int, variant: str) -> float:
    """Create (or replace) table `synth` in `db`; returns seconds taken."""
    started = time.perf_counter()
    db.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db))
    try:
        # hash(range, i) gives deterministic, row-order-free pseudo-random numbers in SQL.
        def u(i: int) -> str:
            return f"(hash(range, {i}) % 1000003) / 1000003.0"

        n_floats = N_WIDE if variant == "wide" else N_FLOAT
        floats = [f"case when {u(100 + i)} < 0.05 then null else "
                  f"({u(i)} * 2 - 1) * {1 + i % 4} end as x{i}" for i in range(n_floats)]
        cats = []
        if variant == "cat":
            cats = [f"case when {u(300 + i)} < 0.05 then null else "
                    f"'v' || cast(hash(range, {200 + i}) % {k} as varchar) end as c{i}"
                    for i, k in enumerate(CARDINALITIES)]
        signal = ("coalesce(x0, 0) + coalesce(x1, 0) * coalesce(x2, 0) - 0.5 * coalesce(x3, 0) "
                  "+ 0.3 * sin(3 * coalesce(x4, 0)) + 0.8 * (noise - 0.5)")
        if variant == "cat":
            signal += " + case when c0 in ('v1', 'v3', 'v7') then 0.7 else 0 end"
            signal += " + case when hash(c2) % 3 = 0 then 0.4 else 0 end"
        con.execute(f"""
            create or replace table {TABLE} as
            with base as (
                select range as id, {', '.join(floats + cats)}, {u(999)} as noise
                from range({rows})
            )
            select * exclude (noise), ({signal}) > 0.1 as y from base
        """)
    finally:
        con.close()
    return time.perf_counter() - started


def synth_db(rows: int, variant: str) -> Path:
    """bench/out/synth_<rows>_<variant>.duckdb, generated the first time it is asked for."""
    db = OUT / f"synth_{rows}_{variant}.duckdb"
    if not db.exists():
        print(f"generating {rows:,} rows ({variant}) ...", file=sys.stderr)
        generate(db, rows, variant)
    return db


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--variant", choices=VARIANTS, default="float")
    ap.add_argument("--db", type=Path, required=True)
    args = ap.parse_args()
    seconds = generate(args.db, args.rows, args.variant)
    print(f"wrote {args.rows:,} rows ({args.variant}) to {args.db} in {seconds:.1f}s")


if __name__ == "__main__":
    main()
