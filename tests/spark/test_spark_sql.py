"""`pyml sql --dialect spark` on a real SparkSession: the query equals `pyml score`.

Models are trained on a DuckDB table with NULLs, NaN, booleans, integers and awkward category
strings (quotes, backslashes, non-ASCII, unseen values) from tests/sql_support.py; the same
rows are written to Spark and the generated Spark SQL must give the labels of pyml's scoring
path and probabilities within 1e-6 (in practice: float32 margins bit for bit). The dbt flow on
a Spark target is tested in test_spark_flow.py.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from pyml.sqlgen.compile import scoring_sql

from ..sql_support import make_table, max_errors, reference, train
from .conftest import SPARK

pytestmark = SPARK

ROWS = 4000


@pytest.fixture(scope="module")
def features(spark: Any) -> tuple[duckdb.DuckDBPyConnection, list[Any]]:
    """The sql_support table in DuckDB and, row for row, as main.features in Spark."""
    con = duckdb.connect()
    feats = make_table(con, ROWS, seed=3)
    table = con.sql("select * from features").to_arrow_table()
    spark.sql("create database if not exists main")
    spark.createDataFrame(table).write.mode("overwrite").format("parquet").saveAsTable(
        "main.features")
    return con, feats


def run_spark(spark: Any, sql: str) -> pd.DataFrame:
    """Run generated SQL in Spark, ordered by key (columns as pandas reads them)."""
    return spark.sql(sql).toPandas().sort_values("id").reset_index(drop=True)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_spark_sql_matches_pyml_score(spark: Any, features: Any, task: str) -> None:
    con, feats = features
    stored = train(con, task, feats, rounds=12, depth=5, rows=ROWS)
    sql = scoring_sql(stored, dialect="spark")
    assert "materialized" not in sql.lower()
    assert " as float)" in sql.lower()  # float32 margins in Spark's own FLOAT
    ref = reference(con, stored)
    got = run_spark(spark, sql)
    errors = max_errors(ref, got, task)
    tolerance = 0.0 if task == "regression" else 1e-6  # regression: the float32 margin itself
    assert max(errors.values()) <= tolerance, errors
    assert (got["model_version"] == 1).all()


def test_spark_sql_is_the_same_under_ansi_mode(spark: Any, features: Any) -> None:
    """dbt-spark turns ANSI mode off on its session; Spark 4's default is on. Both agree."""
    con, feats = features
    stored = train(con, "binary", feats, rounds=6, depth=4, rows=ROWS)
    sql = scoring_sql(stored, dialect="spark")
    before = spark.conf.get("spark.sql.ansi.enabled")
    try:
        results = []
        for ansi in ("true", "false"):
            spark.conf.set("spark.sql.ansi.enabled", ansi)
            results.append(run_spark(spark, sql))
    finally:
        spark.conf.set("spark.sql.ansi.enabled", before)
    pd.testing.assert_frame_equal(results[0], results[1])
    errors = max_errors(reference(con, stored), results[0], "binary")
    assert errors["probability"] <= 1e-6


def test_every_float32_addition_rounds_like_xgboost(spark: Any) -> None:
    """Leaf values whose float32 sums round differently from their double sums: the Spark
    margin must be XGBoost's float32 margin exactly."""
    from pyml.data.encode import Feature

    from ..sql_support import random_booster, stored_model

    con = duckdb.connect()
    rng = np.random.default_rng(11)
    n = 2000
    con.execute("create table margins as select range as id, "
                "random() * 4 - 2 as x1, random() * 4 - 2 as x2 from range(?)", [n])
    feats = [Feature("x1", "numeric", "DOUBLE"), Feature("x2", "numeric", "DOUBLE")]
    thresholds = [float(np.float32(v)) for v in rng.normal(0, 1, 40)]
    booster = random_booster(rng, "regression", feats, trees=60, depth=4,
                             thresholds=thresholds, base_score=0.1)
    stored = stored_model(booster, "regression", feats, table="margins")
    spark.sql("create database if not exists main")
    spark.createDataFrame(con.sql("select * from margins").to_arrow_table()).write.mode(
        "overwrite").format("parquet").saveAsTable("main.margins")
    got = run_spark(spark, scoring_sql(stored, dialect="spark"))
    ref = reference(con, stored, table="margins")
    np.testing.assert_array_equal(got["prediction"].to_numpy(dtype=np.float64),
                                  ref["prediction"].to_numpy(dtype=np.float64))
