"""Issue 15: the final fit (`final_fit: refit | none | cv_average`).

- refit (the default): the stored booster, which score/sql/export/serve load, is refitted on
  every labelled row; the stored metrics stay the evaluated fit's holdout figures, and
  promotion scores holdout rows with the evaluated booster, never with the refit one (which
  trained on them and would look better there);
- none: the evaluated fit scores, as before;
- cv_average: the fold boosters of split.method kfold averaged into one XGBoost model whose
  margin is the mean of the folds' margins; `pyml sql` reproduces `pyml score` bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from pyml.dbt.spec import parse_specs
from pyml.errors import SpecError
from pyml.modelling.ensemble import average_boosters
from pyml.modelling.model import LoadedModel
from pyml.store.final_fit import evaluated_booster
from pyml.store.registry import StoredModel, load_version

from .conftest import SCHEMA_YML, Loans
from .split_reference import part
from .sql_support import max_errors
from .support import error_line


def _stored(project: Loans, name: str, version: int = 1) -> tuple[StoredModel,
                                                                    xgb.Booster | None]:
    con = duckdb.connect(str(project.db), read_only=True)
    try:
        return load_version(con, name, version), evaluated_booster(con, name, version)
    finally:
        con.close()


def _holdout(project: Loans, seed: int = 42, test_fraction: float = 0.2) -> pd.DataFrame:
    """The labelled loans in the seeded random split's holdout (tests/split_reference.py)."""
    frame = project.df("select * from main.loan_features where defaulted is not null "
                       "order by loan_id")
    keep = [part([k], seed, test_fraction, 0.2) == 2 for k in frame["loan_id"]]
    return frame[keep].reset_index(drop=True)


def _auc(stored: StoredModel, booster: xgb.Booster, rows: pd.DataFrame) -> float:
    out = LoadedModel(dataclasses.replace(stored, booster=booster)).predict(rows)
    return float(skm.roc_auc_score(rows["defaulted"], out["probability"]))


def _stored_auc(project: Loans, version: int = 1) -> float:
    return float(project.sql("select value from ml.metrics where model_name = 'default_risk' "
                             "and version = ? and split = 'holdout' and metric = 'auc'",
                             [version])[0][0])


def test_the_refit_booster_scores_and_the_metrics_are_the_evaluated_fits(scored: Loans
                                                                         ) -> None:
    (method, fit_rows, rounds, scores_with, metrics_from), = scored.sql(
        "select method, fit_rows, rounds, scores_with, metrics_from from ml.final_fit "
        "where model_name = 'default_risk' and version = 1")
    (train, valid, test, trees, best), = scored.sql(
        "select train_rows, validation_rows, test_rows, num_trees, best_iteration "
        "from ml.models where model_name = 'default_risk'")
    assert method == "refit" and fit_rows == train + valid + test
    assert rounds == trees == round((best + 1) * (train + valid + test) / train)
    assert scores_with.startswith(f"refit on {fit_rows:,} rows")
    assert metrics_from.startswith("holdout of the evaluated fit")
    stored, evaluated = _stored(scored, "default_risk")
    assert evaluated is not None and evaluated.num_boosted_rounds() == best + 1
    assert stored.booster.num_boosted_rounds() == rounds
    # The score table is the refit booster's predictions.
    frame = scored.df("select * from main.loan_features order by loan_id")
    mine = LoadedModel(stored).predict(frame)["probability"].to_numpy()
    table = scored.df("select probability from ml.default_risk_predictions order by loan_id")
    assert np.array_equal(mine, table["probability"].to_numpy())
    # The stored AUC is the evaluated booster's on the holdout; the refit booster trained on
    # those rows and scores them better: measuring it there would flatter it.
    holdout = _holdout(scored)
    assert len(holdout) == test
    assert _auc(stored, evaluated, holdout) == pytest.approx(_stored_auc(scored), abs=1e-9)
    assert _auc(stored, stored.booster, holdout) > _stored_auc(scored) + 0.01
    assert "scores with: refit on" in scored.ok("show", "default_risk").output


def test_promotion_compares_the_evaluated_boosters(scored: Loans) -> None:
    scored.describe("default_risk", "Chance of default.")  # another model, the same fits
    scored.ok("train", "default_risk")
    (metrics,), = scored.sql("select metrics from ml.model_events where version = 2 and "
                             "model_name = 'default_risk' and to_status = 'champion'")
    compared = json.loads(metrics)
    # Both versions were scored on the holdout with their evaluated boosters: exactly their
    # stored holdout AUCs (a refit booster there would be ~0.1 higher).
    assert compared["champion"]["value"] == pytest.approx(_stored_auc(scored, 1), abs=1e-12)
    assert compared["challenger"]["value"] == pytest.approx(_stored_auc(scored, 2), abs=1e-12)


def test_a_champion_without_its_evaluated_booster_is_not_compared(scored: Loans) -> None:
    # Damage: a refit version whose evaluated booster is gone. Its refit booster trained on
    # the holdout rows, so comparing with it would flatter the champion: no comparison.
    scored.sql("update ml.final_fit set evaluated_booster = null")
    scored.describe("default_risk", "Chance of default.")
    out = scored.ok("train", "default_risk").output
    assert ("champion v1 cannot be scored on v2's holdout rows (its evaluated booster in "
            "ml.final_fit is missing or unreadable, and its refit booster trained on these "
            "rows)") in out
    assert scored.sql("select version, status from ml.models where model_name = "
                      "'default_risk' order by 1") == [(1, "champion"), (2, "challenger")]
    # An older release's ml.final_fit (a trailing column missing) still shows.
    scored.sql("alter table ml.final_fit drop column evaluated_booster")
    assert "scores with: refit on" in scored.ok("show", "default_risk").output


def test_final_fit_none_stores_the_evaluated_fit(loans: Loans) -> None:
    loans.write_schema(SCHEMA_YML.replace("            exclude: [loss, grade]\n",
                                          "            exclude: [loss, grade]\n"
                                          "            final_fit: none\n", 1))
    loans.ok("train", "default_risk")
    (method, has_evaluated, rounds), = loans.sql(
        "select method, evaluated_booster is not null, rounds from ml.final_fit")
    (trees, best), = loans.sql("select num_trees, best_iteration from ml.models "
                               "where model_name = 'default_risk'")
    assert (method, has_evaluated, rounds, trees) == ("none", False, best + 1, best + 1)
    stored, evaluated = _stored(loans, "default_risk")
    assert evaluated is None
    assert _auc(stored, stored.booster, _holdout(loans)) == pytest.approx(_stored_auc(loans),
                                                                          abs=1e-9)


def test_training_from_disk_says_it_did_not_refit(loans: Loans) -> None:
    out = loans.ok("train", "default_risk", "--external-memory").output
    assert "final fit: refit not done: external memory; the evaluated fit scores" in out
    (method, scores_with, has_evaluated), = loans.sql(
        "select method, scores_with, evaluated_booster is not null from ml.final_fit")
    assert method == "none" and not has_evaluated
    assert scores_with.endswith("refit not done: external memory)")


@pytest.mark.parametrize(("extra", "message"), [
    ({"final_fit": "average"}, "final_fit must be one of refit, none, cv_average, got "
                               "'average'"),
    ({"final_fit": None}, "final_fit must be one of refit, none, cv_average, got None"),
    ({"final_fit": "cv_average"}, "final_fit cv_average averages k fold boosters: set "
                                  "split: {method: kfold} or tune.cv: k, or use final_fit "
                                  "refit"),
])
def test_bad_final_fit_values_are_one_spec_error(extra: dict[str, Any], message: str) -> None:
    raw = {"name": "m", "task": "binary", "target": "y", "key": "id", **extra}
    with pytest.raises(SpecError) as e:
        parse_specs(raw, feature_model="model.p.f", schema="main", relation="f",
                    source_file="models/s.yml")
    assert str(e.value) == f"models/s.yml: model 'm' on model.p.f: {message}"


def test_a_bad_final_fit_fails_train_in_one_line(loans: Loans) -> None:
    loans.write_schema(SCHEMA_YML.replace("            exclude: [loss, grade]\n",
                                          "            exclude: [loss, grade]\n"
                                          "            final_fit: best\n", 1))
    result = loans.pyml("train", "default_risk")
    assert error_line(result.output, result.exit_code).endswith(
        "final_fit must be one of refit, none, cv_average, got 'best'")
    assert loans.sql("select count(*) from information_schema.tables where "
                     "table_schema = 'ml'") == [(0,)]


CV_AVERAGE = ("            split: {method: kfold, folds: 3}\n"
              "            final_fit: cv_average\n")


def test_cv_average_is_one_model_that_pyml_sql_reproduces(loans: Loans) -> None:
    yml = SCHEMA_YML.replace("            exclude: [loss, grade]\n",
                             "            exclude: [loss, grade]\n" + CV_AVERAGE, 1)
    # grade: k from tune.cv, on the default random split (no study runs: on_train is off).
    loans.write_schema(yml.replace("            exclude: [defaulted, loss]\n",
                                   "            exclude: [defaulted, loss]\n"
                                   "            tune: {cv: 3}\n"
                                   "            final_fit: cv_average\n", 1))
    loans.ok("train", "default_risk", "grade")
    loans.ok("score", "default_risk", "grade")
    rows = {r[0]: r[1:] for r in loans.sql(
        "select model_name, method, evaluated_booster is null, scores_with from ml.final_fit")}
    for name in ("default_risk", "grade"):
        method, no_second, scores_with = rows[name]
        assert method == "cv_average" and no_second
        assert scores_with.startswith("the average of 3 fold boosters")
    stored, _ = _stored(loans, "default_risk")
    # The stored booster is the evaluated one: its holdout AUC is the stored metric.
    assert _auc(stored, stored.booster, _holdout(loans)) == pytest.approx(_stored_auc(loans),
                                                                          abs=1e-9)
    assert loans.sql("select count(*) from ml.metrics where split = 'cv' and metric = 'auc' "
                     "and model_name = 'default_risk'") == [(1,)]
    for name, task in (("default_risk", "binary"), ("grade", "multiclass")):
        sql = loans.ok("sql", name).output
        loans.sql(f"create table main.{name}_sql as {sql}")
        ref = loans.df(f"select * exclude (model_version, scored_at) from ml.{name}_predictions "
                       "order by loan_id")
        got = loans.df(f"select * from main.{name}_sql order by loan_id")
        assert max(max_errors(ref, got, task).values()) == 0.0, name


OBJECTIVES = {"binary": ("binary:logistic", {}), "multiclass": ("multi:softprob",
                                                                 {"num_class": 3}),
              "regression": ("reg:squarederror", {})}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task=st.sampled_from(sorted(OBJECTIVES)), k=st.integers(2, 5),
       depth=st.integers(1, 4), seed=st.integers(0, 2**16), categorical=st.booleans())
def test_the_average_margin_is_the_mean_of_the_fold_margins(task: str, k: int, depth: int,
                                                            seed: int,
                                                            categorical: bool) -> None:
    """A silently wrong ensemble (a lost intercept, a class's trees on another class, a
    leaf not scaled) would differ from the mean of the fold margins."""
    rng = np.random.default_rng(seed)
    n = 300
    X = rng.normal(size=(n, 3)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, 2] = rng.integers(0, 4, n)
    y = {"binary": (np.nan_to_num(X[:, 0]) + rng.normal(0, 1, n) > 0.3).astype(float),
         "multiclass": rng.integers(0, 3, n).astype(float),
         "regression": 5 + 3 * np.nan_to_num(X[:, 1]) + rng.normal(0, 1, n)}[task]
    objective, extra = OBJECTIVES[task]
    types = ["q", "q", "c" if categorical else "q"]
    folds = rng.integers(0, k, n)
    boosters = []
    for f in range(k):
        rows = folds != f
        data = xgb.QuantileDMatrix(X[rows], y[rows], feature_types=types,
                                   enable_categorical=True)
        boosters.append(xgb.train({"objective": objective, "max_depth": depth, **extra},
                                  data, int(rng.integers(1, 8))))
    averaged = average_boosters(boosters, "here")
    want = np.mean([b.inplace_predict(X, predict_type="margin") for b in boosters], axis=0)
    got = averaged.inplace_predict(X, predict_type="margin")
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * max(1.0, np.abs(want).max()))
    assert averaged.num_boosted_rounds() == sum(b.num_boosted_rounds() for b in boosters)
