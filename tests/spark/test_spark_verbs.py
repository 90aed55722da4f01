"""`pyml show`, `export`, `explain` and `serve` on a Spark target: the DuckDB code paths fed
from the Spark registry, on the suite's models (trained once, conftest.spark_trained).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from pyml.engines.spark import duckdb_type
from pyml.serve.app import create_app
from pyml.serve.champions import SparkRegistry
from pyml.store import spark_registry

from ..conftest import Loans
from ..support import hand_matrix
from .conftest import SCHEMA, SPARK, SparkLoans

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

pytestmark = SPARK


def _features(project: SparkLoans) -> pd.DataFrame:
    return project.df(f"select * from {SCHEMA}.loan_features order by loan_id")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready records (NaN -> None)."""
    return [{k: (None if v != v else v) for k, v in r.items()}
            for r in frame.astype(object).to_dict("records")]


def test_show_reads_the_spark_registry(spark_trained: SparkLoans) -> None:
    out = spark_trained.ok("show", "default_risk", "--version", "1").output
    assert out.startswith("default_risk: Probability that a loan defaults.\n"
                          "task binary, target defaulted (BOOLEAN, classes False, True), "
                          "key loan_id\n")
    assert "v1 (champion), trained " in out
    assert f"  data: {SCHEMA}.loan_features (dbt " in out
    # Every holdout metric of ml.metrics has its line under "metrics:".
    metrics = out.split("\nmetrics:\n")[1].split("\n\n")[0].splitlines()
    names = {r[0] for r in spark_trained.rows(
        "select metric from ml.metrics where model_name = 'default_risk' and version = 1 "
        "and split = 'holdout'")}
    assert {line.split()[1] for line in metrics if line.startswith("holdout ")} == names
    assert "events (newest first):" in out and "v1 promoted (challenger -> champion)" in out
    assert "stale:" not in out  # the champion wrote ml.default_risk_predictions


def test_export_predicts_what_spark_scored(spark_trained: SparkLoans, tmp_path: Path) -> None:
    folder = tmp_path / "default_risk"
    out = spark_trained.ok("export", "default_risk", "--version", "1", "--output",
                           str(folder)).output
    assert out.startswith("default_risk v1 -> ")
    card = json.loads((folder / "model_card.json").read_text())
    assert card["version"] == 1 and card["training"]["feature_relation"] == \
        f"{SCHEMA}.loan_features"
    frame = _features(spark_trained).iloc[::10]  # 300 rows, NULL incomes among them
    rows = _records(frame)
    assert any(r["income"] is None for r in rows)
    data = tmp_path / "records.json"
    data.write_text(json.dumps(rows))
    # predict.py needs only numpy and xgboost; the child never opens the suite's metastore.
    done = subprocess.run([sys.executable, str(folder / "predict.py"), str(data)],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    predicted = {p["loan_id"]: p for p in json.loads(done.stdout)}
    scored = spark_trained.rows("select loan_id, prediction, probability from "
                                "ml.default_risk_predictions where model_version = 1")
    expected = {k: (p, q) for k, p, q in scored if k in predicted}
    assert len(expected) == len(rows)
    for key, (label, probability) in expected.items():
        assert predicted[key]["probability"] == probability, key  # the same float32, exactly
        assert predicted[key]["prediction"] == label, key


def test_explain_equals_xgboost_pred_contribs(spark_trained: SparkLoans, loans: Loans) -> None:
    out = spark_trained.ok("explain", "default_risk", "--version", "1", "--top-k",
                           "2").output
    assert "default_risk v1: top 2 contributions of 3,000 rows -> " \
           "ml.default_risk_explanations" in out
    table = spark_trained.df("select * from ml.default_risk_explanations "
                             "order by loan_id, rank")
    assert len(table) == 2 * 3000 and table["loan_id"].nunique() == 3000
    assert (table["rank"].to_numpy().reshape(-1, 2) == [1, 2]).all()
    stored = spark_registry.load_version(spark_trained.spark, "default_risk", 1)
    booster = stored.booster
    X = hand_matrix(stored.features, _features(spark_trained))
    dm = xgb.DMatrix(X, feature_names=booster.feature_names,
                     feature_types=booster.feature_types, enable_categorical=True)
    full = booster.predict(dm, pred_contribs=True).astype(np.float64)
    top = np.argsort(-np.abs(full[:, :-1]), axis=1, kind="stable")[:, :2]
    names = np.array([f.name for f in stored.features])
    assert (table["feature"].to_numpy().reshape(-1, 2) == names[top]).all()
    np.testing.assert_allclose(table["contribution"].to_numpy().reshape(-1, 2),
                               np.take_along_axis(full[:, :-1], top, axis=1),
                               rtol=0, atol=1e-6)
    per_row = table.groupby("loan_id").first()
    np.testing.assert_allclose(per_row["bias"], full[:, -1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(per_row["margin"], full.sum(axis=1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(per_row["other_contribution"],
                               full[:, :-1].sum(axis=1) - np.take_along_axis(
                                   full[:, :-1], top, axis=1).sum(axis=1), rtol=0, atol=1e-6)
    assert (table["model_version"] == 1).all()
    # The columns and their types are the DuckDB table's.
    loans.ok("train", "default_risk")
    loans.ok("explain", "default_risk", "--top-k", "2")
    duck = loans.sql("select column_name, data_type from duckdb_columns() where "
                     "schema_name = 'ml' and table_name = 'default_risk_explanations' "
                     "order by column_index")
    spark_columns = spark_trained.spark.table("ml.default_risk_explanations").schema.fields
    assert [(f.name, duckdb_type(f.dataType)) for f in spark_columns] == duck


def test_serve_answers_from_the_spark_registry(spark_trained: SparkLoans) -> None:
    """In-process: Derby's embedded metastore admits one process, so a `pyml serve` child
    could not open the suite's catalog; the app is the one `pyml serve` runs."""
    spark = spark_trained.spark
    frame = _features(spark_trained).iloc[::10]
    rows = _records(frame)
    with TestClient(create_app(SparkRegistry(spark), poll_seconds=3600)) as client:
        health = client.get("/health").json()
        assert set(health["models"]) == {"default_risk", "loss_amount"}
        info = client.get("/models/default_risk").json()
        version = info["version"]
        assert (info["status"], info["task"]) == ("champion", "binary")
        (auc,) = spark_trained.rows(
            "select value from ml.metrics where model_name = 'default_risk' and split = "
            f"'holdout' and metric = 'auc' and version = {version}")[0]
        assert info["metrics"]["holdout"]["auc"]["value"] == auc
        response = client.post("/models/default_risk/predict", json=rows)
        assert response.status_code == 200, response.text
        body = response.json()
    assert (body["model"], body["version"]) == ("default_risk", version)
    scored = {k: (p, q) for k, p, q in spark_trained.rows(
        "select loan_id, prediction, probability from ml.default_risk_predictions")}
    assert [p["loan_id"] for p in body["predictions"]] == [r["loan_id"] for r in rows]
    for p in body["predictions"]:
        assert (p["prediction"], p["probability"]) == scored[p["loan_id"]], p
