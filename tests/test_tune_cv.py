"""`tune.cv: k`: each trial is k-fold CV on the non-holdout rows, in the kfold evaluation's
folds, pruned on the running mean; the holdout alone decides promotion (issue 15).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from pyml.data import split as split_module
from pyml.dbt.spec import parse_specs
from pyml.errors import SpecError
from pyml.modelling import tune as tune_module
from pyml.modelling.evaluate import fold_ids

from .conftest import LOAN_SPECS, SCHEMA_YML, Loans

SOURCE = "models/schema.yml"
MODEL = "model.lending.loan_features"
WHERE = f"{SOURCE}: model 'default_risk' on {MODEL}"
RISK = LOAN_SPECS["default_risk"]


def parse(**extra: Any) -> Any:
    raw = {"name": "default_risk", "task": "binary", "target": "defaulted", "key": "loan_id",
           **extra}
    return parse_specs(raw, feature_model=MODEL, schema="main", relation="loan_features",
                       source_file=SOURCE)[0]


def with_risk(scored: Loans, extra: str) -> None:
    """default_risk's spec with `extra` (YAML lines at the spec's indentation) added."""
    scored.write_schema(SCHEMA_YML.replace(RISK, RISK + extra, 1))


@pytest.mark.parametrize("cv", [1, 21, 0, True, "3", 2.5, [3]])
def test_bad_cv_values_are_refused(cv: Any) -> None:
    with pytest.raises(SpecError) as e:
        parse(tune={"cv": cv})
    assert str(e.value) == (f"{WHERE}: tune.cv must be a number of folds from 2 to 20 (or null "
                            f"to tune on the validation part), got {cv!r}")


def test_cv_parses() -> None:
    assert parse(tune={"cv": 5}).tune.cv == 5
    assert parse(tune={"cv": None}).tune.cv is None
    assert parse(tune={"n_trials": 3}).tune.cv is None
    assert parse(tune={"cv": 20}).to_dict()["tune"]["cv"] == 20


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 500), k=st.integers(2, 20), seed=st.integers(0, 2**31))
def test_fold_ids_partition_the_rows_evenly(n: int, k: int, seed: int) -> None:
    """Every row in exactly one fold, fold sizes within one of each other, same seed same
    folds: a wrong fold assignment would leak held-out rows into a fold's training rows."""
    fold = fold_ids(n, k, seed)
    assert fold.shape == (n,) and ((fold >= 0) & (fold < k)).all()
    sizes = np.bincount(fold, minlength=k)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= 1
    assert (fold_ids(n, k, seed) == fold).all()


class _Spy:
    """Records (train rows, train label sum, evaluated rows) of every xgb.train call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, tuple[int, ...]]] = []
        self.real = xgb.train

    def __call__(self, params: Any, dtrain: Any, *args: Any, **kwargs: Any) -> Any:
        evals = kwargs.get("evals") or []
        self.calls.append((dtrain.num_row(), float(dtrain.get_label().sum()),
                           tuple(d.num_row() for d, _ in evals)))
        return self.real(params, dtrain, *args, **kwargs)


def test_cv_trials_run_the_kfold_folds_and_record_fold_stats(
        scored: Loans, monkeypatch: pytest.MonkeyPatch) -> None:
    with_risk(scored, "            split: {method: kfold, folds: 3}\n"
                      "            tune: {cv: 3, n_trials: 2}\n")
    spy = _Spy()
    monkeypatch.setattr(xgb, "train", spy)
    out = scored.ok("tune", "default_risk").output
    (n_train, n_valid, n_test), = scored.sql(
        "select train_rows, validation_rows, test_rows from ml.models where model_name = "
        "'default_risk' and version = 2")
    rows = n_train + n_valid
    assert f"3-fold cv mean logloss on the {rows:,} non-holdout rows" in out
    folds = [c for c in spy.calls if c[2] and c[0] != n_train]
    # The kfold evaluation's 3 fits (the final refit on all labelled rows aside).
    evaluation = {c[:2] for c in spy.calls if not c[2] and c[0] != rows + n_test}
    # Every fold trains on the other folds' rows and stops early on its own: no trial sees
    # the holdout.
    assert all(c[0] + c[2][0] == rows for c in folds)
    assert all(n_test not in (c[0], *c[2]) for c in folds)
    sizes = sorted(np.bincount(fold_ids(rows, 3, 42)))
    assert sorted(c[2][0] for c in folds[:3]) == sizes
    # The same rows as the kfold evaluation's folds (row count and label sum of each).
    assert len(evaluation) == 3 and {c[:2] for c in folds} == evaluation
    trials = scored.sql("select trial_number, state, value, folds, value_std, best_round "
                        "from ml.trials order by trial_number")
    assert [(t[0], t[1], t[3]) for t in trials] == [(1, "complete", 3), (2, "complete", 3)]
    assert all(t[2] > 0 and t[4] > 0 and t[5] is not None for t in trials)
    assert len(folds) == 6
    (note,), = scored.sql("select note from ml.models where model_name = 'default_risk' "
                          "and version = 2")
    assert "best 3-fold cv logloss " in note and "holdout auc tuned " in note
    assert "[default_risk] trial 1/2: cv logloss " in out and " over 3/3 folds, complete" in out


class _PruneAfterTwoFolds(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number > 0 and (trial.last_step or 0) >= 1


def test_pruned_cv_trials_keep_their_folds(scored: Loans,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune_module, "cv_pruner", _PruneAfterTwoFolds)
    with_risk(scored, "            tune: {cv: 4, n_trials: 3}\n")
    out = scored.ok("tune", "default_risk").output
    rows = scored.sql("select trial_number, state, folds, value, value_std, best_round "
                      "from ml.trials order by trial_number")
    assert [r[:3] for r in rows] == [(1, "complete", 4), (2, "pruned", 2), (3, "pruned", 2)]
    # A pruned trial's value is its running mean when it stopped; its folds' spread too.
    assert all(r[3] is not None and r[4] is not None for r in rows)
    assert [r[5] is None for r in rows] == [False, True, True]
    assert " over 2/4 folds, pruned" in out
    (note,), = scored.sql("select note from ml.models where model_name = 'default_risk' "
                          "and version = 2")
    assert "3 trials (1 complete, 2 pruned, 0 failed)" in note


def test_the_cv_pruner_prunes_on_the_running_mean(scored: Loans) -> None:
    """The default cv pruner (worst quarter of the running means after the same fold) stops
    trials between folds, once 5 trials have completed."""
    with_risk(scored, "            num_boost_round: 40\n"
                      "            tune:\n"
                      "              cv: 3\n"
                      "              n_trials: 10\n"
                      "              space: {eta: {choices: [0.3, 0.0001, 0.0002, 0.0003, "
                      "0.0005]}}\n")
    scored.ok("tune", "default_risk")
    rows = scored.sql("select state, folds, json_extract(params, '$.eta')::double "
                      "from ml.trials order by trial_number")
    pruned = [r for r in rows if r[0] == "pruned"]
    assert pruned and all(r[1] < 3 for r in pruned), rows
    assert all(r[1] == 3 for r in rows if r[0] == "complete")
    assert [r[0] for r in rows[:5]] == ["complete"] * 5


def _flip_holdout_labels(scored: Loans) -> None:
    """Invert default_risk's labels on its holdout rows only: the better a model learns the
    train rows' pattern, the worse it does on the holdout."""
    part, params = split_module.part_sql(parse(), "duckdb")
    for value in params:
        part = part.replace("?", str(int(value)), 1)
    scored.sql("create table main.old_features as select * from main.loan_features")
    scored.sql("drop table main.loan_features")
    scored.sql(f"create table main.loan_features as select * replace (case when ({part}) = 2 "
               "then not defaulted else defaulted end as defaulted) from main.old_features")
    scored.sql("drop table main.old_features")


def test_better_cv_but_worse_holdout_is_not_promoted(scored: Loans) -> None:
    # The champion: an overfitting recipe. CV prefers almost anything else.
    with_risk(scored, "            params: {eta: 0.3, max_depth: 10, min_child_weight: 0.1}\n"
                      "            tune: {cv: 3, n_trials: 4}\n")
    _flip_holdout_labels(scored)
    scored.ok("train", "default_risk", "--force")
    (champion,), = scored.sql("select version from ml.models where model_name = "
                              "'default_risk' and status = 'champion'")
    if champion != 2:
        scored.ok("promote", "default_risk", "--version", "2")
    out = scored.ok("tune", "default_risk").output
    trials = scored.sql("select trial_number, value, state from ml.trials order by 1")
    best = min((t for t in trials if t[2] == "complete"), key=lambda t: t[1])
    assert best[0] != 1 and best[1] < trials[0][1]  # CV: tuned beats the champion's recipe
    assert "v3 stays challenger: holdout auc v3 " in out and " vs champion v2 " in out
    assert scored.sql("select version, status from ml.models where model_name = "
                      "'default_risk' and version >= 2 order by 1") == [
        (2, "champion"), (3, "challenger")]
    (params,), = scored.sql("select params from ml.models where model_name = 'default_risk' "
                            "and version = 3")
    assert json.loads(params)["max_depth"] == json.loads(
        scored.sql(f"select params from ml.trials where trial_number = {best[0]}")[0][0]
    )["max_depth"]
