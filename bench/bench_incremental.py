"""Incremental scoring (`pyml score --incremental`) against a full score, in DuckDB.

    python -m bench.bench_incremental [--rows 5000000] [--changed 0.01] [--repeat 3]
                                      [--trees 100] [--depth 6] [--threads 2]

One DuckDB file (a copy of bench/out/synth_<rows>_float.duckdb: 20 DOUBLE features, 5% NULL),
one XGBoost model (binary, bench_sql's: trained on a 200k-row sample). In the same run:

1. a full score (`score_relation`, no fingerprints): the baseline;
2. a full score that keeps fingerprints (what the first `--incremental` run does);
3. `--repeat` times: change `--changed` of the rows (0.8 of it updated feature values, 0.1
   new keys, 0.1 deleted keys, different rows each time), then an incremental score;
4. the check: the incremental table is copied aside, a full score rewrites the table (a
   second baseline), and the two must hold the same rows, every column but scored_at.

Prints each time and the ratio of the median incremental score to the median full score.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from bench.bench_sql import train_model
from bench.synth import OUT, TABLE, synth_db
from pyml.modelling.model import LoadedModel
from pyml.verbs.score import score_relation

MODEL = "bench_incremental"
PREDICTIONS = f"ml.{MODEL}_predictions"


def change(con: duckdb.DuckDBPyConnection, rows: int, fraction: float, round_: int) -> int:
    """Change `fraction` of the rows (updates, inserts, deletes); returns rows touched."""
    per = max(1, round(10 / fraction))  # ten rows in `per`
    # One hash picks the rows and their fate: 8 in 10 get new values, 1 is deleted, 1 comes
    # back under a new key. (Two hashes of the same id with different salts are correlated.)
    pick = f"hash(id, {1000 + round_}) % {per}"
    touched = 0
    for sql, params in (
            (f"update {TABLE} set x0 = coalesce(x0, 0) + 1, x7 = null where {pick} < 8", []),
            (f"delete from {TABLE} where {pick} = 8", []),
            (f"insert into {TABLE} select * replace (id + ? as id) from {TABLE} "
             f"where {pick} = 9", [(round_ + 1) * 10 * rows])):
        (n,), = con.execute(sql, params).fetchall()
        touched += int(n)
    return touched


def timed(db: Path, model: LoadedModel, threads: int, incremental: bool
          ) -> tuple[float, int | None]:
    """Seconds of one score_relation on a fresh connection (as a `pyml score` process opens
    the file after dbt changed it), and the rows it rescored (None: all)."""
    con = duckdb.connect(str(db))
    try:
        con.execute(f"set threads = {threads}")
        started = time.perf_counter()
        result = score_relation(con, model, ("main", TABLE), incremental=incremental)
        return time.perf_counter() - started, result.rescored
    finally:
        con.close()


def edit(db: Path, run: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
    """Run `run` on its own connection to `db` (dbt's part: another process in real use)."""
    con = duckdb.connect(str(db))
    try:
        return run(con)
    finally:
        con.close()


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    db = OUT / f"incremental_{args.rows}.duckdb"
    shutil.copy2(synth_db(args.rows, "float"), db)
    try:
        model = LoadedModel(replace(edit(db, lambda con: train_model(
            con, args.trees, args.depth, args.threads)), name=MODEL))
        full = [timed(db, model, args.threads, incremental=False)[0]]
        # No fingerprints yet: a full score that keeps them.
        with_fp, _ = timed(db, model, args.threads, incremental=True)
        inc: list[float] = []
        for r in range(args.repeat):
            touched = edit(db, lambda con, r=r: change(con, args.rows, args.changed, r))
            seconds, rescored = timed(db, model, args.threads, incremental=True)
            inc.append(seconds)
            what = "all" if rescored is None else f"{rescored:,}"
            print(f"round {r + 1}: {touched:,} rows changed (80% updated, 10% deleted, 10% "
                  f"inserted), {what} rescored, {seconds:.2f}s", flush=True)
        edit(db, lambda con: con.execute(f"create table main.incremental_rows as select * "
                                         f"exclude (scored_at) from {PREDICTIONS}"))
        full.append(timed(db, model, args.threads, incremental=False)[0])
        (diff,), = edit(db, lambda con: con.execute(
            f"select count(*) from ((select * from main.incremental_rows except all "
            f"select * exclude (scored_at) from {PREDICTIONS}) union all (select * exclude "
            f"(scored_at) from {PREDICTIONS} except all select * from main.incremental_rows))"
        ).fetchall())
        (rows,), = edit(db, lambda con: con.execute(
            f"select count(*) from {PREDICTIONS}").fetchall())
    finally:
        for suffix in ("", ".wal"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
    median_full, median_inc = statistics.median(full), statistics.median(inc)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, DuckDB "
          f"{duckdb.__version__}, {args.threads} threads; {rows:,} rows x 20 features, "
          f"{args.trees} trees of depth {args.depth}, {args.changed:.1%} changed per round\n")
    print("| run | seconds | vs full score |")
    print("| --- | --- | --- |")
    for i, s in enumerate(full):
        print(f"| full score #{i + 1} | {s:.2f} | {s / median_full:.2f} |")
    print(f"| full score keeping fingerprints | {with_fp:.2f} | {with_fp / median_full:.2f} |")
    for i, s in enumerate(inc):
        print(f"| incremental #{i + 1} | {s:.2f} | {s / median_full:.3f} |")
    print(f"\nratio (median incremental / median full): {median_inc / median_full:.3f}; "
          f"rows differing from a full score: {diff}")
    if diff:
        raise SystemExit("the incremental table differs from a full score")


if __name__ == "__main__":
    main()
