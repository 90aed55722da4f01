"""What reproducible training costs: the ORDER BY of every training read, and the lineage
fingerprint that lets `pyml train` skip unchanged inputs (issue 16).

    python -m bench.bench_order --rows 1000000 --repeat 3

On a `bench.synth` table (N rows x 20 DOUBLE features, binary target), in one process:

- `read`: `pyml.data.trainset.read_training_set` into float32 parts, in whatever order DuckDB
  returns rows (`ordered=False`, the baseline) and sorted by row hash (what `pyml train`
  does);
- `fingerprint`: the order-independent data fingerprint (`pyml.data.lineage`), one scan;
- `train`: `pyml.verbs.train.train_one` end to end (100 trees, depth 6), whose read is ordered:
  the read's extra time as a share of a whole training.

Reads alternate (unordered, ordered, ...) and each keeps its fastest of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import xgboost as xgb

from bench.synth import TABLE, synth_db
from bench.timing import best
from pyml.data import extmem, split
from pyml.data.encode import resolve_features
from pyml.data.lineage import data_fingerprint
from pyml.data.trainset import learn_categories, learn_target, read_training_set
from pyml.dbt.spec import ModelSpec, parse_specs
from pyml.engines.duckdb import qualified, relation_columns, stream_arrow
from pyml.verbs.train import TRAIN_MEMORY_LIMIT, train_one


def _spec() -> ModelSpec:
    raw = {"name": "synth", "task": "binary", "target": "y", "key": "id",
           "num_boost_round": 100, "early_stopping_rounds": None,
           "params": {"max_depth": 6, "nthread": 2}, "allow_leakage": True}
    [spec] = parse_specs(raw, feature_model="model.bench.synth", schema="main",
                         relation=TABLE, source_file="bench/bench_order.py")
    return spec


def _drain(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> int:
    rows = 0
    reader = stream_arrow(con, sql, 65_536, params)
    for batch in reader:
        rows += len(batch)
    return rows


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    db = synth_db(args.rows, "float")
    spec = _spec()
    source = qualified("main", TABLE)
    with tempfile.TemporaryDirectory(prefix="bench-order-") as tmp:
        copy = Path(tmp) / "synth.duckdb"
        shutil.copyfile(db, copy)
        con = duckdb.connect(str(copy))
        try:
            columns = relation_columns(con, "main", TABLE)
            part_sql, params = split.part_sql(spec, "duckdb")
            target = learn_target(con, spec, source, dict(columns)["y"])
            features = learn_categories(con, spec, source, resolve_features(spec, columns))
            results: dict[str, float] = {}
            with extmem.duckdb_settings(con, {"memory_limit": TRAIN_MEMORY_LIMIT}):
                for ordered in (False, True) * args.repeat:
                    name = "read ordered" if ordered else "read unordered"
                    seconds = best(lambda o=ordered: read_training_set(
                        con, spec, source, features, target, part_sql, params, ordered=o), 1)
                    results[name] = min(results.get(name, seconds), seconds)
            results["fingerprint"] = best(
                lambda: data_fingerprint(con, spec, features, dict(columns)), args.repeat)
            with extmem.duckdb_settings(con, {"threads": "2"}):
                results["train"] = best(lambda: train_one(con, None, spec, force=True), 1)
        finally:
            con.close()
    read_extra = results["read ordered"] - results["read unordered"]
    print(f"{args.rows:,} rows x 20 features; {platform.machine()}, {os.cpu_count()} cores, "
          f"duckdb {duckdb.__version__}, xgboost {xgb.__version__}; best of {args.repeat}")
    print()
    print("| measure | seconds | x baseline |")
    print("| --- | ---: | ---: |")
    print(f"| read, unordered (baseline) | {results['read unordered']:.2f} | 1.00 |")
    print(f"| read, ordered | {results['read ordered']:.2f} | "
          f"{results['read ordered'] / results['read unordered']:.2f} |")
    print(f"| data fingerprint (one scan) | {results['fingerprint']:.2f} | |")
    print(f"| train_one end to end (ordered read) | {results['train']:.2f} | |")
    print()
    print(f"ordering adds {read_extra:+.2f}s to the read: {read_extra / results['train']:.1%} "
          f"of a whole training; the fingerprint {results['fingerprint'] / results['train']:.1%}"
          )


if __name__ == "__main__":
    main()
