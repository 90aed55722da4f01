"""`pyml explain` / `pyml score --explain`: exact TreeSHAP contributions as a table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

import pyml
from pyml.modelling.model import LoadedModel

from .conftest import FEATURES, Loans
from .support import hand_matrix


def _model(loans: Loans, name: str) -> LoadedModel:
    return pyml.load_model(name, project_dir=loans.dir, profiles_dir=loans.dir)


def test_explain_top_k_adds_up_to_the_margin(scored: Loans) -> None:
    out = scored.ok("explain", "default_risk", "--top-k", "2", "--batch-size", "700").output
    assert "default_risk v1: top 2 contributions of 3,000 rows -> " \
           "ml.default_risk_explanations" in out
    table = scored.df("select * from ml.default_risk_explanations order by loan_id, rank")
    assert list(table.columns) == ["loan_id", "rank", "feature", "feature_value",
                                   "contribution", "other_contribution", "bias", "margin",
                                   "model_version", "explained_at"]
    assert len(table) == 2 * 3000 and table["loan_id"].nunique() == 3000
    assert (table["rank"].to_numpy().reshape(-1, 2) == [1, 2]).all()
    assert set(table["feature"]) <= set(FEATURES)
    per_row = table.groupby("loan_id").agg(shown=("contribution", "sum"),
                                           other=("other_contribution", "first"),
                                           bias=("bias", "first"), margin=("margin", "first"))
    # Within a row: the shown contributions + the rest + the bias are the margin ...
    np.testing.assert_allclose(per_row.shown + per_row.other + per_row.bias, per_row.margin,
                               atol=1e-9)
    # ... and the margin is what the booster outputs (computed here independently).
    model = _model(scored, "default_risk")
    frame = scored.df("select * from main.loan_features order by loan_id")
    X = hand_matrix(model.stored.features, frame)
    booster = model.stored.booster
    dm = xgb.DMatrix(X, feature_names=booster.feature_names,
                     feature_types=booster.feature_types, enable_categorical=True)
    margin = booster.predict(dm, output_margin=True)
    np.testing.assert_allclose(per_row.margin.to_numpy(), margin, atol=1e-5)
    full = booster.predict(dm, pred_contribs=True)
    np.testing.assert_allclose(full.sum(axis=1), margin, atol=1e-5)
    # The two kept are the two largest |contributions| of all four, in order.
    top = np.argsort(-np.abs(full[:, :-1]), axis=1, kind="stable")[:, :2]
    names = np.array(model.feature_names)
    assert (table["feature"].to_numpy().reshape(-1, 2) == names[top]).all()
    kept = table["contribution"].to_numpy().reshape(-1, 2)
    np.testing.assert_allclose(kept, np.take_along_axis(full[:, :-1], top, axis=1), atol=1e-6)
    # The probability scored is the sigmoid of the margin explained.
    prob = scored.df("select probability from ml.default_risk_predictions order by loan_id")
    np.testing.assert_allclose(1 / (1 + np.exp(-per_row.margin.to_numpy())),
                               prob["probability"].to_numpy(), atol=1e-6)
    # Feature values are the column's own text; NULL stays NULL.
    first = table[table.loan_id == 1].set_index("feature")["feature_value"].to_dict()
    row = frame.iloc[0]
    for feature, text in first.items():
        value = row[feature]
        assert (text is None) if pd.isna(value) else text == str(value)


def test_score_explain_regression_and_multiclass(scored: Loans) -> None:
    out = scored.ok("score", "loss_amount", "grade", "--explain", "1").output
    assert "loss_amount v1: top 1 contributions of 3,000 rows" in out
    reg = scored.df("select e.margin, p.prediction from ml.loss_amount_explanations e "
                    "join ml.loss_amount_predictions p using (loan_id)")
    assert len(reg) == 3000
    np.testing.assert_allclose(reg.margin, reg.prediction, rtol=1e-5, atol=1e-3)
    multi = scored.df("select e.class, p.prediction, e.rank from ml.grade_explanations e "
                      "join ml.grade_predictions p using (loan_id)")
    assert len(multi) == 3000 and (multi["rank"] == 1).all()
    # Multiclass rows explain the margin of the predicted class.
    assert (multi["class"] == multi["prediction"]).all()


def test_explain_replaces_the_table_atomically(scored: Loans) -> None:
    scored.ok("explain", "default_risk", "-k", "1")
    scored.sql("alter table main.loan_features rename column amount to amount_usd")
    result = scored.pyml("explain", "default_risk")
    assert result.exit_code == 1 and "feature 'amount' is missing" in result.output
    assert scored.sql("select count(*), max(rank) from ml.default_risk_explanations") == [
        (3000, 1)]
    tmp = scored.sql("select count(*) from information_schema.tables where table_name like "
                     "'__pyml_tmp%'")
    assert tmp == [(0,)]


@pytest.mark.parametrize("k", [10])
def test_top_k_larger_than_the_features_keeps_all(scored: Loans, k: int) -> None:
    out = scored.ok("explain", "default_risk", "--top-k", str(k)).output
    # The summary says what each row got (it said "x 10 features" for 4: a docs walk).
    assert f"rows x {len(FEATURES)} features" in out and f"x {k} features" not in out
    assert scored.sql("select count(*), max(rank), max(abs(other_contribution)) from "
                      "ml.default_risk_explanations") == [(3000 * len(FEATURES),
                                                           len(FEATURES), 0.0)]


def _champion(loans: Loans, name: str = "default_risk") -> int:
    [(version,)] = loans.sql("select version from ml.models where model_name = ? and "
                             "status = 'champion'", [name])
    return int(version)


def test_score_explain_writes_one_version_to_both_tables(scored: Loans) -> None:
    scored.ok("train", "default_risk", "--force")  # v2: two versions to choose from
    out = scored.ok("score", "default_risk", "--explain", "2").output
    champion = _champion(scored)
    assert f"default_risk v{champion}: top 2 contributions of 3,000 rows" in out
    assert scored.sql("select distinct model_version from ml.default_risk_predictions") == [
        (champion,)]
    assert scored.sql("select distinct model_version from ml.default_risk_explanations") == [
        (champion,)]


def test_a_promotion_while_scoring_does_not_split_score_and_explain(scored: Loans) -> None:
    """`score --explain` used to load the champion twice (score, then explain), so a promotion
    in between gave predictions of one version and explanations of another. Explain now uses
    the model object score loaded: a promotion made while scoring runs (here from the log
    callback, as scoring starts) changes neither table."""
    scored.ok("train", "default_risk", "--force")
    where = {"project_dir": scored.dir, "profiles_dir": scored.dir}
    champion = _champion(scored)
    other = 1 if champion == 2 else 2
    promoted = []

    def log(line: str) -> None:
        if "] scoring " in line and not promoted:
            promoted.append(pyml.promote("default_risk", version=other, **where))

    [result] = pyml.score(["default_risk"], explain=2, log=log, **where)
    assert promoted and _champion(scored) == other  # the promotion did land mid-run
    assert result.explanation is not None
    assert result.version == result.explanation.version == champion
    assert scored.sql("select distinct model_version from ml.default_risk_predictions") == [
        (champion,)]
    assert scored.sql("select distinct model_version from ml.default_risk_explanations") == [
        (champion,)]
