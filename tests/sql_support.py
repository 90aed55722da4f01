"""Helpers for the pure-SQL scoring tests: data, models (trained or built tree by tree),
the reference predictions of `pyml score`'s path, and comparisons.

Models are StoredModel objects made directly (no dbt project), so one test can check many of
them; the dbt flow itself is tested through the loans project in test_sqlgen.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import xgboost as xgb

from pyml.data.encode import Encoder, Feature, Target, learn_categories, select_exprs
from pyml.engines.duckdb import quote
from pyml.modelling.model import LoadedModel
from pyml.store.registry import StoredModel

OBJECTIVE = {"binary": "binary:logistic", "multiclass": "multi:softprob",
             "regression": "reg:squarederror"}
CLASSES = {"binary": (False, True), "multiclass": ("low", "mid", "high"), "regression": ()}
# Category values that need quoting care in every dialect.
CATEGORIES = ("north", "south", "o'brien", "back\\slash", "naïve", "two words", "")


def stored_model(booster: xgb.Booster, task: str, features: Sequence[Feature], *,
                 table: str = "features", key: Sequence[str] = ("id",),
                 classes: Sequence[Any] | None = None, threshold: float = 0.5,
                 name: str = "m", version: int = 1) -> StoredModel:
    """A registry version for a booster, as `pyml train` would store it."""
    return StoredModel(
        name=name, version=version, created_at=datetime(2024, 1, 1), task=task,
        target=Target("VARCHAR", tuple(CLASSES[task] if classes is None else classes)),
        key=tuple(key), features=tuple(features),
        spec={"threshold": threshold, "schema": "main", "relation": table,
              "feature_model": f"model.test.{table}"},
        feature_relation=f"main.{table}", booster=booster)


def make_table(con: duckdb.DuckDBPyConnection, n: int, seed: int = 0,
               table: str = "features") -> list[Feature]:
    """A feature table with NULLs, NaN, integers, booleans and a string column (with values
    the model never saw); returns the feature list with category mappings from its rows."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x1[rng.random(n) < 0.05] = np.nan  # NaN is missing too
    x2 = np.round(rng.lognormal(3, 1, n), 2)
    cats = np.array([*CATEGORIES, "never seen"], dtype=object)
    region = cats[rng.integers(0, len(cats), n)]
    region[rng.random(n) < 0.05] = None
    data = pa.table({
        "id": np.arange(n, dtype=np.int64),
        "x1": pa.array(x1, mask=rng.random(n) < 0.05),
        "x2": pa.array(x2, mask=rng.random(n) < 0.05),
        "n_items": pa.array(rng.integers(-5, 50, n).astype(np.int32)),
        "region": pa.array(region, type=pa.string()),
        "flag": pa.array(rng.random(n) < 0.3, mask=rng.random(n) < 0.05),
    })
    con.register("__data", data)
    con.execute(f"create or replace table {table} as select * from __data")
    con.unregister("__data")
    features = [Feature("x1", "numeric", "DOUBLE"), Feature("x2", "numeric", "DOUBLE"),
                Feature("n_items", "numeric", "INTEGER"),
                Feature("region", "categorical", "VARCHAR"),
                Feature("flag", "numeric", "BOOLEAN")]
    learned = fetch_inputs(con, table, features)
    mapped = learn_categories(features, learned, "test")
    # "never seen" stays out of the mapping: it must score as missing.
    return [Feature(f.name, f.kind, f.dtype, tuple(c for c in f.categories if c != "never seen"))
            for f in mapped]


def fetch_inputs(con: duckdb.DuckDBPyConnection, table: str, features: Sequence[Feature]
                 ) -> list[pa.ChunkedArray]:
    """The feature columns as pyml selects them (DOUBLE / VARCHAR), ordered by id."""
    t = con.sql(f"select {', '.join(select_exprs(features))} from {table} order by id"
                ).to_arrow_table()
    return [t.column(i) for i in range(len(features))]


def train(con: duckdb.DuckDBPyConnection, task: str, features: Sequence[Feature], *,
          table: str = "features", rounds: int = 40, depth: int = 6, rows: int = 20_000,
          **params: Any) -> StoredModel:
    """Train a real model on the first `rows` rows with a target that depends on every input."""
    X = Encoder(features).matrix(fetch_inputs(con, table, features), "test")[:rows]
    rng = np.random.default_rng(1)
    region = np.nan_to_num(X[:, 3], nan=-1)
    signal = (np.nan_to_num(X[:, 0]) * 2 + np.log1p(np.nan_to_num(X[:, 1], nan=10)) * 0.5
              - X[:, 2] * 0.03 + np.isin(region, [1, 3, 5]) + np.nan_to_num(X[:, 4]) * 0.7
              + rng.normal(0, 0.5, len(X)))
    if task == "binary":
        y = (signal > 1.5).astype(float)
    elif task == "multiclass":
        y = np.digitize(signal, [1.0, 2.2]).astype(float)
    else:
        y = signal * 100.0 - 150.0  # crosses zero: relative error is strict near it
    types = ["c" if f.kind == "categorical" else "q" for f in features]
    dtrain = xgb.DMatrix(X, y, feature_names=[f.name for f in features], feature_types=types,
                         enable_categorical=True)
    merged = {"objective": OBJECTIVE[task], "max_depth": depth, "eta": 0.3, "nthread": 2,
              "max_cat_to_onehot": 1, "seed": 0, **params}
    if task == "multiclass":
        merged["num_class"] = 3
    booster = xgb.train(merged, dtrain, rounds)
    return stored_model(booster, task, features, table=table)


def reference(con: duckdb.DuckDBPyConnection, stored: StoredModel, table: str = "features"
              ) -> pd.DataFrame:
    """What `pyml score` writes for the table (its own code path), ordered by key."""
    frame = con.sql(f"select * from {table}").df()
    out = LoadedModel(stored).predict(frame)
    return out.sort_values(list(stored.key)).reset_index(drop=True)


def run_duckdb(con: duckdb.DuckDBPyConnection, sql: str, key: Sequence[str] = ("id",)
               ) -> pd.DataFrame:
    """Run generated SQL in DuckDB, ordered by key."""
    return con.sql(sql).df().sort_values(list(key)).reset_index(drop=True)


def copy_to_sqlite(con: duckdb.DuckDBPyConnection, table: str = "features"
                   ) -> sqlite3.Connection:
    """The table in an in-memory SQLite database (booleans as 0/1, NaN as NULL)."""
    lite = sqlite3.connect(":memory:")
    cols = con.execute(f"describe {table}").fetchall()
    types = {"BIGINT": "integer", "INTEGER": "integer", "DOUBLE": "real", "VARCHAR": "text",
             "BOOLEAN": "integer"}
    lite.execute(f"create table {table} ("
                 + ", ".join(f'{quote(c[0])} {types.get(c[1], "numeric")}' for c in cols) + ")")
    # DECIMAL values go in as text: SQLite parses them to the nearest double, as DuckDB does.
    rows = [tuple(str(v) if isinstance(v, Decimal) else v for v in row)
            for row in con.execute(f"select * from {table}").fetchall()]
    lite.executemany(f"insert into {table} values ({', '.join('?' * len(cols))})", rows)
    return lite


def run_sqlite(lite: sqlite3.Connection, sql: str, key: Sequence[str] = ("id",)
               ) -> pd.DataFrame:
    """Run generated SQL in SQLite, ordered by key."""
    cur = lite.execute(sql)
    frame = pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])
    return frame.sort_values(list(key)).reset_index(drop=True)


def max_errors(ref: pd.DataFrame, got: pd.DataFrame, task: str) -> dict[str, float]:
    """Largest error per prediction column (relative for regression), after checking that
    both frames have the same rows, columns and labels."""
    assert list(got.columns) == [*ref.columns, "model_version"], list(got.columns)
    assert len(got) == len(ref)
    errors: dict[str, float] = {}
    for col in ref.columns:
        a, b = ref[col].to_numpy(), got[col].to_numpy()
        if col == "prediction" and task != "regression":
            same = np.array([_same_label(x, y) for x, y in zip(a, b, strict=True)])
            assert same.all(), f"{(~same).sum()} labels differ, e.g. {a[~same][:3]} {b[~same][:3]}"
        elif col.startswith("prob") or col == "prediction":
            a, b = a.astype(float), b.astype(float)
            err = np.abs(a - b)
            if task == "regression":
                err = err / np.maximum(np.abs(a), np.finfo(np.float32).tiny)
            errors[col] = float(err.max())
        else:
            assert (a == b).all(), col
    return errors


def _same_label(a: Any, b: Any) -> bool:
    if isinstance(a, bool | np.bool_):  # SQLite returns 0/1, psql 't'/'f'
        return bool(a) == (b in (True, 1, "t", "true", "True"))
    return str(a) == str(b)


# -- models built tree by tree -------------------------------------------------------------

def random_booster(rng: np.random.Generator, task: str, features: Sequence[Feature], *,
                   trees: int, depth: int, thresholds: Sequence[float],
                   base_score: float | None = None, num_class: int = 3,
                   parallel: int = 1) -> xgb.Booster:
    """A valid XGBoost model whose trees are drawn at random (no training).

    Splits use the given float32 thresholds, random default directions and random category
    sets, so every branch kind XGBoost has appears with the exact values that test the
    rounding rules. `parallel` > 1 makes random-forest rounds (num_parallel_tree).
    """
    groups = num_class if task == "multiclass" else 1
    template = _template(task, features, groups)
    model = template["learner"]["gradient_booster"]["model"]
    out_trees, info = [], []
    for k in range(trees):
        group = (k // parallel) % groups
        out_trees.append(_random_tree(rng, k, features, depth, thresholds))
        info.append(group)
    model["trees"], model["tree_info"] = out_trees, info
    per_iter = groups * parallel
    model["iteration_indptr"] = list(range(0, trees + 1, per_iter)) + (
        [trees] if trees % per_iter else [])
    model["gbtree_model_param"] = {"num_parallel_tree": str(parallel), "num_trees": str(trees)}
    param = template["learner"]["learner_model_param"]
    if base_score is not None:
        param["base_score"] = "[" + ",".join([f"{base_score!r}"] * groups) + "]"
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(template).encode()))
    return booster


_TEMPLATES: dict[tuple[str, int, int], str] = {}


def _template(task: str, features: Sequence[Feature], groups: int) -> dict[str, Any]:
    """A tiny trained model of the right objective and feature types, to copy fields from."""
    key = (task, len(features), sum(f.kind == "categorical" for f in features))
    if key not in _TEMPLATES:
        rng = np.random.default_rng(0)
        X = rng.integers(0, 2, size=(40, len(features))).astype(np.float32)
        y = rng.integers(0, groups if task == "multiclass" else 2, 40).astype(float)
        types = ["c" if f.kind == "categorical" else "q" for f in features]
        params: dict[str, Any] = {"objective": OBJECTIVE[task], "max_depth": 1, "nthread": 1}
        if task == "multiclass":
            params["num_class"] = groups
        d = xgb.DMatrix(X, y, feature_types=types, enable_categorical=True)
        _TEMPLATES[key] = bytes(xgb.train(params, d, 1).save_raw("json")).decode()
    return json.loads(_TEMPLATES[key])  # type: ignore[no-any-return]


def _random_tree(rng: np.random.Generator, tree_id: int, features: Sequence[Feature],
                 depth: int, thresholds: Sequence[float]) -> dict[str, Any]:
    left: list[int] = []
    right: list[int] = []
    parents: list[int] = []
    split_index: list[int] = []
    cond: list[float] = []
    default_left: list[int] = []
    split_type: list[int] = []
    cats: dict[int, list[int]] = {}

    def add(parent: int) -> int:
        left.append(-1)
        right.append(-1)
        parents.append(parent)
        split_index.append(0)
        cond.append(float(np.float32(rng.normal(0, 0.5))))  # a leaf value until split
        default_left.append(0)
        split_type.append(0)
        return len(left) - 1

    frontier = [(add(2147483647), 0)]
    while frontier:
        node, level = frontier.pop(0)
        if level >= depth or (level > 0 and rng.random() < 0.2):
            continue
        j = int(rng.integers(0, len(features)))
        split_index[node] = j
        default_left[node] = int(rng.random() < 0.5)
        feature = features[j]
        if feature.kind == "categorical":
            split_type[node] = 1
            n = max(1, len(feature.categories))
            chosen = sorted({int(c) for c in rng.integers(0, n + 1, int(rng.integers(1, n + 1)))})
            cats[node] = chosen  # may name a code past the mapping: it must never match
            cond[node] = float("nan")
        else:
            cond[node] = float(np.float32(rng.choice(thresholds)))
        left[node] = add(node)
        right[node] = add(node)
        frontier += [(left[node], level + 1), (right[node], level + 1)]
    nodes = sorted(cats)
    segments, flat = [], []
    for node in nodes:
        segments.append(len(flat))
        flat += cats[node]
    n = len(left)
    return {
        "base_weights": [0.0] * n, "categories": flat, "categories_nodes": nodes,
        "categories_segments": segments, "categories_sizes": [len(cats[v]) for v in nodes],
        "default_left": default_left, "id": tree_id, "left_children": left,
        "loss_changes": [0.0] * n, "parents": parents, "right_children": right,
        "split_conditions": [0.0 if c != c else c for c in cond], "split_indices": split_index,
        "split_type": split_type, "sum_hessian": [1.0] * n,
        "tree_param": {"num_deleted": "0", "num_feature": str(len(features)),
                       "num_nodes": str(n), "size_leaf_vector": "1"},
    }
