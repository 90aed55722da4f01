"""`pyml sql`: scoring in pure SQL equals `pyml score`, to XGBoost's float32 arithmetic.

Every comparison is against pyml's own Python scoring path (LoadedModel), on real DuckDB and
SQLite databases; PostgreSQL is in test_sql_postgres.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import sqlglot
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyml.data.encode import Encoder, Feature
from pyml.errors import PymlError, UsageError
from pyml.sqlgen.compile import DIALECTS, scoring_sql
from pyml.sqlgen.outputs import EXPF_FMA, output_ctes
from pyml.sqlgen.trees import Forest, margins32, model_json, read_forest, split_bound
from pyml.store.registry import StoredModel
from tests.conftest import Loans, dbt
from tests.sql_support import (
    CATEGORIES,
    CLASSES,
    OBJECTIVE,
    copy_to_sqlite,
    fetch_inputs,
    make_table,
    max_errors,
    random_booster,
    reference,
    run_duckdb,
    run_sqlite,
    stored_model,
    train,
)
from tests.support import error_line

TASKS = ("binary", "multiclass", "regression")
TOL = 0.0  # probabilities and predictions are XGBoost's float32 values, bit for bit


@pytest.fixture(scope="module")
def big() -> tuple[duckdb.DuckDBPyConnection, list[Feature]]:
    """100,000 rows with NULLs, NaN, integers, booleans and unseen categories."""
    con = duckdb.connect()
    return con, make_table(con, 100_000)


@pytest.fixture(scope="module")
def big_sqlite(big: tuple[duckdb.DuckDBPyConnection, list[Feature]]) -> sqlite3.Connection:
    """The same rows in SQLite."""
    return copy_to_sqlite(big[0])


# -- exactness of the split rule --------------------------------------------------------

def _boundary_doubles(t: np.float32) -> list[float]:
    """Doubles around a float32 threshold: its rounding boundary, t and their neighbours."""
    bound, _ = split_bound(float(t))
    out = []
    with np.errstate(over="ignore"):
        for x in (bound, float(t), float(np.nextafter(t, np.float32(-np.inf))),
                  float(np.nextafter(t, np.float32(np.inf)))):
            out += [x, np.nextafter(x, -np.inf), np.nextafter(x, np.inf),
                    np.nextafter(np.nextafter(x, -np.inf), -np.inf)]
    return [float(v) for v in out if np.isfinite(v)]


SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0 ** -126, -(2.0 ** -126), 1e-45, -1e-45, 2.0 ** 24,
           16777217.0, 3.0e38, -3.0e38, float(np.finfo(np.float32).max), 0.1, 1e-3, 123.456]


def test_split_bound_agrees_with_float32_rounding_at_every_boundary() -> None:
    rng = np.random.default_rng(0)
    randoms = (rng.normal(size=3000) * 10.0 ** rng.integers(-30, 30, 3000)).astype(np.float32)
    for t in [np.float32(v) for v in SPECIAL] + list(randoms):
        bound, inclusive = split_bound(float(t))
        for v in _boundary_doubles(t):
            with np.errstate(over="ignore"):
                xgb_left = bool(np.float32(v) < t)
            sql_left = v <= bound if inclusive else v < bound
            assert xgb_left == sql_left, (float(t), v, bound, inclusive)


def _stump_booster(thresholds: list[float], default_left: list[bool]) -> xgb.Booster:
    """One stump per feature (regression): feature j < t_j adds 2^-(j+1), else subtracts it,
    so the prediction spells out every split decision."""
    n = len(thresholds)
    template = json.loads(bytes(xgb.train(
        {"objective": "reg:squarederror", "max_depth": 1, "base_score": 0.0},
        xgb.DMatrix(np.zeros((4, n), np.float32), np.arange(4.0)), 1).save_raw("json")))
    trees = []
    for j, (t, left) in enumerate(zip(thresholds, default_left, strict=True)):
        w = 2.0 ** -(j + 1)
        trees.append({
            "base_weights": [0.0, w, -w], "categories": [], "categories_nodes": [],
            "categories_segments": [], "categories_sizes": [], "default_left": [int(left), 0, 0],
            "id": j, "left_children": [1, -1, -1], "loss_changes": [0.0] * 3,
            "parents": [2147483647, 0, 0], "right_children": [2, -1, -1],
            "split_conditions": [t, w, -w], "split_indices": [j, 0, 0], "split_type": [0] * 3,
            "sum_hessian": [1.0] * 3,
            "tree_param": {"num_deleted": "0", "num_feature": str(n), "num_nodes": "3",
                           "size_leaf_vector": "1"}})
    model = template["learner"]["gradient_booster"]["model"]
    model["trees"], model["tree_info"] = trees, [0] * n
    model["iteration_indptr"] = list(range(n + 1))
    model["gbtree_model_param"] = {"num_parallel_tree": "1", "num_trees": str(n)}
    template["learner"]["learner_model_param"]["base_score"] = "[0E0]"
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(template).encode()))
    return booster


def test_threshold_boundaries_in_double_decimal_integer_and_boolean_columns() -> None:
    """Every value next to a rounding boundary takes XGBoost's branch, in DuckDB and SQLite."""
    rng = np.random.default_rng(1)
    thresholds = [float(np.float32(v)) for v in
                  [0.1, -2.5, 1e-45, 3.0e38, 123.456, 16777217.0, *rng.normal(size=6) * 1e3]]
    n_double = len(thresholds)
    columns: dict[str, pa.Array] = {}
    rows = max(len(_boundary_doubles(np.float32(t))) for t in thresholds) + 2
    for j, t in enumerate(thresholds):
        values: list[float | None] = [*_boundary_doubles(np.float32(t)), None, float("nan")]
        values += [values[0]] * (rows - len(values))
        columns[f"d{j}"] = pa.array(values, type=pa.float64())
    # DECIMAL, INTEGER and BOOLEAN columns reach the model through the same DOUBLE cast.
    thresholds += [0.105, 2.5, 0.5]
    decimals = ["0.104999", "0.105000", "0.105001", "0.10499999", None]
    con = duckdb.connect()
    con.register("__cols", pa.table({"id": np.arange(rows), **columns}))
    con.execute("create table features as select * from __cols")
    con.execute("alter table features add column dec decimal(18, 8)")
    con.execute("alter table features add column n integer")
    con.execute("alter table features add column b boolean")
    con.execute("update features set dec = cast(list_extract(?, (id % 5 + 1)::int) as "
                "decimal(18, 8)), n = (id % 6)::int - 1, b = case id % 3 when 0 then true "
                "when 1 then false end", [decimals])
    features = [Feature(f"d{j}", "numeric", "DOUBLE") for j in range(n_double)]
    features += [Feature("dec", "numeric", "DECIMAL(18,8)"), Feature("n", "numeric", "INTEGER"),
                 Feature("b", "numeric", "BOOLEAN")]
    for default_left in (True, False):
        booster = _stump_booster(thresholds, [default_left] * len(thresholds))
        stored = stored_model(booster, "regression", features)
        ref = reference(con, stored)
        got = run_duckdb(con, scoring_sql(stored))
        assert (got["prediction"].to_numpy() == ref["prediction"].to_numpy()).all()
        lite = run_sqlite(copy_to_sqlite(con), scoring_sql(stored, dialect="sqlite"))
        assert (lite["prediction"].to_numpy() == ref["prediction"].to_numpy()).all()


# -- real models on 100,000 rows -------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_real_models_match_pyml_score_on_100k_rows(
        task: str, big: tuple[duckdb.DuckDBPyConnection, list[Feature]]) -> None:
    con, features = big
    stored = train(con, task, features, rounds=40, depth=6)
    ref = reference(con, stored)
    errors = max_errors(ref, run_duckdb(con, scoring_sql(stored)), task)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("task", TASKS)
def test_sqlite_matches_on_100k_rows(
        task: str, big: tuple[duckdb.DuckDBPyConnection, list[Feature]],
        big_sqlite: sqlite3.Connection) -> None:
    """SQLite has no float32: the sums are rounded with Veltkamp's split, still exactly."""
    con, features = big
    stored = train(con, task, features, rounds=4 if task == "multiclass" else 10, depth=6)
    ref = reference(con, stored)
    got = run_sqlite(big_sqlite, scoring_sql(stored, dialect="sqlite"))
    errors = max_errors(ref, got, task)
    assert max(errors.values()) <= TOL, errors
    if task == "regression":
        assert errors["prediction"] == 0.0  # the float32 sums are reproduced bit for bit


def test_binary_label_is_decided_like_xgboost_next_to_the_threshold() -> None:
    """Margins one float32 apart around the label cut: XGBoost's float32 sigmoid rounds
    several of them to the same probability, and the label must still match."""
    con = duckdb.connect()
    features = make_table(con, 2000)
    booster = random_booster(np.random.default_rng(3), "binary", features, trees=1, depth=1,
                             thresholds=[0.0], base_score=0.5)
    raw = json.loads(bytes(booster.save_raw("json")))
    tree = raw["learner"]["gradient_booster"]["model"]["trees"][0]
    for threshold in (0.5, 0.2, 0.9):
        cut = np.float32(np.log(threshold / (1 - threshold)))
        for step in range(-3, 4):
            m = cut
            for _ in range(abs(step)):
                m = np.nextafter(m, np.float32(np.inf if step > 0 else -np.inf))
            tree["split_conditions"][1:] = [float(m), float(np.nextafter(m, np.float32(0)))]
            tree["base_weights"][1:] = tree["split_conditions"][1:]
            b = xgb.Booster()
            b.load_model(bytearray(json.dumps(raw).encode()))
            stored = stored_model(b, "binary", features, threshold=threshold)
            max_errors(reference(con, stored), run_duckdb(con, scoring_sql(stored)), "binary")


def test_multiclass_ties_go_to_the_first_class() -> None:
    con = duckdb.connect()
    features = make_table(con, 500)
    booster = random_booster(np.random.default_rng(4), "multiclass", features, trees=6,
                             depth=2, thresholds=[0.0, 1.0])
    raw = json.loads(bytes(booster.save_raw("json")))
    for tree in raw["learner"]["gradient_booster"]["model"]["trees"]:
        tree["split_conditions"] = [0.25 if c == -1 else v for c, v in
                                    zip(tree["left_children"], tree["split_conditions"],
                                        strict=True)]
    b = xgb.Booster()
    b.load_model(bytearray(json.dumps(raw).encode()))
    stored = stored_model(b, "multiclass", features)
    got = run_duckdb(con, scoring_sql(stored))
    max_errors(reference(con, stored), got, "multiclass")
    assert set(got["prediction"]) == {"low"}


# -- random forests (property-based) ---------------------------------------------------------

_floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False,
                      min_value=-1e6, max_value=1e6)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(task=st.sampled_from(TASKS), trees=st.integers(1, 12), depth=st.integers(1, 6),
       parallel=st.sampled_from([1, 1, 2]), thresholds=st.lists(_floats32, min_size=1,
                                                                  max_size=6),
       base=st.one_of(st.none(), st.floats(0.05, 0.95)),
       cats=st.lists(st.sampled_from(CATEGORIES), min_size=0, max_size=5, unique=True),
       threshold=st.sampled_from([0.5, 0.3, 0.75]), seed=st.integers(0, 2 ** 16),
       sqlite=st.booleans())
def test_random_forests_match_xgboost(task: str, trees: int, depth: int, parallel: int,
                                      thresholds: list[float], base: float | None,
                                      cats: list[str], threshold: float, seed: int,
                                      sqlite: bool) -> None:
    """Random trees on values drawn at the thresholds' rounding boundaries, with NaN, NULL,
    unknown categories and categories past the mapping."""
    rng = np.random.default_rng(seed)
    n = 300
    near = [v for t in thresholds for v in _boundary_doubles(np.float32(t))]
    x1 = rng.choice(near, n)
    x1[rng.random(n) < 0.1] = np.nan
    region = np.array([*cats, "unseen", None], dtype=object)[rng.integers(0, len(cats) + 2, n)]
    con = duckdb.connect()
    con.register("__t", pa.table({
        "id": np.arange(n), "x1": pa.array(x1, mask=rng.random(n) < 0.1),
        "x2": rng.choice(near, n), "n_items": rng.integers(-3, 3, n).astype(np.int32),
        "region": pa.array(region, type=pa.string()),
        "flag": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1)}))
    con.execute("create table features as select * from __t")
    features = [Feature("x1", "numeric", "DOUBLE"), Feature("x2", "numeric", "DOUBLE"),
                Feature("n_items", "numeric", "INTEGER"),
                Feature("region", "categorical", "VARCHAR", tuple(sorted(cats))),
                Feature("flag", "numeric", "BOOLEAN")]
    booster = random_booster(rng, task, features, trees=trees * parallel, depth=depth,
                             thresholds=[*thresholds, 0.5, 1.0], parallel=parallel,
                             base_score=base if task == "binary" else None)
    stored = stored_model(booster, task, features, threshold=threshold)
    ref = reference(con, stored)
    errors = max_errors(ref, run_duckdb(con, scoring_sql(stored)), task)
    assert max(errors.values()) <= TOL, errors
    if sqlite:
        lite = run_sqlite(copy_to_sqlite(con), scoring_sql(stored, dialect="sqlite"))
        errors = max_errors(ref, lite, task)
        assert max(errors.values()) <= TOL, errors


# -- large models ----------------------------------------------------------------------------

@pytest.mark.slow  # the fast suite's parity tests cover the same generator on small forests
def test_a_thousand_depth_8_trees_compile_and_run() -> None:
    """~100,000 tree nodes: generated, prepared and run by DuckDB, equal to XGBoost.

    How long that takes is measured by `python -m bench.bench_sql --rows 3000 --trees 1000
    --depth 8`, not asserted here.
    """
    con = duckdb.connect()
    features = make_table(con, 3000)
    booster = random_booster(np.random.default_rng(5), "binary", features, trees=1000, depth=8,
                             thresholds=list(np.linspace(-3, 60, 200)))
    stored = stored_model(booster, "binary", features)
    got = run_duckdb(con, scoring_sql(stored))
    assert len(got) == 3000
    assert max_errors(reference(con, stored), got, "binary")["probability"] <= TOL


# -- dialects, errors, safety ------------------------------------------------------------------

def test_every_dialect_parses_back_and_keeps_its_own_syntax() -> None:
    con = duckdb.connect()
    features = make_table(con, 200)
    stored = train(con, "multiclass", features, rounds=3, depth=3)
    for dialect in DIALECTS:
        sql = scoring_sql(stored, dialect=dialect)
        sqlglot.parse_one(sql, read=dialect)
        lowered = sql.lower()
        assert "isnan(" not in lowered or dialect in ("duckdb", "spark")  # theirs natively
        if dialect in ("bigquery", "snowflake", "spark"):
            assert " materialized " not in lowered
        if dialect == "bigquery":
            assert "'back\\\\slash'" in sql  # BigQuery escapes the backslash
    assert "as real" in scoring_sql(stored, dialect="postgres").lower()  # float32 natively
    spark = scoring_sql(stored, dialect="spark")  # run on a real session in tests/spark/
    assert "as float)" in spark.lower() and "`id`" in spark and "'back\\\\slash'" in spark


def test_an_unsupported_objective_is_named() -> None:
    con = duckdb.connect()
    features = make_table(con, 200)
    X = np.random.default_rng(0).integers(0, 3, (50, len(features))).astype(np.float32)
    booster = xgb.train({"objective": "reg:pseudohubererror"},
                        xgb.DMatrix(X, X[:, 0], feature_types=["q", "q", "q", "c", "q"],
                                    enable_categorical=True), 2)
    with pytest.raises(PymlError) as e:
        scoring_sql(stored_model(booster, "regression", features))
    assert str(e.value) == (
        "model 'm' v1: objective 'reg:pseudohubererror' is not supported by `pyml sql` "
        "(supported: binary:logistic, multi:softprob, reg:squarederror); score it with "
        "`pyml score` instead")
    with pytest.raises(PymlError, match="unknown dialect 'oracle'; choose one of duckdb, "):
        scoring_sql(stored_model(booster, "regression", features), dialect="oracle")


def test_odd_column_names_and_values_are_quoted() -> None:
    con = duckdb.connect()
    features = make_table(con, 3000)
    hostile = "x'); drop table features; --"
    con.execute(f"update features set region = '{hostile.replace(chr(39), chr(39) * 2)}' "
                "where id % 7 = 0")
    con.execute('alter table features rename column x1 to "odd ""name"" x"')
    con.execute('alter table features rename column id to "key col"')
    features[0] = Feature('odd "name" x', "numeric", "DOUBLE")
    features[3] = Feature("region", "categorical", "VARCHAR",
                          tuple(sorted([*features[3].categories, hostile])))
    booster = random_booster(np.random.default_rng(6), "binary", features, trees=20, depth=4,
                             thresholds=[0.0, 1.0, 20.0])
    stored = stored_model(booster, "binary", features, key=("key col",))
    ref = reference(con, stored)
    for dialect in ("duckdb", "sqlite"):
        sql = scoring_sql(stored, dialect=dialect)
        got = (run_duckdb(con, sql, ["key col"]) if dialect == "duckdb"
               else run_sqlite(copy_to_sqlite(con), sql, ["key col"]))
        assert max_errors(ref, got, "binary")["probability"] <= TOL
    assert con.execute("select count(*) from features").fetchone() == (3000,)


def test_a_category_that_would_end_the_jinja_raw_block_is_refused() -> None:
    con = duckdb.connect()
    features = make_table(con, 200)
    features[3] = Feature("region", "categorical", "VARCHAR", ("a", "{% endraw %}"))
    booster = random_booster(np.random.default_rng(7), "binary", features, trees=30, depth=3,
                             thresholds=[0.0])
    stored = stored_model(booster, "binary", features)
    assert "{% endraw %}" in scoring_sql(stored)  # fine as plain SQL
    with pytest.raises(PymlError, match="cannot be written into a dbt model"):
        scoring_sql(stored, dbt_model=True)


# -- the CLI and the dbt model -----------------------------------------------------------------

SPECS = {"default_risk": "binary", "grade": "multiclass", "loss_amount": "regression"}


def _compare_with_predictions(project: Loans, relation: str, name: str) -> None:
    task = SPECS[name]
    ref = project.df(f"select * exclude (model_version, scored_at) from ml.{name}_predictions "
                     "order by loan_id")
    got = project.df(f"select * from {relation} order by loan_id")
    errors = max_errors(ref, got, task)
    assert max(errors.values()) <= TOL, (name, errors)
    versions = project.df(f"select distinct model_version from ml.{name}_predictions")
    assert set(got["model_version"]) == set(versions["model_version"])


def test_pyml_sql_prints_a_query_equal_to_pyml_score(scored: Loans) -> None:
    for name in SPECS:
        sql = scored.ok("sql", name).output
        assert sql.startswith(f"-- pyml model '{name}' version 1")
        scored.sql(f"create table main.{name}_sql as {sql}")
        _compare_with_predictions(scored, f"main.{name}_sql", name)
    postgres = scored.ok("sql", "grade", "--dialect", "postgres", "--version", "1").output
    assert "DOUBLE PRECISION" in postgres


@pytest.mark.parametrize("relation", ["main.to_score", "to_score"])
def test_pyml_sql_reads_the_score_relation_as_pyml_score_does(scored: Loans,
                                                               relation: str) -> None:
    """With score.relation, pyml score reads that relation; the query (and the dbt model)
    read it too (they read the feature relation: 3,000 rows where score wrote 1,500; a
    README walk). A dbt model's name too: the query read the feature table (an audit)."""
    from tests.conftest import SCHEMA_YML
    from tests.support import EXCLUDE

    (scored.dir / "models" / "to_score.sql").write_text(
        "select * from {{ ref('loan_features') }} where loan_id % 2 = 0\n")
    scored.sql("create table main.to_score as select * from main.loan_features "
               "where loan_id % 2 = 0")  # what `dbt build` of that model writes
    scored.write_schema(SCHEMA_YML.replace(EXCLUDE, EXCLUDE + "            score: "
                                           f"{{relation: {relation}}}\n", 1))
    scored.ok("score", "default_risk")
    sql = scored.ok("sql", "default_risk").output
    scored.sql(f"create table main.default_risk_sql as {sql}")
    assert scored.sql("select count(*) from main.default_risk_sql") == [(1500,)]
    _compare_with_predictions(scored, "main.default_risk_sql", "default_risk")
    path = scored.dir / "models" / "risk_scored_sql.sql"
    scored.ok("sql", "default_risk", "--output", str(path))
    text = path.read_text()
    read = "{{ ref('to_score') }}" if relation == "to_score" else '"main"."to_score"'
    assert read in text and "ref('loan_features')" not in text
    assert "for every row of main.to_score" in path.with_suffix(".yml").read_text()


def test_pyml_sql_output_is_a_dbt_model_built_by_dbt(scored: Loans) -> None:
    folder = scored.dir / "models" / "ml"
    folder.mkdir()
    for name in SPECS:
        path = folder / f"{name}_scored_sql.sql"
        out = scored.ok("sql", name, "--output", str(path)).output
        assert str(path) in out
        text = path.read_text()
        assert "{{ ref('loan_features') }}" in text
        assert text.startswith("{{ config(materialized='table') }}")
    # A downstream model can ref the scored model.
    (folder / "risky_loans.sql").write_text(
        "select loan_id from {{ ref('default_risk_scored_sql') }} where probability > 0.5\n")
    dbt(scored.dir, "build", "--select", "models/ml")
    for name in SPECS:
        _compare_with_predictions(scored, f"main.{name}_scored_sql", name)
    # Each model has its YAML beside it: what it was compiled from, every column described
    # (the predictions table's COMMENTs), as dbt docs read it.
    manifest = json.loads((scored.dir / "target" / "manifest.json").read_text())
    for name in SPECS:
        node = manifest["nodes"][f"model.loans.{name}_scored_sql"]
        assert node["patch_path"].endswith(f"models/ml/{name}_scored_sql.yml")
        assert f"pyml model '{name}' version 1" in node["description"]
        built = [c for (c,) in scored.sql(
            "select column_name from duckdb_columns() where schema_name = 'main' and "
            f"table_name = '{name}_scored_sql' order by column_index")]
        assert list(node["columns"]) == built
        assert all(c["description"] for c in node["columns"].values())
    expected = scored.sql("select count(*) from ml.default_risk_predictions "
                          "where probability > 0.5")
    assert scored.sql("select count(*) from main.risky_loans") == expected


def test_pyml_sql_errors_are_one_clear_line(scored: Loans, tmp_path: Path) -> None:
    result = scored.pyml("sql", "default_risk", "--version", "99")
    assert result.exit_code == 1
    assert "model 'default_risk' has no version 99" in result.output
    result = scored.pyml("sql", "default_risk", "--output", str(tmp_path / "nope" / "m.sql"))
    assert result.exit_code == 1
    assert f"folder {tmp_path / 'nope'} does not exist" in result.output
    result = scored.pyml("sql", "default_risk", "--output", str(tmp_path / "m.txt"))
    assert "a dbt model file must end in .sql" in result.output
    result = scored.pyml("sql", "default_risk", "--dialect", "oracle")
    assert "unknown dialect 'oracle'" in result.output
    (tmp_path / "m.yml").write_text("version: 2\n")  # the user's own: kept, nothing written
    result = scored.pyml("sql", "default_risk", "--output", str(tmp_path / "m.sql"))
    assert error_line(result.output, result.exit_code) == (
        f"{tmp_path / 'm.yml'} exists and was not written by `pyml sql`: move it, or write "
        "the model under another name")
    assert not (tmp_path / "m.sql").exists()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("task", TASKS)
def test_float32_margins_are_xgboosts_bit_for_bit(
        task: str, big: tuple[duckdb.DuckDBPyConnection, list[Feature]]) -> None:
    """The parsed trees and base margin (logit of the base score, with C's logf) summed in
    float32 in tree order give XGBoost's own margins, bit for bit."""
    con, features = big
    stored = train(con, task, features, rounds=20, depth=5, rows=5000)
    forest = read_forest(model_json(stored.booster, "test"), len(features), "test")
    X = Encoder(features).matrix(fetch_inputs(con, "features", features), "test")[:20_000]
    d = xgb.DMatrix(X, feature_names=[f.name for f in features],
                    feature_types=["q", "q", "q", "c", "q"], enable_categorical=True)
    leaves = stored.booster.predict(d, pred_leaf=True).astype(np.int64)
    theirs = stored.booster.predict(d, output_margin=True).reshape(len(X), -1)
    assert (margins32(forest, leaves) == theirs).all()


# -- probabilities: XGBoost's float32 sigmoid and softmax, bit for bit -------------------------

def _no_tree_model(task: str) -> tuple[StoredModel, Forest]:
    """A model with no trees: XGBoost's prediction is then its transform of base_margin."""
    con = duckdb.connect()
    features = make_table(con, 50)
    X = np.zeros((3, len(features)), dtype=np.float32)
    params = {"objective": OBJECTIVE[task], "nthread": 1}
    if task == "multiclass":
        params["num_class"] = 3
    d = xgb.DMatrix(X, np.arange(3.0) % (3 if task == "multiclass" else 2),
                    feature_types=["q", "q", "q", "c", "q"], enable_categorical=True)
    stored = stored_model(xgb.train(params, d, 0), task, features)
    return stored, read_forest(model_json(stored.booster, "test"), len(features), "test")


def _transform_in_sql(task: str, margins: np.ndarray, sqlite: bool) -> np.ndarray:
    """pyml sql's float32 probabilities for float32 margins (rows x groups)."""
    stored, forest = _no_tree_model(task)
    groups = margins.shape[1]
    ctes = output_ctes(stored, forest, ['"id"'], not sqlite, None, lambda c: f"'{c}'",
                       "materialized " if sqlite else "", lists=not sqlite)
    cols = [f"__pyml_m{g}" for g in range(groups)]
    probs = ["probability"] if task == "binary" else [f'"probability_{c}"' for c in
                                                      CLASSES[task]]
    body = ", ".join(f"{name} as {mat}({sql})" for name, sql, mat in ctes)
    frame = pa.table({"id": np.arange(len(margins)),
                      **{c: margins[:, g] for g, c in enumerate(cols)}})
    if not sqlite:
        con = duckdb.connect()
        con.register("t", frame)
        scores = ", ".join(f"cast({c} as float) as {c}" for c in cols)
        query = (f"with __pyml_scores as (select id, {scores} from t), {body} "
                 f"select {', '.join(probs)} from final order by id")
        return np.array(con.execute(query).fetchall(), dtype=np.float64)
    lite = sqlite3.connect(":memory:")
    lite.execute(f"create table __pyml_scores (id integer, {', '.join(c + ' real' for c in cols)})")
    lite.executemany(f"insert into __pyml_scores values ({', '.join('?' * (groups + 1))})",
                     [(i, *map(float, row)) for i, row in enumerate(margins)])
    query = sqlglot.transpile(f"with {body} select {', '.join(probs)} from final order by id",
                              read="duckdb", write="sqlite")[0]
    return np.array(lite.execute(query).fetchall(), dtype=np.float64)


def _xgboost_transform(task: str, margins: np.ndarray) -> np.ndarray:
    stored, _ = _no_tree_model(task)
    d = xgb.DMatrix(np.zeros((len(margins), len(stored.features)), dtype=np.float32),
                    base_margin=margins if task == "multiclass" else margins[:, 0],
                    feature_types=["q", "q", "q", "c", "q"], enable_categorical=True)
    out = stored.booster.predict(d)
    assert out.dtype == np.float32
    return out.reshape(len(margins), -1)


def _same_bits(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Compared as float32 bit patterns (the SQL's DOUBLE must hold a float32 exactly)."""
    assert (ours.astype(np.float32).astype(np.float64) == ours).all()
    a, b = ours.astype(np.float32).view(np.uint32), theirs.view(np.uint32)
    assert (a == b).all(), f"{(a != b).sum()} of {a.size} differ"


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_sigmoid_and_softmax_are_xgboosts_float32_on_a_wide_sample(task: str) -> None:
    """A database's exp rounded to float32 differs from C's expf on ~1 input in 3,000; the
    SQL's own expf (glibc's algorithm) must not, over every range margins take."""
    rng = np.random.default_rng(11)
    groups = 1 if task == "binary" else 3
    n = 150_000
    parts = [rng.uniform(-30, 30, (n, groups)), rng.normal(0, 3, (n, groups)),
             rng.uniform(-120, 120, (n // 10, groups))]
    fma = [a for a, _ in EXPF_FMA]  # expf's arguments where glibc's FMA path differs
    edges = np.array([0.0, -0.0, 88.7, -88.7, 88.8, -88.8, 103.9, -103.98, -104.0, 150.0,
                      -1e30, 1e30, 3.4e38, -3.4e38, 1e-40, 17.0, -17.0, 20.0, -20.0,
                      *fma, *(-a for a in fma)])
    parts.append(np.repeat(edges[:, None], groups, axis=1) if groups == 1 else
                 np.concatenate([rng.choice(edges, (2000, groups)),
                                 [[0.0, a, 0.0] for a in fma if a <= 0]]))
    margins = np.concatenate(parts).astype(np.float32)
    _same_bits(_transform_in_sql(task, margins, sqlite=False),
               _xgboost_transform(task, margins))
    _same_bits(_transform_in_sql(task, margins[-20_000:], sqlite=True),
               _xgboost_transform(task, margins[-20_000:]))


_margins32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(task=st.sampled_from(["binary", "multiclass"]), sqlite=st.booleans(),
       rows=st.lists(st.lists(st.one_of(_margins32, st.floats(-40, 40, width=32),
                                        st.floats(-110, 110, width=32)),
                              min_size=3, max_size=3), min_size=1, max_size=40))
def test_probabilities_are_xgboosts_float32_bit_for_bit(task: str, sqlite: bool,
                                                        rows: list[list[float]]) -> None:
    margins = np.array(rows, dtype=np.float32)
    if task == "binary":
        margins = margins[:, :1]
    elif not np.isfinite(margins - margins.max(axis=1, keepdims=True)).all():
        return  # m - max(m) overflows float32: XGBoost itself returns NaN there
    _same_bits(_transform_in_sql(task, margins, sqlite), _xgboost_transform(task, margins))


def _two_thousand_trees() -> tuple[duckdb.DuckDBPyConnection, StoredModel]:
    con = duckdb.connect()
    features = make_table(con, 400)
    booster = random_booster(np.random.default_rng(8), "binary", features, trees=2000, depth=3,
                             thresholds=list(np.linspace(-3, 60, 50)))
    return con, stored_model(booster, "binary", features)


def test_two_thousand_trees_compile_and_run() -> None:
    """No expression-depth or binder limit in DuckDB: 2,000 trees, bit for bit."""
    con, stored = _two_thousand_trees()
    got = run_duckdb(con, scoring_sql(stored))
    assert max_errors(reference(con, stored), got, "binary")["probability"] == 0


@pytest.mark.slow  # SQLite takes minutes to prepare 2,000 chained CTEs
def test_two_thousand_trees_run_in_sqlite() -> None:
    """More trees than SQLite's 2,000 columns a result: the sums read them in tables of 500."""
    con, stored = _two_thousand_trees()
    lite = run_sqlite(copy_to_sqlite(con), scoring_sql(stored, dialect="sqlite"))
    assert max_errors(reference(con, stored), lite, "binary")["probability"] == 0


def test_a_column_name_longer_than_postgres_keeps_is_refused() -> None:
    """PostgreSQL cuts names at 63 bytes without a word: two classes sharing a long prefix
    came back as two columns of one name, neither matching ml.<model>_predictions (an
    audit). The query is refused, naming the column; DuckDB keeps any length."""
    con = duckdb.connect()
    features = make_table(con, 50)
    booster = random_booster(np.random.default_rng(4), "multiclass", features, trees=3,
                             depth=2, thresholds=[0.0, 1.0])
    long = "a label that is longer than postgres allows in a name: "
    stored = stored_model(booster, "multiclass", features,
                          classes=[f"{long}one", f"{long}two", "c"])
    with pytest.raises(UsageError) as info:
        scoring_sql(stored, dialect="postgres")
    assert str(info.value) == (
        f"model 'm' v1: column 'probability_{long}one' is 70 bytes, longer than the 63 "
        "postgres keeps (it would cut the name, and other columns could end up with the same "
        "one); shorten the label or column in the dbt model, or score it with pyml score")
    assert "probability_" + long + "two" in scoring_sql(stored, dialect="duckdb")
    short = stored_model(booster, "multiclass", features, classes=["é" * 25, "b", "c"])
    scoring_sql(short, dialect="postgres")  # 62 bytes: kept
    wide = stored_model(booster, "multiclass", features, classes=["é" * 26, "b", "c"])
    with pytest.raises(UsageError, match="is 64 bytes"):  # 38 characters, 64 bytes
        scoring_sql(wide, dialect="postgres")


def test_the_duckdb_query_refuses_a_feature_retyped_as_pyml_score_does(scored: Loans) -> None:
    """A number retyped to BOOLEAN after training: pyml score refuses it, while the query cast
    true/false to 1/0 and scored on (662 of 10,375 probabilities differed: an audit). The
    query now stops with one line naming the feature; DuckDB folds the check away, so a
    column of the trained kind costs nothing."""
    sql = scored.ok("sql", "default_risk").output
    assert scored.sql(f"select count(*) from ({sql})") == [(3000,)]  # intact: it runs
    scored.replace_features("select * replace (amount > 10000 as amount)")
    with pytest.raises(duckdb.InvalidInputException) as info:
        scored.sql(f"select count(*) from ({sql})")
    assert ("model 'default_risk' v1: feature 'amount' was DOUBLE (numeric) at training but "
            "is BOOLEAN here, and the model reads any integer, DECIMAL, FLOAT or DOUBLE type "
            "(not BOOLEAN); cast it back in the dbt model or retrain") in str(info.value)
    result = scored.pyml("score", "default_risk")
    assert "feature 'amount' was DOUBLE (numeric) at training but is BOOLEAN" in result.output
