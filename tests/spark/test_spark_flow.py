"""The README's flow on a Spark target: `dbt build`, `pyml train`, `pyml score`, `pyml sql
--dialect spark`, promote and rollback, through the CLI as on DuckDB.

The tests of this module share one catalog (the suite's SparkSession) and run in order: the
module fixture trains and scores once, the last tests add versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pyml.store import spark_registry

from ..conftest import Loans
from .conftest import SCHEMA, SPARK, SparkLoans

pytestmark = SPARK

TASKS = {"default_risk": "binary", "loss_amount": "regression"}


@pytest.fixture(scope="module")
def trained(spark_trained: SparkLoans) -> SparkLoans:
    """The Spark project after one `pyml train` and `pyml score` of both specs (the suite's,
    shared with the other modules)."""
    return spark_trained


def test_train_stores_both_models_with_their_holdout_metrics(trained: SparkLoans) -> None:
    rows = trained.rows("select model_name, version, task, status, train_rows, test_rows "
                        "from ml.models order by model_name")
    assert [r[:4] for r in rows] == [("default_risk", 1, "binary", "champion"),
                                     ("loss_amount", 1, "regression", "champion")]
    for name, _, _, _, train_rows, test_rows in rows:
        assert 0 < test_rows < train_rows < 3000, name
    metrics = dict(trained.rows("select concat(model_name, '.', metric), value from ml.metrics "
                                "where split = 'holdout' and version = 1"))
    assert metrics["default_risk.auc"] > 0.7, metrics
    assert metrics["loss_amount.r2"] > 0.1, metrics
    # the string feature is a native categorical with the training categories
    stored = trained.rows("select features from ml.models where model_name = 'default_risk'")
    assert '"north"' in stored[0][0]


def test_score_writes_one_prediction_per_row(trained: SparkLoans) -> None:
    for name, task in TASKS.items():
        frame = trained.df(f"select * from ml.{name}_predictions")
        assert len(frame) == 3000 and frame["loan_id"].is_unique, name
        assert (frame["model_version"] == 1).all()
        if task == "binary":
            assert frame["probability"].between(0, 1).all()
            assert set(frame["prediction"]) == {True, False}
        else:
            assert frame["prediction"].notna().all()


def _compare(ref: pd.DataFrame, got: pd.DataFrame, task: str) -> None:
    """Same keys and labels; probabilities (or regression values) within 1e-6."""
    ref = ref.sort_values("loan_id").reset_index(drop=True)
    got = got.sort_values("loan_id").reset_index(drop=True)
    assert (ref["loan_id"].to_numpy() == got["loan_id"].to_numpy()).all()
    if task == "binary":
        assert (ref["prediction"].to_numpy() == got["prediction"].to_numpy()).all()
        np.testing.assert_allclose(got["probability"], ref["probability"], rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(got["prediction"], ref["prediction"], rtol=1e-6, atol=1e-6)


def test_pyml_sql_dialect_spark_equals_the_predictions_table(
        trained: SparkLoans, spark: Any) -> None:
    for name, task in TASKS.items():
        query = trained.ok("sql", name, "--dialect", "spark").output
        assert query.startswith(f"-- pyml model '{name}' version 1")
        assert f"from `{SCHEMA}`.`loan_features`" in query.lower()
        _compare(trained.df(f"select * from ml.{name}_predictions"),
                 spark.sql(query).toPandas(), task)
    # On a Spark target the dialect defaults to Spark's: the same query without the option.
    assert trained.ok("sql", "default_risk").output == trained.ok(
        "sql", "default_risk", "--dialect", "spark").output


def test_pyml_sql_output_is_a_dbt_model_built_on_spark(trained: SparkLoans) -> None:
    folder = trained.dir / "models" / "ml"
    folder.mkdir(exist_ok=True)
    path = folder / "default_risk_scored.sql"
    result = trained.ok("sql", "default_risk", "--dialect", "spark", "--output", str(path))
    assert "default_risk_scored" in result.output
    assert "{{ ref('loan_features') }}" in Path(path).read_text()
    trained.dbt("build", "--select", "default_risk_scored")
    _compare(trained.df("select * from ml.default_risk_predictions"),
             trained.df(f"select * from {SCHEMA}.default_risk_scored"), "binary")


def test_holdout_and_auc_match_pyml_on_duckdb(trained: SparkLoans, loans: Loans) -> None:
    """The same rows in DuckDB (the DuckDB suite's project) and Spark: the same split parts,
    and holdout AUCs within 0.005 of each other."""
    loans.ok("train", "default_risk")
    query = ("select m.train_rows, m.validation_rows, m.test_rows, x.value from ml.models m "
             "join ml.metrics x on x.model_name = m.model_name and x.version = m.version "
             "where m.model_name = 'default_risk' and m.version = 1 and x.split = 'holdout' "
             "and x.metric = 'auc'")
    duck = loans.sql(query)[0]
    sparked = trained.rows(query)[0]
    assert sparked[:3] == duck[:3]
    assert abs(sparked[3] - duck[3]) <= 0.005, (sparked[3], duck[3])


def test_promote_and_rollback(trained: SparkLoans) -> None:
    trained.ok("train", "loss_amount", "--force")  # unchanged inputs would train nothing
    statuses = dict(trained.rows("select version, status from ml.models "
                                 "where model_name = 'loss_amount'"))
    assert set(statuses) == {1, 2} and sorted(statuses.values()).count("champion") == 1
    # make v2 the champion by hand if the policy kept v1, then roll back to v1
    if statuses[2] != "champion":
        trained.ok("promote", "loss_amount", "--version", "2", "--reason", "test")
    back = trained.ok("rollback", "loss_amount", "--reason", "test")
    assert "v1" in back.output
    assert dict(trained.rows("select version, status from ml.models "
                             "where model_name = 'loss_amount'")) == {1: "champion",
                                                                      2: "retired"}
    events = [r[0] for r in trained.rows(
        "select event from ml.model_events where model_name = 'loss_amount' "
        "order by event_id")]
    assert events[-2:] == ["rolled_back", "restored"] or set(events[-2:]) == {
        "rolled_back", "restored"}
    # score uses the champion again
    trained.ok("score", "loss_amount")
    assert trained.rows("select distinct model_version from ml.loss_amount_predictions") == [
        (1,)]


def test_the_same_rows_in_another_order_train_the_same_booster(trained: SparkLoans) -> None:
    """Issue 16 on Spark: each worker's rows are hashed to it by key and sorted, so a table
    rewritten in another order (as dbt may) trains a byte-identical booster, the champion's
    twin, which is never promoted."""
    def booster(version: int) -> bytes:
        return bytes(spark_registry.load_version(trained.spark, "loss_amount", version)
                     .booster.save_raw("ubj"))

    def champions() -> list[int]:
        return [v for v, s in trained.rows("select version, status from ml.models where "
                                           "model_name = 'loss_amount'") if s == "champion"]

    assert champions() == [1]  # test_promote_and_rollback rolled back to v1
    trained.spark.sql(f"create table {SCHEMA}.loan_features_shuffled as select * from "
                      f"{SCHEMA}.loan_features order by rand(3)")
    trained.spark.sql(f"insert overwrite table {SCHEMA}.loan_features select * from "
                      f"{SCHEMA}.loan_features_shuffled")
    trained.spark.sql(f"drop table {SCHEMA}.loan_features_shuffled")
    # --force: reordered rows are unchanged data (test_unchanged_inputs_train_nothing)
    out = trained.ok("train", "loss_amount", "--force").output
    versions = sorted(v for v, in trained.rows("select version from ml.models where "
                                               "model_name = 'loss_amount'"))
    assert [booster(v) == booster(1) for v in versions[1:]] == [True] * (len(versions) - 1)
    assert f"loss_amount v{versions[-1]} (regression)" in out
    assert "is identical to champion v1 (the same booster, spec and features)" in out
    assert champions() == [1]


def test_unchanged_inputs_train_nothing(trained: SparkLoans) -> None:
    """Issue 16 on Spark: the version's fingerprints (ml.lineage: spec, feature SQL, an
    order-independent hash of the rows in Spark SQL, workers, releases) match the inputs, so
    `pyml train` trains nothing and says so; a reordered table is unchanged data, one changed
    cell is not."""
    from pyml.engines.spark import relation_columns
    from pyml.session import open_session
    from pyml.spark.lineage import fingerprints

    def versions() -> list[int]:
        return sorted(v for v, in trained.rows("select version from ml.models where "
                                               "model_name = 'loss_amount'"))

    before = versions()
    # Every version so far had these inputs (v2 retrained with --force, v3 from shuffled
    # rows): the champion is the one named, as on DuckDB.
    [champion] = [v for v, st in trained.rows("select version, status from ml.models where "
                                              "model_name = 'loss_amount'") if st == "champion"]
    assert champion != before[-1]
    out = trained.ok("train", "loss_amount").output
    assert (f"loss_amount: unchanged since v{champion} \u2014 same spec, SQL and data; "
            "--force retrains\n") in out
    assert versions() == before
    session = open_session(str(trained.dir), str(trained.dir))
    [spec] = session.specs(["loss_amount"])
    [stored] = trained.rows(f"select data_sha256 from ml.lineage where model_name = "
                            f"'loss_amount' and version = {before[-1]}")
    relation = f"{spec.schema}.{spec.relation}"
    stored_model = spark_registry.load_version(trained.spark, "loss_amount")
    columns = relation_columns(trained.spark, spec.schema, spec.relation)
    types = dict(columns)
    how = {"engine": "spark", "workers": 2}

    def data() -> str:
        return fingerprints(trained.spark, None, spec, stored_model.features, types, how).data

    assert data() == stored[0]
    trained.spark.sql(f"create table {relation}_copy as select * from {relation} "
                      "order by rand(5)")
    try:
        trained.spark.sql(f"insert overwrite table {relation} select * from {relation}_copy")
        assert data() == stored[0]  # another order: the same data
        first = trained.rows(f"select min(loan_id) from {relation}")[0][0]
        edited = ", ".join(f"case when loan_id = {first!r} then coalesce(income, 0) + 1 "
                           "else income end" if name == "income" else f"`{name}`"
                           for name, _ in columns)
        trained.spark.sql(f"insert overwrite table {relation} select {edited} "
                          f"from {relation}_copy")
        assert data() != stored[0]
    finally:
        trained.spark.sql(f"insert overwrite table {relation} select * from {relation}_copy")
        trained.spark.sql(f"drop table {relation}_copy")
