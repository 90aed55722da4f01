"""Scoring in pure SQL (`pyml sql`) against pyml's Python scoring path, in DuckDB.

    python -m bench.bench_sql [--rows 1000000] [--trees 100] [--depth 6] [--threads 2]
                              [--orbital-site DIR]

One run, one DuckDB file (bench/out/synth_<rows>_float.duckdb: 20 DOUBLE features, 5% NULL),
one XGBoost model (binary, trained on a 200k-row sample). The baseline is measured in the
same run: `pyml.verbs.score.score_relation` with a LoadedModel (DuckDB -> Arrow -> XGBoost -> a
new table), against `create table ... as <pyml sql>` (the same rows into a table, in SQL
only). Both use `--threads` DuckDB threads (and XGBoost threads); best of `--repeat`.

The reference row is orbital (scikit-learn pipelines -> SQL) on an equivalent
GradientBoostingClassifier (same trees and depth, NULLs read as 0). orbital is not a pyml
dependency: install it into a folder of its own (`pip install --target DIR orbital`) and pass
`--orbital-site DIR`; it then runs in a child process with DIR first on its path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import sqlglot
import xgboost as xgb

from bench.synth import OUT, TABLE, feature_names, synth_db
from pyml.data.encode import Encoder, Feature, Target, select_exprs
from pyml.modelling.model import LoadedModel
from pyml.sqlgen import compile as sqlgen
from pyml.store.registry import StoredModel
from pyml.verbs.score import score_relation

SAMPLE = 200_000


def train_model(con: duckdb.DuckDBPyConnection, trees: int, depth: int, threads: int
                ) -> StoredModel:
    """An XGBoost model on a sample of the table, stored as `pyml train` would store it."""
    features = [Feature(n, "numeric", "DOUBLE") for n in feature_names("float")]
    table = con.sql(f"select {', '.join(select_exprs(features))}, y from {TABLE} "
                    f"using sample {SAMPLE} rows (reservoir, 7)").to_arrow_table()
    X = Encoder(features).matrix([table.column(i) for i in range(len(features))], "bench")
    y = table.column(len(features)).to_numpy(zero_copy_only=False).astype(float)
    dtrain = xgb.DMatrix(X, y, feature_names=[f.name for f in features])
    booster = xgb.train({"objective": "binary:logistic", "max_depth": depth, "eta": 0.1,
                         "tree_method": "hist", "nthread": threads, "seed": 0}, dtrain, trees)
    return StoredModel(
        name="bench_sql", version=1, created_at=datetime.now(), task="binary",
        target=Target("BOOLEAN", (False, True)), key=("id",), features=tuple(features),
        spec={"threshold": 0.5, "schema": "main", "relation": TABLE,
              "feature_model": f"model.bench.{TABLE}"},
        feature_relation=f"main.{TABLE}", booster=booster)


def best_of(repeat: int, run: Callable[[], Any]) -> float:
    """Fastest wall time of `repeat` runs (its CPU time goes to CPU_SECONDS)."""
    best = float("inf")
    for _ in range(repeat):
        cpu = _cpu()
        started = time.perf_counter()
        run()
        took = time.perf_counter() - started
        if took < best:
            best = took
            CPU_SECONDS[0] = _cpu() - cpu
    return best


# CPU seconds (this process, all threads) of the last best_of's fastest run: on a shared
# machine the wall time depends on the other jobs, the CPU time much less.
CPU_SECONDS = [0.0]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sql_variant(stored: StoredModel, ordered: bool) -> tuple[str, float]:
    """Generated SQL and the seconds it took, with or without the first-tree ordering."""
    saved = sqlgen.SORT_MIN_TREES
    sqlgen.SORT_MIN_TREES = saved if ordered else 10 ** 9
    try:
        started = time.perf_counter()
        text = sqlgen.scoring_sql(stored)
        return text, time.perf_counter() - started
    finally:
        sqlgen.SORT_MIN_TREES = saved


ORBITAL_CHILD = textwrap.dedent("""
    import json, sys, time
    import duckdb, numpy as np, orbital, pandas as pd, sklearn
    from orbital import types
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    db, table, names, trees, depth, sample, out = sys.argv[1:8]
    names, trees, depth, sample = json.loads(names), int(trees), int(depth), int(sample)
    con = duckdb.connect(db, read_only=True)
    cols = ", ".join(f"coalesce({n}, 0) as {n}" for n in names)
    train = con.sql(f"select {cols}, y from {table} using sample {sample} rows (reservoir, 7)").df()
    full = con.sql(f"select {cols} from {table}").df()  # table order
    con.close()
    started = time.perf_counter()
    model = Pipeline([("gbc", GradientBoostingClassifier(n_estimators=trees, max_depth=depth,
                                                          random_state=0))])
    model.fit(train[names], train["y"].astype(int))
    fit = time.perf_counter() - started
    parsed = orbital.parse_pipeline(model, features={n: types.DoubleColumnType() for n in names})
    started = time.perf_counter()
    sql = orbital.export_sql(f"{table}_filled", parsed, dialect="duckdb", separate_trees=True)
    export = time.perf_counter() - started
    np.save(out + ".npy", model.predict_proba(full[names])[:, 1])
    with open(out + ".sql", "w") as f:
        f.write(sql)
    print(json.dumps({"fit_s": fit, "export_s": export, "orbital": "0.6+",
                      "sklearn": sklearn.__version__}))
""")


def run_orbital(site: Path, db: Path, threads: int, trees: int, depth: int, repeat: int
                ) -> dict[str, Any]:
    """orbital's SQL for an equivalent sklearn model: rows/s and max error vs sklearn."""
    out = OUT / "orbital_gbc"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", ORBITAL_CHILD, str(db), TABLE, json.dumps(feature_names("float")),
         str(trees), str(depth), str(50_000), str(out)],
        capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    con = duckdb.connect(str(db))
    con.execute(f"set threads = {threads}")
    cols = ", ".join(f"coalesce({n}, 0) as {n}" for n in feature_names("float"))
    con.execute(f"create or replace view {TABLE}_filled as select {cols} from {TABLE}")
    sql = (out.with_suffix(".sql")).read_text()
    started = time.perf_counter()
    con.execute(f"explain {sql}")
    info["prepare_s"] = time.perf_counter() - started
    info["seconds"] = best_of(repeat, lambda: con.execute(
        f"create or replace table orbital_scored as {sql}"))
    got = con.sql('select "output_probability.1" from orbital_scored').fetchnumpy()
    expected = np.load(out.with_suffix(".npy"))
    info["max_err"] = float(np.max(np.abs(np.asarray(got["output_probability.1"]) - expected)))
    con.close()
    return info


def machine() -> str:
    """CPU model and core count, as the docs table states them."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--orbital-site", type=Path,
                        help="folder with orbital installed (pip install --target DIR orbital)")
    args = parser.parse_args()

    db = synth_db(args.rows, "float")
    con = duckdb.connect(str(db))
    con.execute(f"set threads = {args.threads}")
    stored = train_model(con, args.trees, args.depth, args.threads)
    stored.booster.set_param({"nthread": args.threads})
    model = LoadedModel(stored)
    rows: list[dict[str, Any]] = []

    python_s = best_of(args.repeat, lambda: score_relation(con, model, ("main", TABLE)))
    python_cpu = CPU_SECONDS[0]
    rows.append({"path": "Python path (score_relation)", "seconds": python_s, "max_err": 0.0,
                 "cpu_s": python_cpu})
    for ordered in (True, False):
        sql, gen_s = sql_variant(stored, ordered)
        started = time.perf_counter()
        con.execute(f"explain {sql}")
        prepare_s = time.perf_counter() - started
        seconds = best_of(args.repeat, lambda sql=sql: con.execute(
            f"create or replace table main.bench_sql_scored as {sql}"))
        # Both hold float32 values in DOUBLE columns: equal doubles are equal float32 bits.
        row = con.execute(
            "select max(abs(a.probability - b.probability)), count_if(a.prediction <> "
            "b.prediction), count_if(a.probability::float::double <> a.probability or "
            "b.probability::float::double <> b.probability or a.probability <> "
            "b.probability), count(*) from ml.bench_sql_predictions a join "
            "main.bench_sql_scored b using (id)").fetchone()
        assert row is not None and row[3] == args.rows
        label = ("pyml sql (rows ordered by first tree)" if ordered
                 else "pyml sql, no ordering")
        rows.append({"path": label, "seconds": seconds, "max_err": float(row[0]),
                     "label_diffs": int(row[1]), "probability_diffs": int(row[2]),
                     "cpu_s": CPU_SECONDS[0],
                     "generate_s": gen_s, "prepare_s": prepare_s,
                     "sql_chars": len(sql)})
    con.close()  # the orbital child reads the file
    if args.orbital_site:
        try:
            info = run_orbital(args.orbital_site, db, args.threads, args.trees, args.depth,
                               args.repeat)
            rows.append({"path": "orbital, sklearn GradientBoostingClassifier (reference)",
                         **info})
        except (RuntimeError, duckdb.Error, OSError) as e:
            print(f"orbital skipped: {e}", file=sys.stderr)

    for r in rows:
        r["rows_per_s"] = args.rows / r["seconds"]
        r["vs_python"] = python_s / r["seconds"]
        if "cpu_s" in r:
            r["cpu_vs_python"] = python_cpu / r["cpu_s"]
    report = {
        "rows": args.rows, "trees": args.trees, "depth": args.depth, "threads": args.threads,
        "machine": machine(), "python": platform.python_version(),
        "duckdb": duckdb.__version__, "xgboost": xgb.__version__,
        "sqlglot": sqlglot.__version__, "results": rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_sql.json").write_text(json.dumps(report, indent=2))
    print(table(rows))
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = ["| path | seconds | rows/s | vs Python path | CPU s | vs Python (CPU) | "
             "max abs error | rows differing (float32 bits) | prepare s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        prepare = f"{r['prepare_s']:.2f}" if "prepare_s" in r else ""
        diffs = f"{r['probability_diffs']:,}" if "probability_diffs" in r else ""
        lines.append(f"| {r['path']} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} | "
                     f"{r['vs_python']:.2f}x | {r.get('cpu_s', float('nan')):.2f} | "
                     f"{r.get('cpu_vs_python', float('nan')):.2f}x | {r['max_err']:.1e} | "
                     f"{diffs} | {prepare} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
