"""`pyml monitor` at scale: 20 features x 1M rows in four quarterly windows, in DuckDB.

    python -m bench.bench_monitor [--rows 1000000] [--repeat 2] [--threads 2]

The synthetic table of bench.synth (20 DOUBLE features, 5% NULL, binary target) gets a
quarterly as-of date (`id % 4`) and, in the last quarter, one feature scaled by 3 (so the
gate has something to find). A model is trained on a 200,000-row sample (bench_sql's) and its
training snapshot taken from that sample, as `pyml train` stores them. Measured in the same
run, best of `--repeat`:

- `pyml monitor`'s work (pyml.verbs.monitor.monitor_version): the copy into a temporary
  table, every statistic per window and feature in SQL, scoring the rows for the prediction's
  distribution, the CBPE estimate per window, the write to ml.monitoring;
- the baseline: `pyml drift`'s work on the same relation (one window, streamed through
  numpy: PSI, KS at 101 percentiles, null shares; pyml.modelling.drift_stats.Counter).

Prints wall and CPU seconds, the ratio, and the process's peak RSS after the set-up and after
each path (getrusage's ru_maxrss, a high-water mark; the baseline runs first, so each figure
is that path's peak or an earlier one).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import duckdb

from bench.bench_sql import CPU_SECONDS, SAMPLE, best_of, train_model
from bench.synth import OUT, TABLE, feature_names, synth_db
from pyml.data.encode import Encoder, select_exprs
from pyml.dbt.spec import ModelSpec
from pyml.dbt.spec_monitor import MonitorSpec
from pyml.engines.duckdb import stream_arrow
from pyml.modelling.drift_stats import Counter, snapshot
from pyml.store.schema import ensure_schema
from pyml.verbs.monitor import monitor_version

SHIFTED = "x5"  # scaled by 3 in the last quarter
MONITORED = "synth_monitored"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(db: Path, rows: int, digits: int | None) -> Path:
    """A copy of the synthetic table with as_of (4 quarters) and the shift, in its own file;
    with `digits`, every feature rounded to that many decimals (as measured values are)."""
    out = OUT / f"monitor_{rows}_{'all' if digits is None else digits}.duckdb"
    if out.exists():
        return out
    rounded = "" if digits is None else ", ".join(
        f"round({f}, {digits}) as {f}" for f in feature_names("float") if f != SHIFTED) + ", "
    con = duckdb.connect(str(out))
    try:
        con.execute(f"attach '{db}' as src (read_only)")
        con.execute(
            f"create table {MONITORED} as select * replace ({rounded}case when id % 4 = 3 then "
            f"{SHIFTED} * 3 else {SHIFTED} end as {SHIFTED}), "
            "(date '2024-01-01' + to_months(3 * (id % 4)::integer))::date as as_of "
            f"from src.{TABLE}")
        con.execute(f"create table {TABLE} as select * from src.{TABLE} using sample "
                    f"{SAMPLE} rows (reservoir, 7)")
    finally:
        con.close()
    return out


def drift_baseline(con: duckdb.DuckDBPyConnection, features: list, snaps: list) -> list:
    """`pyml drift`'s computation (drift_relation without the registry and the write)."""
    counters = [Counter(s) for s in snaps]
    reader = stream_arrow(con, f"select {', '.join(select_exprs(features))} from {MONITORED}",
                          100_000)
    for batch in reader:
        for j, counter in enumerate(counters):
            counter.add(batch.column(j))
    return [c.result() for c in counters]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--digits", type=int, default=None,
                        help="round the features to this many decimals (default: full "
                             "precision, every value distinct: the sorts' worst case)")
    args = parser.parse_args()
    db = prepare(synth_db(args.rows, "float"), args.rows, args.digits)
    con = duckdb.connect(str(db))
    con.execute(f"set threads = {args.threads}")
    con.execute("create schema if not exists ml")
    con.execute("drop table if exists ml.monitoring")  # a previous run's (see run_monitor)
    ensure_schema(con)  # an (empty) registry beside ml.monitoring, as a project has
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    stored = train_model(con, trees=100, depth=6, threads=args.threads)
    features = list(stored.features)
    sample = con.sql(f"select {', '.join(select_exprs(features))} from {TABLE}"
                     ).to_arrow_table()
    X = Encoder(features).matrix([sample.column(i) for i in range(len(features))], "bench")
    snaps = snapshot(features, X)
    spec = ModelSpec(name="bench_sql", task="binary", target="y", key=("id",),
                     feature_model=f"model.bench.{MONITORED}", schema="main",
                     relation=MONITORED, source_file="bench",
                     monitor=MonitorSpec("as_of", "quarter"))
    by_name = {s.feature: s for s in snaps}

    results = []

    def run_monitor() -> None:
        # The registry holds no bench_sql version: ml.monitoring's rows of the previous run
        # would be orphans to pyml's integrity check, so each run starts without the table.
        con.execute("drop table if exists ml.monitoring")
        results.append(monitor_version(con, spec, stored, by_name, ("main", MONITORED)))

    # The baseline first: ru_maxrss is a high-water mark, so each figure is the peak so far
    # (model training on the 200,000-row sample included in both).
    setup_peak = _peak_mb()
    drift_s = best_of(args.repeat, lambda: drift_baseline(con, features, snaps))
    drift_cpu = CPU_SECONDS[0]
    drift_peak = _peak_mb()
    monitor_s = best_of(args.repeat, run_monitor)
    monitor_cpu = CPU_SECONDS[0]
    monitor_peak = _peak_mb()
    result = results[-1]
    flagged = sorted({(r.window, r.feature) for r in result.alerts})
    rows_written = con.execute("select count(*) from ml.monitoring").fetchall()[0][0]
    con.close()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
          f"DuckDB threads {args.threads}; {args.rows:,} rows x {len(feature_names('float'))} "
          f"features ({'full precision' if args.digits is None else f'{args.digits} decimals'}"
          f"), {len(result.windows)} windows; best of {args.repeat}")
    print(f"peak RSS after setup (data, model, snapshot): {setup_peak:.0f} MB")
    print("| path | wall s | CPU s | peak RSS MB (high-water) |")
    print("| --- | --- | --- | --- |")
    print(f"| pyml monitor (every statistic, {len(result.windows)} windows, prediction, CBPE) "
          f"| {monitor_s:.2f} | {monitor_cpu:.2f} | {monitor_peak:.0f} |")
    print(f"| baseline: pyml drift's computation (1 window: PSI, KS at percentiles, nulls) "
          f"| {drift_s:.2f} | {drift_cpu:.2f} | {drift_peak:.0f} |")
    print(f"monitor / drift wall ratio: {monitor_s / drift_s:.2f}; {rows_written:,} rows in "
          f"ml.monitoring; alerts in {flagged}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(total {time.perf_counter() - started:.0f}s)")
