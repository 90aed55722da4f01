"""`meta: pyml:` specs: defaults, and the exact message of every way a spec can be wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pyml.dbt.spec import DEFAULT_PARAMS, ModelSpec, ScoreSpec, SplitSpec, parse_specs
from pyml.errors import SpecError

SOURCE = "models/features/_features__models.yml"
MODEL = "model.lending.loan_features"
WHERE = f"{SOURCE}: model 'default_risk' on {MODEL}"
ALLOWED = ("name, description, task, target, key, features, exclude, split, params, "
           "num_boost_round, early_stopping_rounds, threshold, positive_class, score, "
           "tune, promote, allow_leakage, drift_threshold, monitor, max_memory, num_workers, "
           "final_fit")


DROP = object()  # as a value in minimal(): leave the key out


def minimal(**extra: Any) -> dict[str, Any]:
    """The smallest valid spec, plus overrides (a value of DROP removes the key)."""
    spec: dict[str, Any] = {"name": "default_risk", "task": "binary", "target": "defaulted",
                            "key": "loan_id"}
    spec.update(extra)
    return {k: v for k, v in spec.items() if v is not DROP}


def parse(raw: Any) -> list[ModelSpec]:
    return parse_specs(raw, feature_model=MODEL, schema="main", relation="loan_features",
                       source_file=SOURCE)


def error_of(raw: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse(raw)
    return str(info.value)


def test_minimal_spec_gets_the_documented_defaults() -> None:
    (spec,) = parse(minimal())
    assert spec == ModelSpec(
        name="default_risk", task="binary", target="defaulted", key=("loan_id",),
        feature_model=MODEL, schema="main", relation="loan_features", source_file=SOURCE,
    )
    assert spec.features is None
    assert spec.exclude == ()
    assert spec.split == SplitSpec("random", 0.2, 0.2, 42, None)
    assert spec.params == {}
    assert (spec.num_boost_round, spec.early_stopping_rounds, spec.threshold) == (500, 30, 0.5)
    assert spec.positive_class is None
    assert spec.description == ""
    assert spec.score == ScoreSpec(None, 100_000)
    assert spec.where == WHERE
    # Stored with every version, so it must be plain JSON.
    assert json.loads(json.dumps(spec.to_dict()))["key"] == ["loan_id"]
    assert DEFAULT_PARAMS["tree_method"] == "hist"


def test_one_mapping_or_a_list_of_them() -> None:
    assert [s.name for s in parse(minimal())] == ["default_risk"]
    specs = parse([minimal(), minimal(name="loss_amount", task="regression", target="loss")])
    assert [(s.name, s.task, s.target) for s in specs] == [
        ("default_risk", "binary", "defaulted"), ("loss_amount", "regression", "loss")]


def test_full_spec_is_kept() -> None:
    (spec,) = parse(minimal(
        description="  Chance of default.  ", key=["loan_id", "as_of_date"],
        features=["amount", "region"], params={"max_depth": 3, "eta": 0.3},
        num_boost_round=50, early_stopping_rounds=None, threshold=0.3, positive_class=True,
        split={"method": "time", "column": "as_of_date", "test_fraction": 0.1,
               "validation_fraction": 0.0},
        score={"relation": "loans_to_score", "batch_size": 1000},
    ))
    assert spec.description == "Chance of default."
    assert spec.key == ("loan_id", "as_of_date")
    assert spec.features == ("amount", "region")
    assert spec.params == {"max_depth": 3, "eta": 0.3}
    assert spec.num_boost_round == 50
    assert spec.early_stopping_rounds is None
    assert spec.threshold == 0.3
    assert spec.positive_class is True
    assert spec.split == SplitSpec("time", 0.1, 0.0, 42, "as_of_date")
    assert spec.score == ScoreSpec("loans_to_score", 1000)


def test_exclude_is_kept() -> None:
    (spec,) = parse(minimal(exclude="loss"))
    assert spec.exclude == ("loss",)
    assert spec.features is None


@pytest.mark.parametrize(("raw", "message"), [
    (["churn"], f"{SOURCE}: {MODEL} meta.pyml[0]: a pyml spec must be a mapping with keys "
                "name, task, target, key; got str"),
    (minimal(targett="x"), f"{WHERE}: unknown key 'targett'; allowed keys are {ALLOWED}"),
    (minimal(target=DROP), f"{WHERE}: missing required key 'target' (the label column)"),
    (minimal(key=[]), f"{WHERE}: missing required key 'key' (id column(s) carried into the "
                      "predictions)"),
    (minimal(task=""), f"{WHERE}: missing required key 'task' (binary | multiclass | "
                       "regression)"),
    ([minimal(), minimal(name=DROP)],
     f"{SOURCE}: {MODEL} meta.pyml[1]: missing required key 'name' (model name, a lower-case "
     "identifier (predictions land in ml.<name>_predictions))"),
    (minimal(name=7), f"{SOURCE}: {MODEL} meta.pyml[0]: 'name' must be a non-empty string, "
                      "got 7"),
    (minimal(name="Default-Risk"),
     f"{SOURCE}: model 'Default-Risk' on {MODEL}: name 'Default-Risk' is not a valid model "
     "name; use lower-case letters, digits and underscores, starting with a letter (at most "
     "63 characters)"),
    (minimal(task="classification"),
     f"{WHERE}: task 'classification' is not one of binary, multiclass, regression"),
    (minimal(target=["a", "b"]), f"{WHERE}: 'target' must be a non-empty string, got ['a', 'b']"),
    (minimal(key=["loan_id", 3]),
     f"{WHERE}: 'key' must be a column name or a list of column names"),
    (minimal(key=["loan_id", "loan_id"]), f"{WHERE}: 'key' lists a column twice"),
    (minimal(features=["amount"], exclude=["loss"]),
     f"{WHERE}: give either 'features' or 'exclude', not both"),
    (minimal(params=["max_depth", 3]),
     f"{WHERE}: 'params' must be a mapping of XGBoost parameter names to values"),
    (minimal(params={"objective": "binary:hinge"}),
     f"{WHERE}: params.objective is set by pyml from 'task'; remove it from params"),
    (minimal(params={"num_class": 3}),
     f"{WHERE}: params.num_class is set by pyml from 'task'; remove it from params"),
    (minimal(num_boost_round="100"), f"{WHERE}: 'num_boost_round' must be an integer, got '100'"),
    # YAML's .nan and .inf: a NaN drift_threshold never alerted, a NaN min_delta never
    # promoted (an audit).
    (minimal(drift_threshold=float("nan")),
     f"{WHERE}: 'drift_threshold' must be a finite number, got nan"),
    (minimal(threshold=float("inf")), f"{WHERE}: 'threshold' must be a finite number, got inf"),
    (minimal(promote={"min_delta": float("nan")}),
     f"{WHERE}: promote.min_delta must be a number >= 0, got nan"),
    # Two names of one XGBoost parameter: the last one given wins in XGBoost, so a tuned eta
    # beside learning_rate never took effect (an audit).
    (minimal(params={"eta": 0.1, "learning_rate": 0.05}),
     f"{WHERE}: params gives one parameter twice, as eta and learning_rate (XGBoost names for "
     "the same thing); keep one"),
    (minimal(tune={"space": {"eta": {"low": 0.01, "high": 0.3},
                             "learning_rate": {"low": 0.01, "high": 0.3}}}),
     f"{WHERE}: tune.space.learning_rate: tune.space gives one parameter twice, as eta and "
     "learning_rate (XGBoost names for the same thing); keep one"),
    (minimal(tune={"space": {"eval_metric": {"choices": ["logloss", "error"]}}}),
     f"{WHERE}: tune.space.eval_metric: tune.metric chooses the metric trials are compared "
     "on; eval_metric cannot be tuned"),
    (minimal(tune={"timeout": float("nan")}),
     f"{WHERE}: tune.timeout must be a number of seconds above 0 (or null for no limit), "
     "got nan"),
    (minimal(num_boost_round=2.5), f"{WHERE}: 'num_boost_round' must be an integer, got 2.5"),
    (minimal(num_boost_round=True), f"{WHERE}: 'num_boost_round' must be an integer, got True"),
    (minimal(num_boost_round=0), f"{WHERE}: 'num_boost_round' must be at least 1, got 0"),
    (minimal(early_stopping_rounds=0),
     f"{WHERE}: 'early_stopping_rounds' must be at least 1, got 0; to train every round "
     "without early stopping, write early_stopping_rounds: null"),
    (minimal(threshold="high"), f"{WHERE}: 'threshold' must be a number, got 'high'"),
    (minimal(threshold=1), f"{WHERE}: threshold must be between 0 and 1 (exclusive), got 1.0"),
    (minimal(task="regression", positive_class="yes"),
     f"{WHERE}: positive_class only applies to task: binary"),
    (minimal(description=["a"]), f"{WHERE}: 'description' must be text"),
    (minimal(split="random"),
     f"{WHERE}: 'split' must be a mapping such as {{method: random, test_fraction: 0.2, "
     "seed: 42}"),
    (minimal(split={"method": "bootstrap"}),
     f"{WHERE}: split.method 'bootstrap' is not one of random, time, kfold"),
    (minimal(split={"folds": 5}),
     f"{WHERE}: split.folds only applies to split.method kfold"),
    (minimal(split={"method": "kfold", "folds": 1}),
     f"{WHERE}: split.folds must be at least 2, got 1"),
    (minimal(allow_leakage="yes"),
     f"{WHERE}: 'allow_leakage' must be true or false, got 'yes'"),
    (minimal(drift_threshold=0),
     f"{WHERE}: drift_threshold must be above 0 (a PSI), got 0.0"),
    (minimal(split={"colum": "d"}),
     f"{WHERE}: unknown key 'split.colum'; allowed: method, test_fraction, "
     "validation_fraction, seed, column, folds"),
    (minimal(split={"test_fraction": 1.5}),
     f"{WHERE}: split.test_fraction must be in (0, 1), got 1.5"),
    (minimal(split={"validation_fraction": -0.1}),
     f"{WHERE}: split.validation_fraction must be in [0, 1), got -0.1"),
    (minimal(split={"method": "time", "column": "opened_date", "seed": 3}),
     f"{WHERE}: split.seed only applies to split.method random or kfold (a time split cuts "
     "by the column's values)"),
    (minimal(split={"test_fraction": 0}),
     f"{WHERE}: split.test_fraction must be above 0: pyml always keeps a holdout to report "
     "honest metrics"),
    (minimal(split={"test_fraction": "20%"}),
     f"{WHERE}: split.test_fraction must be a number, got '20%'"),
    (minimal(split={"seed": -1}), f"{WHERE}: split.seed must be at least 0, got -1"),
    (minimal(split={"method": "time"}),
     f"{WHERE}: split.method time needs split.column, the time column"),
    (minimal(split={"method": "random", "column": "as_of_date"}),
     f"{WHERE}: split.column only applies to split.method time"),
    (minimal(score="loans_to_score"),
     f"{WHERE}: 'score' must be a mapping such as {{relation: my_model}}"),
    (minimal(score={"relaton": "x"}),
     f"{WHERE}: unknown key 'score.relaton'; allowed: relation, batch_size, incremental"),
    (minimal(score={"relation": 5}),
     f"{WHERE}: score.relation must be a dbt model name or schema.table"),
    (minimal(score={"batch_size": 0}), f"{WHERE}: score.batch_size must be at least 1, got 0"),
])
def test_invalid_spec_message(raw: Any, message: str) -> None:
    assert error_of(raw) == message


def test_kfold_split_and_analysis_keys() -> None:
    (spec,) = parse(minimal(split={"method": "kfold", "folds": 3, "test_fraction": 0.25},
                            allow_leakage=True, drift_threshold=0.3))
    assert spec.split == SplitSpec("kfold", 0.25, 0.2, 42, None, 3)
    assert spec.allow_leakage is True
    assert spec.drift_threshold == 0.3
    (default,) = parse(minimal())
    assert (default.split.folds, default.allow_leakage, default.drift_threshold) == (5, False, 0.2)


def test_parameter_aliases_take_xgboosts_first_name() -> None:
    """`learning_rate` is `eta` in params and in tune.space, so pyml's default eta and a tuned
    eta replace it instead of standing beside it (where XGBoost applies the last)."""
    (spec,) = parse(minimal(params={"learning_rate": 0.05, "reg_lambda": 2.0, "max_depth": 3},
                            tune={"space": {"learning_rate": {"low": 0.01, "high": 0.3},
                                            "reg_alpha": {"low": 0.1, "high": 1.0}}}))
    assert dict(spec.params) == {"eta": 0.05, "lambda": 2.0, "max_depth": 3}
    assert spec.tune is not None
    assert [r.name for r in spec.tune.space] == ["eta", "alpha"]
