"""Training on a table bigger than the memory budget (`pyml train --max-memory`).

    python -m bench.bench_extmem [--rows 4500000] [--budget-mb 512] [--rounds 20]
                                 [--skip-in-memory] [--unordered-too]

One DuckDB table (`bench/synth.py`, variant `wide`: 100 DOUBLE features, 5% NULL, so its
float32 matrix is rows x 400 bytes: 1.8 GB at 4.5M rows), trained twice by
`pyml.verbs.train.train_one`, each in its own child process (`bench.paths train_pyml`) so each
peak RSS (`ru_maxrss`) is its own:

- `in memory`: no budget (the float32 parts + XGBoost's QuantileDMatrix);
- `budget`: `max_memory` = --budget-mb, which the table exceeds several times over, so pyml
  trains from disk (ExtMemQuantileDMatrix fed by DuckDB batches).

Prints the table and the target: peak RSS <= 1.5 x budget with a matrix >= 3 x budget.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import xgboost as xgb

from bench.data_path import run_path
from bench.synth import N_WIDE, OUT, synth_db

MB = 1 << 20


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4_500_000)
    ap.add_argument("--budget-mb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--skip-in-memory", action="store_true",
                    help="only the budgeted run (the in-memory one is the slow reference)")
    ap.add_argument("--unordered-too", action="store_true",
                    help="also the budgeted run without staging in row hash order (what "
                         "ordering costs)")
    args = ap.parse_args()
    # Generated in a child process: a child's peak RSS (ru_maxrss) starts at its parent's, so
    # generating the table here (GBs) would be counted as every training run's peak.
    subprocess.run([sys.executable, "-c", "import sys; from bench.synth import synth_db; "
                    f"synth_db({args.rows}, 'wide')"], check=True,
                   cwd=Path(__file__).resolve().parents[1])
    db = synth_db(args.rows, "wide")
    matrix_mb = args.rows * N_WIDE * 4 / MB
    budget = args.budget_mb * MB
    runs: list[tuple[str, dict[str, Any]]] = []
    if not args.skip_in_memory:
        runs.append(("in memory", run_path("train_pyml", db, "wide", 100_000,
                                           rounds=args.rounds)))
        print(json.dumps(runs[-1][1]), file=sys.stderr)
    if args.unordered_too:
        runs.append((f"max_memory {args.budget_mb}MB, unordered", run_path(
            "train_pyml", db, "wide", 100_000, max_memory=budget, rounds=args.rounds,
            unordered=True)))
        print(json.dumps(runs[-1][1]), file=sys.stderr)
    runs.append((f"max_memory {args.budget_mb}MB", run_path(
        "train_pyml", db, "wide", 100_000, max_memory=budget, rounds=args.rounds)))
    print(json.dumps(runs[-1][1]), file=sys.stderr)

    print(f"machine: {platform.machine()}, Python {platform.python_version()}, duckdb "
          f"{duckdb.__version__}, xgboost {xgb.__version__}; {args.rows:,} rows x {N_WIDE} "
          f"features (float32 matrix {matrix_mb:,.0f} MB), {args.rounds} trees of depth 6")
    print()
    print("| run | path | seconds | peak RSS MB | x budget | holdout AUC |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, r in runs:
        path = "disk (external memory)" if r["on_disk"] else "memory"
        print(f"| {name} | {path} | {r['seconds']:.1f} | {r['peak_rss_mb']:,.0f} | "
              f"{r['peak_rss_mb'] / args.budget_mb:.2f} | {r['auc']:.4f} |")
    last = runs[-1][1]
    ok = last["on_disk"] and last["peak_rss_mb"] <= 1.5 * args.budget_mb
    print()
    print(f"target: matrix {matrix_mb / args.budget_mb:.1f}x the budget (>= 3), peak RSS "
          f"{last['peak_rss_mb'] / args.budget_mb:.2f}x the budget (<= 1.5): "
          f"{'met' if ok and matrix_mb >= 3 * args.budget_mb else 'NOT met'}")
    Path(OUT / "extmem.json").write_text(json.dumps(
        {"rows": args.rows, "budget_mb": args.budget_mb, "rounds": args.rounds,
         "runs": [{"name": n, **r} for n, r in runs]}, indent=1))


if __name__ == "__main__":
    main()
