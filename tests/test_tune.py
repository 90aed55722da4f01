"""Tuning: the `tune:` spec key, `pyml tune`, `tune: {on_train: true}`, ml.trials, pruning,
and that trials never see the holdout.
"""

from __future__ import annotations

import json
import re
from typing import Any

import optuna
import pytest
import xgboost as xgb

from pyml.dbt.spec import parse_specs
from pyml.dbt.spec_tune import default_space
from pyml.errors import SpecError
from pyml.modelling import tune as tune_module

from .conftest import SCHEMA_YML, Loans

SOURCE = "models/schema.yml"
MODEL = "model.lending.loan_features"
WHERE = f"{SOURCE}: model 'default_risk' on {MODEL}"
SPACE_KEYS = {r.name for r in default_space("binary", categorical=True)}  # region is one


def parse(**extra: Any) -> Any:
    raw = {"name": "default_risk", "task": "binary", "target": "defaulted", "key": "loan_id",
           **extra}
    return parse_specs(raw, feature_model=MODEL, schema="main", relation="loan_features",
                       source_file=SOURCE)[0]


def test_tune_and_promote_keys_parse() -> None:
    spec = parse(tune={"n_trials": 5, "timeout": 30, "metric": "auc", "on_train": True,
                       "space": {"max_depth": {"low": 2, "high": 6},
                                 "eta": {"low": 0.01, "high": 0.3, "log": True},
                                 "grow_policy": {"choices": ["depthwise", "lossguide"]}}},
                 promote={"policy": "manual", "metric": "log_loss", "min_delta": 0.01})
    assert spec.tune.n_trials == 5 and spec.tune.timeout == 30.0 and spec.tune.on_train
    depth, eta, grow = spec.tune.space
    assert (depth.integer, depth.low, depth.high) == (True, 2.0, 6.0)
    assert (eta.integer, eta.log) == (False, True)
    assert grow.choices == ("depthwise", "lossguide")
    assert (spec.promote.policy, spec.promote.metric, spec.promote.min_delta) == (
        "manual", "log_loss", 0.01)
    assert parse().tune is None and parse().promote.policy == "auto"
    assert json.dumps(spec.to_dict())  # stored with every version


@pytest.mark.parametrize(("extra", "message"), [
    ({"tune": {"trials": 5}}, "unknown key 'tune.trials'; allowed: n_trials, timeout, metric, "
                              "direction, space, on_train, seed, cv"),
    ({"tune": {"n_trials": 0}}, "tune.n_trials must be an integer of at least 1, got 0"),
    ({"tune": {"timeout": -1}}, "tune.timeout must be a number of seconds above 0 (or null for "
                                "no limit), got -1"),
    ({"tune": {"metric": "rmse"}}, "tune.metric 'rmse' is not an XGBoost metric pyml tunes a "
                                   "binary model on; use one of logloss, auc, aucpr, error"),
    ({"tune": {"metric": "auc", "direction": "minimize"}},
     "tune.direction minimize contradicts the metric auc, which is to maximize; remove "
     "tune.direction"),
    ({"tune": {"space": {"eta": {"low": 0.3, "high": 0.1}}}},
     "tune.space.eta: low (0.3) must be below high (0.1)"),
    ({"tune": {"space": {"alpha": {"low": 0, "high": 1, "log": True}}}},
     "tune.space.alpha: a log range needs low above 0, got 0"),
    ({"tune": {"space": {"eta": [0.1, 0.2]}}},
     "tune.space.eta must be {low, high} (optionally log: true) or {choices: [...]}"),
    ({"tune": {"space": {"objective": {"choices": ["binary:hinge"]}}}},
     "tune.space.objective: objective is set by pyml from 'task' and cannot be tuned"),
    ({"promote": {"policy": "sometimes"}},
     "promote.policy must be auto or manual, got 'sometimes'"),
    ({"promote": {"metric": "rmse"}}, "promote.metric 'rmse' is not a holdout metric of a "
     "binary model; use one of auc, pr_auc, log_loss, brier, accuracy, precision, recall, f1, "
     "best_f1"),
    ({"promote": {"min_delta": -1}}, "promote.min_delta must be a number >= 0, got -1"),
])
def test_invalid_tune_and_promote_keys(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(**extra)
    assert str(e.value) == f"{WHERE}: {message}"


class _Spy:
    """Records (train rows, evaluation rows) of every xgb.train call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []
        self.real = xgb.train

    def __call__(self, params: Any, dtrain: Any, *args: Any, **kwargs: Any) -> Any:
        evals = kwargs.get("evals") or []
        self.calls.append((dtrain.num_row(), [d.num_row() for d, _ in evals]))
        return self.real(params, dtrain, *args, **kwargs)


def test_tune_records_trials_and_trains_the_best(scored: Loans,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy()
    monkeypatch.setattr(xgb, "train", spy)
    result = scored.ok("tune", "default_risk", "--n-trials", "6")
    out = result.output
    assert "[default_risk] trial 6/6:" in out and "best " in out
    trials = scored.sql("select study_id, trial_number, version, params, metric, direction, "
                        "value, best_round, state, seconds from ml.trials order by trial_number")
    # One numbering, from 1, in ml.trials and in every line of the log.
    assert [t[1] for t in trials] == list(range(1, 7))
    logged = [int(n) for n in re.findall(r"\] trial (\d+)/6:", out)]
    assert logged == list(range(1, 7))
    assert {t[2] for t in trials} == {2}
    assert {t[4:6] for t in trials} == {("logloss", "minimize")}
    assert {t[8] for t in trials} <= {"complete", "pruned"}
    assert all(set(json.loads(t[3])) == SPACE_KEYS for t in trials)
    assert all(t[9] > 0 for t in trials)
    complete = [t for t in trials if t[8] == "complete"]
    best = min(complete, key=lambda t: t[6])
    assert all(t[7] is not None for t in complete)
    # Trial 1 replays the spec's own parameters (pyml defaults: max_depth 6, eta 0.1).
    first = json.loads(trials[0][3])
    assert (first["max_depth"], first["eta"]) == (6, 0.1)

    (params, note, status), = scored.sql("select params, note, status from ml.models "
                                         "where model_name = 'default_risk' and version = 2")
    stored = json.loads(params)
    assert {k: stored[k] for k in SPACE_KEYS} == json.loads(best[3])
    study = trials[0][0]
    assert note.startswith(f"tuned by study {study}: 6 trials (")
    assert f"tuning (study {study}): up to 6 trials" in out
    assert scored.sql("select count(*) from ml.trials where study_id = ? and study = ?",
                      [study, study]) == [(6,)]
    # The best trial the note and the last log line name is ml.trials' best row.
    assert f"(trial {best[1]}; trial 1 = spec params " in note
    # The default space's alpha starts at 0.001: XGBoost's 0 (the spec sets none) is clipped,
    # and the note blames the default, not the spec (a docs walk).
    assert "XGBoost's default alpha 0.0 is not in tune.space" in note, note
    assert re.findall(r"best [0-9.]+ \(trial (\d+)\)", out)[-1] == str(best[1])
    assert "; holdout auc tuned " in note and " vs spec params " in note and "95% CI [" in note
    assert f"default_risk v2 (binary) {status}: " in out and f"note: {note}" in out

    # The study never saw the holdout: every trial trained on the train part and was
    # evaluated on the validation part only.
    (n_train, n_valid, n_test), = scored.sql("select train_rows, validation_rows, test_rows "
                                             "from ml.models where model_name = "
                                             "'default_risk' and version = 2")
    # 6 trials, the fit with the spec's own params (for the note) and the evaluated fit: each
    # on the train part, each evaluated on the validation part and nothing else; then, after
    # the holdout was measured, the refit on every labelled row (final_fit: refit).
    assert len(spy.calls) == 9
    assert all(c == (n_train, [n_valid]) for c in spy.calls[:-1])
    assert spy.calls[-1] == (n_train + n_valid + n_test, [])
    assert n_test not in (n_train, n_valid)


class _PruneAllButFirst(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number > 0 and (trial.last_step or 0) >= 3


def test_pruned_trials_are_recorded(scored: Loans, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune_module, "pruner", _PruneAllButFirst)
    scored.ok("tune", "grade", "--n-trials", "3")
    rows = scored.sql("select trial_number, state, value, best_round from ml.trials "
                      "order by trial_number")
    assert [(n, s) for n, s, _, _ in rows] == [(1, "complete"), (2, "pruned"), (3, "pruned")]
    assert all(v is not None for _, _, v, _ in rows)  # the last reported validation value
    assert [b is None for _, _, _, b in rows] == [False, True, True]
    (note,), = scored.sql("select note from ml.models where model_name = 'grade' "
                          "and version = 2")
    assert "3 trials (1 complete, 2 pruned, 0 failed)" in note
    assert "holdout log_loss tuned " in note


def test_train_tunes_when_the_spec_says_on_train(scored: Loans) -> None:
    scored.write_schema(SCHEMA_YML.replace(
        "            split: {method: random, test_fraction: 0.25, seed: 3}\n",
        "            split: {method: random, test_fraction: 0.25, seed: 3}\n"
        "            tune:\n"
        "              on_train: true\n"
        "              n_trials: 3\n"
        "              metric: mae\n"
        "              space:\n"
        "                max_depth: {low: 2, high: 4}\n"
        "                eta: {low: 0.05, high: 0.3, log: true}\n"
        "                grow_policy: {choices: [depthwise, lossguide]}\n", 1))
    scored.ok("train", "loss_amount", "grade")
    rows = scored.sql("select model_name, params, metric from ml.trials order by trial_number")
    assert [r[0] for r in rows] == ["loss_amount"] * 3  # grade has no tune: block
    for _, params, metric in rows:
        p = json.loads(params)
        assert set(p) == {"max_depth", "eta", "grow_policy"} and metric == "mae"
        assert isinstance(p["max_depth"], int) and 2 <= p["max_depth"] <= 4
        assert p["grow_policy"] in ("depthwise", "lossguide")
    (params,), = scored.sql("select params from ml.models where model_name = 'loss_amount' "
                            "and version = 2")
    assert json.loads(params)["eval_metric"] == "mae"


def test_tuning_needs_a_validation_part(scored: Loans) -> None:
    scored.write_schema(SCHEMA_YML.replace(
        "            split: {method: random, test_fraction: 0.25, seed: 3}\n",
        "            split: {method: random, test_fraction: 0.25, seed: 3, "
        "validation_fraction: 0}\n", 1))
    result = scored.pyml("tune", "loss_amount", "--n-trials", "2")
    assert result.exit_code == 1
    assert result.output.endswith(
        "Error: models/schema.yml: model 'loss_amount' on model.loans.loan_features: tuning "
        "needs a validation part to stop early on and to compare trials: set "
        "split.validation_fraction above 0\n")
    assert scored.sql("select count(*) from ml.models where model_name = 'loss_amount'") == [
        (1,)]


def test_trials_from_before_study_id_are_renumbered_from_1(scored: Loans) -> None:
    scored.ok("tune", "grade", "--n-trials", "2")
    # ml.trials as an older release left it: no study_id column, trials numbered from 0.
    scored.sql("update ml.trials set trial_number = trial_number - 1")
    for column in ("value_std", "folds", "study_id"):  # study_id came before tune.cv's
        scored.sql(f"alter table ml.trials drop column {column}")
    (study,), = scored.sql("select distinct study from ml.trials")
    (other,), = scored.sql("select version from ml.models where model_name = 'grade' and "
                           "status <> 'champion'")
    scored.ok("promote", "grade", "--version", str(other))  # a write updates the schema
    assert scored.sql("select study_id, trial_number from ml.trials order by 2") == [
        (study, 1), (study, 2)]
    (comment,), = scored.sql("select comment from duckdb_columns() where schema_name = 'ml' "
                             "and table_name = 'trials' and column_name = 'study_id'")
    assert comment.startswith("the study's id")
    scored.ok("rollback", "grade")  # and only once
    assert scored.sql("select trial_number from ml.trials order by 1") == [(1,), (2,)]


def test_trial_1_is_the_spec_params_or_says_which_are_not() -> None:
    # grow_policy is not in the spec: XGBoost's default (depthwise) is replayed when the space
    # offers it; a space without it, or a spec value outside a range, is named in the note.
    from pyml.dbt.spec_tune import ParamRange

    space = [ParamRange("grow_policy", choices=("depthwise", "lossguide")),
             ParamRange("max_depth", low=3, high=8, integer=True)]
    assert tune_module._first_trial(space, {"max_depth": 6}) == (
        {"grow_policy": "depthwise", "max_depth": 6}, [])
    space = [ParamRange("grow_policy", choices=("lossguide",)),
             ParamRange("max_depth", low=3, high=5, integer=True),
             ParamRange("some_new_param", low=0.0, high=1.0)]
    assert tune_module._first_trial(space, {"max_depth": 6}) == (
        {"max_depth": 5}, ["grow_policy", "max_depth", "some_new_param"])


def test_max_bin_trains_in_params_and_in_the_space(scored: Loans) -> None:
    """XGBoost refuses a booster whose max_bin differs from its data matrix's: `params:
    {max_bin: 32}` failed every train, and with max_bin in tune.space the study ran and the
    version's fit failed, blamed on the spec (an audit)."""
    split = "            split: {method: random, test_fraction: 0.25, seed: 3}\n"
    scored.write_schema(SCHEMA_YML.replace(split, split + "            params: {max_bin: 32}\n",
                                           1))
    scored.ok("train", "loss_amount")
    (params,), = scored.sql("select params from ml.models where model_name = 'loss_amount' "
                            "and version = 2")
    assert json.loads(params)["max_bin"] == 32
    scored.write_schema(SCHEMA_YML.replace(split, split + "            tune:\n"
                                           "              n_trials: 2\n"
                                           "              space:\n"
                                           "                max_bin: {low: 16, high: 64}\n", 1))
    out = scored.ok("tune", "loss_amount").output
    assert "loss_amount v3 (regression)" in out, out


def test_a_tuned_eta_takes_effect_beside_a_spec_learning_rate(scored: Loans) -> None:
    """The spec's learning_rate stood after the trial's eta, and XGBoost applies the last of
    two names: every trial scored the same while ml.trials recorded different etas (an
    audit). learning_rate is now eta, which each trial replaces."""
    split = "            split: {method: random, test_fraction: 0.25, seed: 3}\n"
    scored.write_schema(SCHEMA_YML.replace(split, split + "            params: {learning_rate: "
                                           "0.05}\n            tune:\n"
                                           "              n_trials: 3\n"
                                           "              space:\n"
                                           "                eta: {choices: [0.01, 0.3, 0.9]}\n",
                                           1))
    scored.ok("tune", "loss_amount")
    rows = scored.sql("select params, value from ml.trials order by trial_number")
    assert len({json.loads(p)["eta"] for p, _ in rows}) > 1
    assert len({round(v, 9) for _, v in rows}) == len({json.loads(p)["eta"] for p, _ in rows})
    (params,), = scored.sql("select params from ml.models where model_name = 'loss_amount' "
                            "and version = 2")
    assert "learning_rate" not in json.loads(params)
