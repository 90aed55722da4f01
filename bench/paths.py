"""One benchmark path per process run, so that each peak RSS is its own.

    python -m bench.paths score_pyml --db bench/out/synth_1m_float.duckdb --variant float

Prints one JSON line: {"path", "rows", "seconds", "peak_rss_mb", ...}.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from bench.synth import TABLE, VARIANTS, feature_names
from pyml.dbt.spec import ModelSpec, SplitSpec

MODEL = "bench"
ROUNDS = 100
PARAMS = {"max_depth": 6, "eta": 0.1, "tree_method": "hist", "nthread": 2}


def bench_spec(rounds: int = ROUNDS) -> ModelSpec:
    """The benchmark model: binary, 100 trees, depth 6, no early stopping (fixed work)."""
    return ModelSpec(
        name=MODEL, task="binary", target="y", key=("id",), feature_model="bench.synth",
        schema="main", relation=TABLE, source_file="bench/paths.py",
        split=SplitSpec(method="random", test_fraction=0.2, validation_fraction=0.0),
        params=dict(PARAMS), num_boost_round=rounds, early_stopping_rounds=None,
    )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(db: Path) -> Any:
    from pyml.modelling.model import LoadedModel
    from pyml.store.registry import load_version

    con = duckdb.connect(str(db), read_only=True)
    try:
        return LoadedModel(load_version(con, MODEL))
    finally:
        con.close()


def score_limit(db: Path, variant: str, batch_size: int) -> dict[str, Any]:
    """Physical limit: inplace_predict on the rows already in memory as float32."""
    model = _load(db)
    con = duckdb.connect(str(db), read_only=True)
    from pyml.data.encode import select_exprs

    table = con.sql(f"select {', '.join(select_exprs(model.stored.features))} "
                    f"from {TABLE}").to_arrow_table()
    X = model.encoder.matrix([table.column(i) for i in range(table.num_columns)], "bench")
    del table
    started = time.perf_counter()
    model.stored.booster.inplace_predict(X)
    return {"seconds": time.perf_counter() - started, "rows": len(X)}


def score_naive(db: Path, variant: str, batch_size: int) -> dict[str, Any]:
    """Common practice: .df() -> pandas -> predict -> write back through a DataFrame."""
    import pandas as pd

    model = _load(db)
    feats = feature_names(variant)
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    df = con.sql(f"select * from {TABLE}").df()
    X = df[feats]
    if variant == "cat":
        X = X.astype({c: "category" for c in feats if c.startswith("c")})
    prob = model.stored.booster.inplace_predict(X)
    out = pd.DataFrame({"id": df["id"], "prediction": prob >= 0.5, "probability": prob})
    con.execute("create or replace table ml.naive_predictions as select * from out")
    con.close()
    return {"seconds": time.perf_counter() - started, "rows": len(out)}


def score_pyml(db: Path, variant: str, batch_size: int) -> dict[str, Any]:
    """pyml's scoring path end to end (library call): table -> predictions table."""
    from pyml.verbs.score import score_relation

    model = _load(db)
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    result = score_relation(con, model, ("main", TABLE), batch_size=batch_size)
    con.close()
    return {"seconds": time.perf_counter() - started, "rows": result.rows}


def train_naive(db: Path, variant: str, batch_size: int) -> dict[str, Any]:
    """Common practice: .df() -> XGBClassifier.fit on 80% -> AUC on the rest."""
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    feats = feature_names(variant)
    started = time.perf_counter()
    con = duckdb.connect(str(db), read_only=True)
    df = con.sql(f"select * from {TABLE}").df()
    con.close()
    if variant == "cat":
        df = df.astype({c: "category" for c in feats if c.startswith("c")})
    mask = np.random.default_rng(0).random(len(df)) < 0.8
    clf = xgb.XGBClassifier(n_estimators=ROUNDS, enable_categorical=True, **{
        "max_depth": 6, "learning_rate": 0.1, "tree_method": "hist", "n_jobs": 2})
    clf.fit(df.loc[mask, feats], df.loc[mask, "y"])
    auc = roc_auc_score(df.loc[~mask, "y"], clf.predict_proba(df.loc[~mask, feats])[:, 1])
    return {"seconds": time.perf_counter() - started, "rows": len(df), "auc": float(auc)}


def train_pyml(db: Path, variant: str, batch_size: int, max_memory: int | None = None,
               rounds: int = ROUNDS, unordered: bool = False) -> dict[str, Any]:
    """pyml's training path end to end (read + matrix + train + evaluate + register); with
    `max_memory`, the budget decides between memory and disk (external memory).
    `unordered`: from disk, stream each pass from DuckDB in scan order instead of staging
    the parts in row hash order (the code before issue 16's ordering)."""
    from dataclasses import replace

    from pyml.data import extmem
    from pyml.verbs.train import train_one

    extmem.ORDERED = not unordered

    started = time.perf_counter()
    con = duckdb.connect(str(db))
    logged: list[str] = []
    # force: every run trains (the same table trained before would be "unchanged").
    result = train_one(con, None, replace(bench_spec(rounds), max_memory=max_memory),
                       log=logged.append, force=True)
    con.close()
    auc = next(m.value for m in result.metrics if m.name == "auc")
    return {"seconds": time.perf_counter() - started, "rows": sum(result.rows[:3]),
            "auc": auc, "on_disk": any("from disk" in line for line in logged)}


def train_sample(db: Path, variant: str, batch_size: int) -> dict[str, Any]:
    """Store the benchmark model trained on a 200k-row sample (scoring-only runs)."""
    from dataclasses import replace

    from pyml.verbs.train import train_one

    started = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute(f"create or replace view {TABLE}_sample as "
                f"select * from {TABLE} using sample 200000 rows (reservoir, 42)")
    result = train_one(con, None, replace(bench_spec(), relation=f"{TABLE}_sample"))
    con.close()
    return {"seconds": time.perf_counter() - started, "rows": sum(result.rows[:3])}


PATHS: dict[str, Callable[..., dict[str, Any]]] = {
    "train_sample": train_sample,
    "score_limit": score_limit,
    "score_naive": score_naive,
    "score_pyml": score_pyml,
    "train_naive": train_naive,
    "train_pyml": train_pyml,
}


def main() -> None:
    """Run one path and print its JSON result line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("path", choices=sorted(PATHS))
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--variant", choices=VARIANTS, default="float")
    ap.add_argument("--batch-size", type=int, default=100_000)
    ap.add_argument("--max-memory", type=int, help="bytes (train_pyml only)")
    ap.add_argument("--rounds", type=int, help=f"boosting rounds (train_pyml; {ROUNDS})")
    ap.add_argument("--unordered", action="store_true",
                    help="train_pyml from disk: no staging in row hash order")
    args = ap.parse_args()
    fn = PATHS[args.path]
    extra: dict[str, Any] = {"max_memory": args.max_memory} if args.max_memory else {}
    if args.rounds:
        extra["rounds"] = args.rounds
    if args.unordered:
        extra["unordered"] = True
    result = fn(args.db, args.variant, args.batch_size, **extra)
    result.update(path=args.path, peak_rss_mb=round(_peak_mb(), 1))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
