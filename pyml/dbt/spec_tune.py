"""The `tune:` and `promote:` keys of a model spec: search budget, search space and the
promotion policy, validated once into frozen dataclasses that `spec.ModelSpec` carries.

Kept out of `spec.py` so that the tuning and lifecycle keys live together; the metric names
and directions per task are pyml.tasks'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyml.errors import SpecError
from pyml.tasks import (
    DEFAULT_TUNE_METRIC,
    HEADLINE_METRIC,
    MAXIMIZED_XGB,
    PROMOTE_METRICS,
    TUNE_METRICS,
    canonical_param,
)

TUNE_KEYS = ("n_trials", "timeout", "metric", "direction", "space", "on_train", "seed", "cv")
MAX_CV_FOLDS = 20  # as split.folds
PROMOTE_KEYS = ("policy", "metric", "min_delta", "score")
POLICIES = ("auto", "manual")
DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class ParamRange:
    """The search range of one XGBoost parameter."""

    name: str  # XGBoost parameter name
    low: float | None = None  # lower bound (numeric ranges)
    high: float | None = None  # upper bound (numeric ranges)
    log: bool = False  # sample on a log scale
    integer: bool = False  # suggest integers (both bounds were integers)
    choices: tuple[Any, ...] = ()  # categorical choices instead of a range


@dataclass(frozen=True)
class TuneSpec:
    """An Optuna study's budget and search space (`tune:` in the spec)."""

    n_trials: int = 30  # most trials per study
    timeout: float | None = 600.0  # seconds; the study stops starting trials after it
    metric: str | None = None  # XGBoost eval metric on the validation part; None = by task
    direction: str | None = None  # minimize | maximize; None = from the metric
    space: tuple[ParamRange, ...] = ()  # () = the task's default search space
    on_train: bool = False  # `pyml train` tunes too (otherwise only `pyml tune`)
    seed: int = 0  # TPESampler seed
    # k: each trial is k-fold CV on the non-holdout rows (the mean of the folds' early-stopped
    # validation values); None: each trial trains on the train part, stops on validation.
    cv: int | None = None


@dataclass(frozen=True)
class PromoteSpec:
    """When a newly trained version replaces the champion (`promote:` in the spec)."""

    policy: str = "auto"  # auto: decided at train time; manual: only `pyml promote`
    metric: str | None = None  # holdout metric compared; None = the task's headline
    min_delta: float = 0.0  # how much better the challenger must be (0 = not worse)
    score: bool = False  # rescore (pyml score) as soon as a version becomes champion


def tune_metric(spec_tune: TuneSpec, task: str) -> tuple[str, str]:
    """(XGBoost metric, direction) a study optimises."""
    metric = spec_tune.metric or DEFAULT_TUNE_METRIC[task]
    direction = spec_tune.direction or ("maximize" if metric in MAXIMIZED_XGB else "minimize")
    return metric, direction


def promote_metric(promote: PromoteSpec, task: str) -> str:
    """The holdout metric a promotion compares."""
    return promote.metric or HEADLINE_METRIC[task]


def default_space(task: str, categorical: bool = False) -> tuple[ParamRange, ...]:
    """The search space used when `tune.space` is not given (`categorical`: the model has
    categorical features, so max_cat_to_onehot is searched too).

    The rounds are not searched: early stopping picks them inside every trial, so eta and
    max_depth (sampled jointly: the TPE sampler is multivariate) trade off freely. eta stops
    at 0.03: below it, the default 500 rounds end before early stopping's best round (the
    trial is both capped and the slowest of the study: bench/quality.py measured eta 0.011 and
    0.015 trials taking 3-4 times an eta 0.1 trial and losing to it).
    min_child_weight bounds a leaf's hessian sum: about a row count for squared error, but a
    quarter of that or less for log loss (p(1-p) <= 0.25), hence the different ranges.
    """
    child = (ParamRange("min_child_weight", 1.0, 50.0, log=True) if task == "regression"
             else ParamRange("min_child_weight", 0.1, 20.0, log=True))
    space = (
        ParamRange("eta", 0.03, 0.3, log=True),
        ParamRange("max_depth", 3, 10 if task != "multiclass" else 8, integer=True),
        child,
        ParamRange("subsample", 0.5, 1.0),
        ParamRange("colsample_bytree", 0.5, 1.0),
        ParamRange("lambda", 1e-3, 10.0, log=True),
        ParamRange("alpha", 1e-3, 10.0, log=True),
    )
    # Categories below this count split one-vs-rest, above it by partition (XGBoost's 4).
    onehot = ParamRange("max_cat_to_onehot", 1, 64, log=True, integer=True)
    return (*space, onehot) if categorical else space


def _number(raw: Mapping[str, Any], key: str, where: str) -> float | int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where}: '{key}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return value


def parse_tune(raw: Any, task: str, where: str) -> TuneSpec | None:
    """Validate `tune:`; None when the key is absent."""
    if raw is None:
        return None
    if raw is True or raw == {}:
        return TuneSpec()
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: 'tune' must be a mapping such as "
                        "{n_trials: 30, timeout: 600}")
    unknown = sorted(set(map(str, raw)) - set(TUNE_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key 'tune.{unknown[0]}'; allowed: "
                        f"{', '.join(TUNE_KEYS)}")
    n_trials = raw.get("n_trials", 30)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise SpecError(f"{where}: tune.n_trials must be an integer of at least 1, "
                        f"got {n_trials!r}")
    timeout = raw.get("timeout", 600.0)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not math.isfinite(timeout) or timeout <= 0):
        raise SpecError(f"{where}: tune.timeout must be a number of seconds above 0 (or null "
                        f"for no limit), got {timeout!r}")
    metric = raw.get("metric")
    if metric is not None and metric not in TUNE_METRICS[task]:
        raise SpecError(f"{where}: tune.metric '{metric}' is not an XGBoost metric pyml tunes "
                        f"a {task} model on; use one of {', '.join(TUNE_METRICS[task])}")
    direction = raw.get("direction")
    if direction is not None:
        if direction not in DIRECTIONS:
            raise SpecError(f"{where}: tune.direction must be minimize or maximize, "
                            f"got {direction!r}")
        natural = tune_metric(TuneSpec(metric=metric), task)[1]
        if direction != natural:
            raise SpecError(f"{where}: tune.direction {direction} contradicts the metric "
                            f"{metric or DEFAULT_TUNE_METRIC[task]}, which is to {natural}; "
                            "remove tune.direction")
    on_train = raw.get("on_train", False)
    if not isinstance(on_train, bool):
        raise SpecError(f"{where}: tune.on_train must be true or false, got {on_train!r}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError(f"{where}: tune.seed must be a non-negative integer, got {seed!r}")
    cv = raw.get("cv")
    if cv is not None and (isinstance(cv, bool) or not isinstance(cv, int)
                           or not 2 <= cv <= MAX_CV_FOLDS):
        raise SpecError(f"{where}: tune.cv must be a number of folds from 2 to {MAX_CV_FOLDS} "
                        f"(or null to tune on the validation part), got {cv!r}")
    return TuneSpec(n_trials, None if timeout is None else float(timeout), metric, direction,
                    _space(raw.get("space"), where), on_train, seed, cv)


def _space(raw: Any, where: str) -> tuple[ParamRange, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise SpecError(f"{where}: tune.space must be a mapping of XGBoost parameters to "
                        "{low, high, log} or {choices: [...]}")
    out = []
    seen: dict[str, str] = {}
    for given, rng in raw.items():
        here = f"{where}: tune.space.{given}"
        name = canonical_param(str(given))  # learning_rate is eta, as in params
        if name in seen:
            raise SpecError(f"{here}: tune.space gives one parameter twice, as {seen[name]} "
                            f"and {given} (XGBoost names for the same thing); keep one")
        seen[name] = str(given)
        if name in ("objective", "num_class"):
            raise SpecError(f"{here}: {name} is set by pyml from 'task' and cannot be tuned")
        if name == "eval_metric":  # the study would compare one trial's error with another's
            raise SpecError(f"{here}: tune.metric chooses the metric trials are compared on; "
                            "eval_metric cannot be tuned")
        if not isinstance(rng, Mapping):
            raise SpecError(f"{here} must be {{low, high}} (optionally log: true) or "
                            "{choices: [...]}")
        keys = set(map(str, rng))
        if "choices" in keys:
            choices = rng["choices"]
            if keys != {"choices"} or not isinstance(choices, list) or not choices:
                raise SpecError(f"{here}: choices must be a non-empty list and stand alone")
            if not all(c is None or isinstance(c, str | int | float | bool) for c in choices):
                raise SpecError(f"{here}: choices must be numbers, strings or booleans")
            out.append(ParamRange(str(name), choices=tuple(choices)))
            continue
        if not keys <= {"low", "high", "log"} or not {"low", "high"} <= keys:
            raise SpecError(f"{here} must be {{low, high}} (optionally log: true) or "
                            "{choices: [...]}")
        low, high = _number(rng, "low", here), _number(rng, "high", here)
        log = rng.get("log", False)
        if not isinstance(log, bool):
            raise SpecError(f"{here}: log must be true or false")
        if not low < high:
            raise SpecError(f"{here}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise SpecError(f"{here}: a log range needs low above 0, got {low}")
        integer = isinstance(low, int) and isinstance(high, int)
        out.append(ParamRange(str(name), float(low), float(high), log, integer))
    return tuple(out)


def parse_promote(raw: Any, task: str, where: str) -> PromoteSpec:
    """Validate `promote:`; the default policy when absent."""
    if raw is None:
        return PromoteSpec()
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: 'promote' must be a mapping such as "
                        "{policy: auto, metric: auc, min_delta: 0}")
    unknown = sorted(set(map(str, raw)) - set(PROMOTE_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key 'promote.{unknown[0]}'; allowed: "
                        f"{', '.join(PROMOTE_KEYS)}")
    policy = raw.get("policy", "auto")
    if policy not in POLICIES:
        raise SpecError(f"{where}: promote.policy must be auto or manual, got {policy!r}")
    metric = raw.get("metric")
    if metric is not None and metric not in PROMOTE_METRICS[task]:
        raise SpecError(f"{where}: promote.metric '{metric}' is not a holdout metric of a "
                        f"{task} model; use one of {', '.join(PROMOTE_METRICS[task])}")
    min_delta = raw.get("min_delta", 0.0)
    if (isinstance(min_delta, bool) or not isinstance(min_delta, int | float)
            or not math.isfinite(min_delta) or min_delta < 0):  # .nan never promoted
        raise SpecError(f"{where}: promote.min_delta must be a number >= 0, got {min_delta!r}")
    score = raw.get("score", False)
    if not isinstance(score, bool):
        raise SpecError(f"{where}: promote.score must be true or false, got {score!r}")
    return PromoteSpec(policy, metric, float(min_delta), score)
