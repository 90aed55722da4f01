"""The README flow on a second, non-demo project: `pyml train`, `pyml score`, `pyml models`.

Everything runs through the real CLI on a real DuckDB file built by `dbt build`; assertions
are on the tables pyml writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pyml
from pyml.cli import cli
from pyml.engines.duckdb import quote
from pyml.errors import PymlError
from pyml.modelling.model import LoadedModel

from .conftest import FEATURES, SCHEMA_YML, SPECS, Loans, dbt
from .support import hand_matrix

N = 3000
IMPORTANCE_TYPES = {"gain", "total_gain", "cover", "total_cover", "weight",
                    "mean_abs_shap"}


def load(loans: Loans, name: str, version: int | None = None) -> LoadedModel:
    return pyml.load_model(name, version, project_dir=loans.dir, profiles_dir=loans.dir)


def by_hand(model: LoadedModel, df: pd.DataFrame) -> np.ndarray:
    """The booster's raw output on a float32 matrix built here, without pyml's encoder."""
    return np.asarray(model.stored.booster.inplace_predict(
        hand_matrix(model.stored.features, df)))


def predicted(task: str, frame: pd.DataFrame, classes: tuple[Any, ...]) -> np.ndarray:
    """The raw-output columns of a predictions frame, in booster order."""
    if task == "regression":
        return frame["prediction"].to_numpy()
    if task == "binary":
        return frame["probability"].to_numpy()
    return frame[[f"probability_{c}" for c in classes]].to_numpy()


# --- train --------------------------------------------------------------------------------

def test_train_stores_version_1_of_every_spec(loans: Loans) -> None:
    out = loans.ok("train").output
    assert "default_risk v1 (binary):" in out
    assert "holdout auc" in out and "(baseline 0.5000)" in out

    models = loans.sql("select model_name, version, task, target, train_rows + "
                       "validation_rows + test_rows, dropped_null_target_rows, num_trees, "
                       "dbt_invocation_id from ml.models order by model_name")
    assert [r[:4] for r in models] == [("default_risk", 1, "binary", "defaulted"),
                                       ("grade", 1, "multiclass", "grade"),
                                       ("loss_amount", 1, "regression", "loss")]
    assert all(r[4] == N and r[5] == 0 and r[6] >= 1 and r[7] for r in models)

    auc = loans.sql("select value, baseline from ml.metrics where model_name = 'default_risk' "
                    "and split = 'holdout' and metric = 'auc'")
    assert len(auc) == 1 and auc[0][0] > 0.6 and auc[0][1] == 0.5
    # The other two beat their trivial baselines too.
    beats = loans.sql("select model_name, value < baseline from ml.metrics where split = "
                      "'holdout' and metric in ('rmse', 'log_loss') order by 1")
    assert beats == [("default_risk", True), ("grade", True), ("loss_amount", True)]

    for name in SPECS:
        rows = loans.sql("select feature, importance_type from ml.feature_importance "
                         "where model_name = ? and version = 1", [name])
        assert {f for f, _ in rows} == set(FEATURES)
        assert len(rows) == len(FEATURES) * len(IMPORTANCE_TYPES)
        assert {t for _, t in rows} == IMPORTANCE_TYPES


def test_training_again_adds_version_2_and_keeps_version_1(scored: Loans) -> None:
    before = scored.sql("select version, md5(booster::varchar), features, spec "
                        "from ml.models where model_name = 'default_risk'")
    scored.describe("default_risk", "v2")  # unchanged inputs would train nothing
    scored.ok("train", "default_risk")
    after = scored.sql("select version, md5(booster::varchar), features, spec from ml.models "
                       "where model_name = 'default_risk' order by version")
    assert [r[0] for r in after] == [1, 2]
    assert after[0] == before[0]
    assert scored.sql("select distinct version from ml.metrics where model_name = "
                      "'default_risk' order by 1") == [(1,), (2,)]
    assert scored.sql("select model_name, max(version) from ml.models group by 1 order by 1"
                      ) == [("default_risk", 2), ("grade", 1), ("loss_amount", 1)]

    scored.ok("score", "default_risk")
    assert scored.sql("select distinct model_version from ml.default_risk_predictions"
                      ) == [(2,)]
    scored.ok("score", "default_risk", "--version", "1")
    assert scored.sql("select distinct model_version from ml.default_risk_predictions"
                      ) == [(1,)]


# --- score --------------------------------------------------------------------------------

def test_score_writes_one_row_per_relation_row(scored: Loans) -> None:
    for name in SPECS:
        table = f"ml.{name}_predictions"
        row = scored.sql(f"select count(*), count(distinct loan_id), min(model_version), "
                         f"max(model_version), count(distinct scored_at), count(scored_at) "
                         f"from {table}")[0]
        assert row == (N, N, 1, 1, 1, N), name
    assert scored.sql("select count(*) from main.loan_features") == [(N,)]
    assert scored.sql("select count(*) from ml.default_risk_predictions p anti join "
                      "main.loan_features f using (loan_id)") == [(0,)]


def test_binary_predictions(scored: Loans) -> None:
    cols = scored.sql("select column_name, data_type from information_schema.columns "
                      "where table_name = 'default_risk_predictions' order by ordinal_position")
    assert cols == [("loan_id", "INTEGER"), ("prediction", "BOOLEAN"),
                    ("probability", "DOUBLE"), ("model_version", "INTEGER"),
                    ("scored_at", "TIMESTAMP")]
    bad = scored.sql("select count(*) from ml.default_risk_predictions where probability "
                     "not between 0 and 1 or prediction <> (probability >= 0.5)")
    assert bad == [(0,)]


def test_multiclass_probabilities_sum_to_one(scored: Loans) -> None:
    cols = [c for (c,) in scored.sql(
        "select column_name from information_schema.columns "
        "where table_name = 'grade_predictions' order by ordinal_position")]
    assert cols == ["loan_id", "prediction", "probability", "probability_A", "probability_B",
                    "probability_C", "model_version", "scored_at"]
    bad = scored.sql(
        'select count(*) from ml.grade_predictions where '
        'abs("probability_A" + "probability_B" + "probability_C" - 1) > 1e-6 '
        'or probability <> greatest("probability_A", "probability_B", "probability_C") '
        "or prediction <> case probability when \"probability_A\" then 'A' "
        "when \"probability_B\" then 'B' else 'C' end")
    assert bad == [(0,)]


def test_regression_predictions(scored: Loans) -> None:
    cols = scored.sql("select column_name, data_type from information_schema.columns "
                      "where table_name = 'loss_amount_predictions' order by ordinal_position")
    assert cols == [("loan_id", "INTEGER"), ("prediction", "DOUBLE"),
                    ("model_version", "INTEGER"), ("scored_at", "TIMESTAMP")]


@pytest.mark.parametrize("name", SPECS)
def test_predictions_equal_the_booster_and_load_model(scored: Loans, name: str) -> None:
    model = load(scored, name)
    features = scored.df("select * from main.loan_features order by loan_id")
    table = scored.df(f"select * from ml.{name}_predictions order by loan_id")
    classes = model.stored.target.classes
    stored = predicted(model.stored.task, table, classes)

    np.testing.assert_allclose(stored, by_hand(model, features), rtol=0, atol=1e-6)

    frame = model.predict(features).sort_values("loan_id").reset_index(drop=True)
    assert frame["loan_id"].tolist() == table["loan_id"].tolist()
    np.testing.assert_allclose(predicted(model.stored.task, frame, classes), stored,
                               rtol=0, atol=1e-6)
    assert frame["prediction"].tolist() == table["prediction"].tolist()
    # The frame's own index comes back: a filtered frame's `assign` aligns on it (it got a
    # fresh 0..n-1 index, so 125 of 150 rows took another row's prediction or NaN: an audit).
    odd = features[features["loan_id"] % 2 == 1]
    column = "probability" if "probability" in frame else "prediction"
    got = odd.assign(p=model.predict(odd)[column])
    want = frame.set_index("loan_id")[column].loc[got["loan_id"]].to_numpy()
    assert got["p"].notna().all() and (got["p"].to_numpy() == want).all()
    # A DataFrame without a feature: the fix is in the DataFrame, not in a dbt model.
    with pytest.raises(PymlError, match=r"feature 'amount' is missing from the DataFrame; "
                                        r"add it back to the DataFrame or retrain"):
        model.predict(features.drop(columns=["amount"]))


def test_batches_do_not_change_predictions(scored: Loans) -> None:
    whole = scored.df("select * exclude (scored_at) from ml.grade_predictions order by loan_id")
    scored.ok("score", "grade", "--batch-size", "7")
    batched = scored.df("select * exclude (scored_at) from ml.grade_predictions "
                        "order by loan_id")
    pd.testing.assert_frame_equal(batched, whole)


def test_odd_column_names_train_and_score(loans: Loans) -> None:
    # '<' and '[' are refused by XGBoost in feature names; the other is hostile SQL.
    odd = ("debt<income[%]", 'x"; drop table ml.models; --')
    loans.replace_features(f"select *, amount / income as {quote(odd[0])}, "
                           f"term_months * 2 as {quote(odd[1])}")
    loans.ok("train", "default_risk")
    loans.ok("score", "default_risk")
    assert loans.sql("select count(*) from ml.models") == [(1,)]
    features = {f for (f,) in loans.sql("select distinct feature from ml.feature_importance")}
    assert features == {*FEATURES, *odd}
    assert loans.sql("select count(*) from ml.feature_importance where value > 0 and "
                     "importance_type = 'gain' and feature = ?", [odd[0]]) == [(1,)]

    model = load(loans, "default_risk")
    assert model.feature_names == [*FEATURES, *odd]
    rows = loans.df("select * from main.loan_features order by loan_id")
    table = loans.df("select * from ml.default_risk_predictions order by loan_id")
    np.testing.assert_allclose(table["probability"], by_hand(model, rows), rtol=0, atol=1e-6)


def test_unseen_category_scores_as_missing(scored: Loans) -> None:
    scored.sql("create table main.loans_to_score as select * from main.loan_features "
               "where loan_id <= 100")
    # Loan 1 again under new ids: once in a region never seen in training, once unknown.
    scored.sql("insert into main.loans_to_score select * replace (100001 as loan_id, "
               "'mars' as region) from main.loan_features where loan_id = 1")
    scored.sql("insert into main.loans_to_score select * replace (100002 as loan_id, "
               "null as region) from main.loan_features where loan_id = 1")
    scored.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n"
        "            score: {relation: main.loans_to_score}\n", 1))
    out = scored.ok("score", "default_risk").output
    assert "default_risk v1: 102 rows -> ml.default_risk_predictions" in out

    rows = dict(scored.sql("select loan_id, probability from ml.default_risk_predictions "
                           "where loan_id in (1, 100001, 100002)"))
    assert rows[100001] == rows[100002]

    new = scored.df("select * from main.loans_to_score where loan_id > 100000 order by 1")
    frame = load(scored, "default_risk").predict(new)
    assert frame["probability"].tolist() == [rows[100001], rows[100002]]


def test_output_files_match_the_table(scored: Loans, tmp_path: Path) -> None:
    parquet, csv = tmp_path / "risk.parquet", tmp_path / "grade.csv"
    out = scored.ok("score", "default_risk", "--output", str(parquet)).output
    assert f"-> ml.default_risk_predictions and {parquet}" in out
    scored.ok("score", "grade", "-o", str(csv))

    table = scored.df("select * from ml.default_risk_predictions order by loan_id")
    pd.testing.assert_frame_equal(
        pd.read_parquet(parquet).sort_values("loan_id").reset_index(drop=True), table,
        check_dtype=False)

    table = scored.df("select * from ml.grade_predictions order by loan_id")
    written = pd.read_csv(csv, parse_dates=["scored_at"]).sort_values("loan_id")
    pd.testing.assert_frame_equal(written.reset_index(drop=True), table, check_dtype=False,
                                  rtol=1e-15)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grade.csv", "loans", "risk.parquet"]


# --- selection ----------------------------------------------------------------------------

SMALL_SQL = "select * from {{ ref('loan_features') }} where loan_id <= 1500\n"
SMALL_YML = """\
version: 2
models:
  - name: small_loans
    config:
      meta:
        pyml:
          name: small_default_risk
          task: binary
          target: defaulted
          key: loan_id
          exclude: [loss, grade]
"""


def trained(loans: Loans) -> list[tuple[str, int]]:
    return loans.sql("select model_name, count(*) from ml.models group by 1 order by 1")


def test_names_and_select_pick_specs(loans: Loans) -> None:
    (loans.dir / "models" / "small_loans.sql").write_text(SMALL_SQL)
    (loans.dir / "models" / "small.yml").write_text(SMALL_YML)
    dbt(loans.dir, "build", "--select", "small_loans")

    loans.ok("train", "grade")
    assert trained(loans) == [("grade", 1)]
    loans.ok("train", "--select", "small_loans")
    assert trained(loans) == [("grade", 1), ("small_default_risk", 1)]
    loans.ok("train", "loss_amount", "-s", "loan_features", "--force")
    assert trained(loans) == [("default_risk", 1), ("grade", 2), ("loss_amount", 1),
                              ("small_default_risk", 1)]

    out = loans.ok("score", "small_default_risk", "default_risk").output
    assert [line.split(":")[0] for line in out.splitlines() if " rows -> " in line] == [
        "small_default_risk v1", "default_risk v1"]
    assert loans.sql("select table_name from information_schema.tables where table_schema = "
                     "'ml' and table_name like '%_predictions' order by 1") == [
        ("default_risk_predictions",), ("small_default_risk_predictions",)]
    assert loans.sql("select count(*) from ml.small_default_risk_predictions") == [(1500,)]


# --- listing and help ---------------------------------------------------------------------

def test_models_lists_versions(scored: Loans) -> None:
    scored.ok("train", "grade", "--force")
    lines = scored.ok("models").output.splitlines()
    assert lines[0].split() == ["model", "version", "status", "created_at", "task",
                                "relation", "train_rows", "holdout_rows", "trees", "metric",
                                "value", "baseline"]
    rows = [line.split()[:2] for line in lines[2:]]
    assert rows == [["default_risk", "1"], ["grade", "2"], ["grade", "1"], ["loss_amount", "1"]]
    assert "auc" in lines[2] and "0.5000" in lines[2]
    only = scored.ok("models", "grade").output.splitlines()
    assert [line.split()[:2] for line in only[2:]] == [["grade", "2"], ["grade", "1"]]


def test_models_before_training(loans: Loans) -> None:
    assert loans.ok("models").output == "No trained models yet: run `pyml train`.\n"


def test_predictions_shows_the_top_rows(scored: Loans) -> None:
    lines = scored.ok("predictions", "default_risk", "--limit", "3").output.splitlines()
    assert lines[0].split() == ["loan_id", "prediction", "probability", "model_version",
                                "scored_at"]
    top = [float(line.split()[2]) for line in lines[2:]]
    best = scored.sql("select max(probability) from ml.default_risk_predictions")[0][0]
    assert len(top) == 3 and top == sorted(top, reverse=True)
    assert top[0] == pytest.approx(best, abs=1e-4)


def test_version(loans: Loans) -> None:
    result = loans.ok("--version")
    assert result.output == f"pyml, version {pyml.__version__}\n"


@pytest.mark.parametrize("command", [None, *sorted(cli.commands)])
def test_every_command_has_help_with_an_example(loans: Loans, command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = loans.ok(*args)
    assert "Example:" in result.output
    assert result.output.startswith("Usage: ")
