"""Hyperparameter search with Optuna, inside `pyml train` (`pyml tune`, or `tune.on_train`).

The study sees only the train and validation parts of train.py's split: each trial trains
on the train part with early stopping on the validation part, which is also what Optuna's
pruner watches round by round. The holdout is never looked at while searching, so the
holdout metrics of the version that the best parameters train stay honest. The same run
also fits the spec's own parameters on the same parts, and the version's `note` compares the
two on the holdout with a paired bootstrap interval (pyml.compare).

With `tune.cv: k` each trial is instead k-fold cross-validation on the non-holdout rows
(train and validation parts together), in the folds that `split: {method: kfold}` evaluates
with (pyml.modelling.evaluate.fold_ids): every fold trains with early stopping on its held-out
fold, the trial's value is the mean of the folds' best values, and Optuna's pruner watches the
running mean fold by fold. Only the search changes: the best parameters then train the
version through the normal path (train part, early stopping on validation), and the holdout
decides promotion as without cv.

Every trial is a row of ml.trials (with cv: the folds run and the standard deviation).
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import optuna
import xgboost as xgb

from pyml.data.encode import Feature, dmatrix_kwargs
from pyml.data.trainset import TrainingSet
from pyml.dbt.spec import DEFAULT_PARAMS, ModelSpec
from pyml.dbt.spec_tune import ParamRange, TuneSpec, default_space, promote_metric, tune_metric
from pyml.errors import DataError, SpecError
from pyml.interrupts import uninterrupted
from pyml.modelling.compare import MetricUndefined, compare
from pyml.modelling.evaluate import canonical_order, fold_ids
from pyml.modelling.fit import fit_in_memory, spec_params
from pyml.store.trials import Trial, record_trials

Log = Callable[[str], None]

# XGBoost's own defaults, so that trial 1 can replay the spec's parameters inside the space.
XGB_DEFAULTS: dict[str, Any] = {"eta": 0.3, "learning_rate": 0.3, "max_depth": 6,
                                "min_child_weight": 1.0, "subsample": 1.0,
                                "colsample_bytree": 1.0, "colsample_bylevel": 1.0,
                                "colsample_bynode": 1.0, "lambda": 1.0, "reg_lambda": 1.0,
                                "alpha": 0.0, "reg_alpha": 0.0, "gamma": 0.0,
                                "min_split_loss": 0.0, "max_bin": 256, "max_cat_to_onehot": 4,
                                "max_cat_threshold": 64, "max_leaves": 0, "max_delta_step": 0.0,
                                "scale_pos_weight": 1.0, "grow_policy": "depthwise",
                                "num_parallel_tree": 1}
TRIAL_EARLY_STOPPING = 30  # rounds, when the spec disables early stopping
# tune.cv keeps every fold's quantised train/validation pair across trials up to this many
# cells (k x rows x features, about a byte each); above it they are rebuilt per trial.
CV_CACHE_CELLS = 200_000_000
STATES = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
          optuna.trial.TrialState.FAIL: "fail"}


@dataclass(frozen=True)
class Tuning:
    """A finished study: the spec to train the version with, and what to compare it to."""

    spec: ModelSpec  # the spec with the best parameters merged into `params`
    study: str  # study id (ml.trials.study)
    summary: str  # trials run and the best validation value
    defaults_holdout: np.ndarray  # holdout predictions of the spec's own parameters
    threshold: float  # binary threshold of both

    def note(self, y_holdout: np.ndarray, tuned_holdout: np.ndarray) -> str:
        """The version's note: the study and tuned vs spec parameters on the holdout."""
        metric = promote_metric(self.spec.promote, self.spec.task)
        try:
            cmp = compare(self.spec.task, metric, y_holdout, self.defaults_holdout,
                          np.asarray(tuned_holdout, dtype=np.float64), self.threshold,
                          self.threshold)
        except MetricUndefined as e:
            return f"{self.summary}; tuned and spec params not compared: {e}"
        return f"{self.summary}; {cmp.describe('spec params', 'tuned')}"


def number(trial: optuna.trial.FrozenTrial) -> int:
    """The trial's number as users see it (log, ml.trials, note): from 1; Optuna counts
    from 0."""
    return trial.number + 1


def wants_tuning(spec: ModelSpec, tune: bool | None) -> bool:
    """`pyml tune` always tunes; `pyml train` when the spec says tune.on_train."""
    return tune if tune is not None else bool(spec.tune and spec.tune.on_train)


def _suggest(trial: optuna.Trial, r: ParamRange) -> Any:
    if r.choices:
        return trial.suggest_categorical(r.name, list(r.choices))
    assert r.low is not None and r.high is not None
    if r.integer:
        return trial.suggest_int(r.name, int(r.low), int(r.high), log=r.log)
    return trial.suggest_float(r.name, r.low, r.high, log=r.log)


def _first_trial(space: Sequence[ParamRange], params: dict[str, Any]
                 ) -> tuple[dict[str, Any], list[str]]:
    """The spec's own values (clipped into the space), so trial 1 is the spec's parameters;
    and the names of those it cannot be (a value outside the space, or one pyml does not
    know XGBoost's default of), which Optuna samples: the note says so."""
    out: dict[str, Any] = {}
    off: list[str] = []
    for r in space:
        value = params.get(r.name, XGB_DEFAULTS.get(r.name))
        if value is None or isinstance(value, bool):
            off.append(r.name)
            continue
        if r.choices:
            if value in r.choices:
                out[r.name] = value
            else:
                off.append(r.name)
        elif isinstance(value, int | float):
            assert r.low is not None and r.high is not None
            clipped = min(max(float(value), r.low), r.high)
            out[r.name] = round(clipped) if r.integer else clipped
            if out[r.name] != value:
                off.append(r.name)
        else:
            off.append(r.name)
    return out, off


class _Matrices:
    """Train/validation QuantileDMatrix, rebuilt only when a trial changes max_bin."""

    def __init__(self, features: Sequence[Feature], ts: TrainingSet) -> None:
        self.ts = ts
        self.kwargs = dmatrix_kwargs(features)
        self.cache: dict[int, tuple[xgb.QuantileDMatrix, xgb.QuantileDMatrix]] = {}

    def get(self, max_bin: int) -> tuple[xgb.QuantileDMatrix, xgb.QuantileDMatrix]:
        if max_bin not in self.cache:
            t, v = self.ts.train, self.ts.valid
            dtrain = uninterrupted(xgb.QuantileDMatrix, t.X, t.y, max_bin=max_bin,
                                   **self.kwargs)
            dvalid = uninterrupted(xgb.QuantileDMatrix, v.X, v.y, ref=dtrain, max_bin=max_bin,
                                   **self.kwargs)
            self.cache = {max_bin: (dtrain, dvalid)}  # keep one pair: memory stays bounded
        return self.cache[max_bin]


class _Folds:
    """tune.cv's folds of the non-holdout rows and each fold's (train, held-out) QuantileDMatrix.

    The rows are put in canonical order and dealt into folds as the kfold evaluation does, so
    `split: {method: kfold, folds: k}` and `tune.cv: k` with the same seed use the same folds.
    """

    def __init__(self, features: Sequence[Feature], ts: TrainingSet, k: int, seed: int) -> None:
        X = np.concatenate([ts.train.X, ts.valid.X])
        y = np.concatenate([ts.train.y, ts.valid.y])
        order = canonical_order(X, y)
        self.X, self.y = X[order], y[order]
        self.k = k
        self.fold = fold_ids(len(self.y), k, seed)
        self.kwargs = dmatrix_kwargs(features)
        self.keep = k * self.X.size <= CV_CACHE_CELLS
        self.cache: dict[tuple[int, int], tuple[xgb.QuantileDMatrix, xgb.QuantileDMatrix]] = {}

    def get(self, f: int, max_bin: int) -> tuple[xgb.QuantileDMatrix, xgb.QuantileDMatrix]:
        if (f, max_bin) in self.cache:
            return self.cache[(f, max_bin)]
        fit, held = self.fold != f, self.fold == f
        dtrain = uninterrupted(xgb.QuantileDMatrix, self.X[fit], self.y[fit],
                               max_bin=max_bin, **self.kwargs)
        dheld = uninterrupted(xgb.QuantileDMatrix, self.X[held], self.y[held], ref=dtrain,
                              max_bin=max_bin, **self.kwargs)
        if self.keep:
            if any(b != max_bin for _, b in self.cache):
                self.cache = {}  # one max_bin at a time: memory stays bounded
            self.cache[(f, max_bin)] = (dtrain, dheld)
        return dtrain, dheld


def cv_pruner() -> optuna.pruners.BasePruner:
    """tune.cv: prunes a trial whose running mean after a fold is in the worst quarter of the
    earlier trials' running means after the same fold (from the first fold on: the folds are
    the same rows for every trial, so fold 1 compares like with like)."""
    return optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=0)


def pruner() -> optuna.pruners.BasePruner:
    """Prunes a trial whose validation metric is in the worst quarter of the earlier trials
    at the same round.

    Less eager than the median: slow learners (small eta) start behind and would otherwise
    be cut before they catch up.
    """
    # Optuna keeps the best `percentile` percent whatever the direction.
    return optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=20)


def _sampler(seed: int) -> optuna.samplers.BaseSampler:
    """TPE, multivariate: eta and max_depth (and the rest) are modelled jointly, not one by
    one (Optuna flags the option experimental; its warning is not for pyml's users)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def run_study(con: duckdb.DuckDBPyConnection, spec: ModelSpec, ts: TrainingSet, log: Log
              ) -> Tuning:
    """Search the spec's space on train/validation, record the trials, fit the spec's params."""
    from optuna_integration import XGBoostPruningCallback

    if len(ts.valid.y) == 0:
        raise DataError(f"{spec.where}: tuning needs a validation part to stop early on and "
                        "to compare trials: set split.validation_fraction above 0")
    tspec = spec.tune or TuneSpec()
    metric, direction = tune_metric(tspec, spec.task)
    space = tspec.space or default_space(spec.task)
    base = spec_params(spec, len(ts.target.classes), eval_metric=metric)
    if not tspec.space and any(f.kind == "categorical" for f in ts.features):
        space = default_space(spec.task, categorical=True)
    k = tspec.cv
    mats = _Matrices(ts.features, ts)
    folds = _Folds(ts.features, ts, k, spec.split.seed) if k else None
    early = spec.early_stopping_rounds or TRIAL_EARLY_STOPPING
    study_id = f"{spec.name}-{datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    # ERROR: Optuna's own warning for a failed trial comes with a traceback (a Ctrl-C's too);
    # pyml's progress line says the trial failed, and with XGBoost's reason.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        study_name=study_id,
        direction=optuna.study.StudyDirection.MAXIMIZE if direction == "maximize"
        else optuna.study.StudyDirection.MINIMIZE,
        sampler=_sampler(tspec.seed),
        pruner=cv_pruner() if k else pruner())
    first, off = _first_trial(space, base)
    study.enqueue_trial(first)
    starts: dict[int, tuple[datetime, float]] = {}
    errors: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        starts[trial.number] = (datetime.now().replace(microsecond=0), time.perf_counter())
        params = {**base, **{r.name: _suggest(trial, r) for r in space}}
        if folds is not None:
            return _cv_trial(trial, params, folds, spec.num_boost_round, early, errors)
        dtrain, dvalid = mats.get(int(params.get("max_bin", 256)))
        try:
            booster = xgb.train(
                params, dtrain, num_boost_round=spec.num_boost_round,
                evals=[(dvalid, "validation")], early_stopping_rounds=early,
                verbose_eval=False,
                callbacks=[XGBoostPruningCallback(trial, f"validation-{metric}")])
        except xgb.core.XGBoostError as e:
            errors.append(str(e).strip().splitlines()[0])
            raise
        trial.set_user_attr("best_round", int(booster.best_iteration))
        return float(booster.best_score)

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        state = STATES.get(trial.state, trial.state.name.lower())
        value = f"{metric} {trial.value:.5f}, " if trial.value is not None else ""
        ran, std = _fold_stats(trial)
        reached = _last(trial)
        if state == "fail" and errors:
            value = f"XGBoost said {errors[-1]}, "
        if ran and reached is not None:  # tune.cv: the mean (running, if pruned) and spread
            value = (f"cv {metric} {reached:.5f}"
                     + (f" \u00b1 {std:.5f}" if std is not None else "")
                     + f" over {ran}/{k} folds, ")
        try:
            best = f"best {study.best_value:.5f} (trial {number(study.best_trial)})"
        except ValueError:
            best = "no complete trial yet"
        log(f"[{spec.name}] trial {number(trial)}/{tspec.n_trials}: {value}{state} in "
            f"{time.perf_counter() - starts[trial.number][1]:.1f}s; {best}")

    log(f"[{spec.name}] tuning (study {study_id}): up to {tspec.n_trials} trials"
        + (f" or {tspec.timeout:g}s" if tspec.timeout else "")
        + f", {direction} "
        + (f"{k}-fold cv mean {metric} on the {len(folds.y):,} non-holdout rows" if folds
           else f"validation {metric}")
        + f" over {', '.join(r.name for r in space)}")
    started = time.perf_counter()
    study.optimize(objective, n_trials=tspec.n_trials, timeout=tspec.timeout,
                   catch=(xgb.core.XGBoostError,), callbacks=[progress])
    seconds = time.perf_counter() - started
    _record(con, spec.name, study_id, study, metric, direction, starts)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        detail = f": XGBoost said {errors[0]}" if errors else ""
        raise SpecError(f"{spec.where}: no tuning trial finished{detail}; fix tune.space or "
                        "give the study more time (tune.timeout)")
    best = study.best_trial
    counts = {s: sum(1 for t in study.trials if STATES.get(t.state) == s) for s in
              ("complete", "pruned", "fail")}
    # Trial 1 replays the spec's values; one outside the space (or unknown) was sampled.
    sampled = {n: study.trials[0].params.get(n) for n in off}
    why = "; ".join(f"the spec's {n} {base[n]} is not in tune.space" if n in spec.params
                    else f"pyml's default {n} {base[n]} is not in tune.space"
                    if n in DEFAULT_PARAMS  # it named XGBoost's 0.3 for pyml's 0.1 (an audit)
                    else f"XGBoost's default {n} {XGB_DEFAULTS[n]} is not in tune.space"
                    if n in XGB_DEFAULTS else f"XGBoost's default {n} is unknown to pyml"
                    for n in off)
    unlike = f" except {json.dumps(sampled, sort_keys=True)} ({why})" if off else ""
    summary = (f"tuned by study {study_id}: {len(study.trials)} trials ({counts['complete']} "
               f"complete, {counts['pruned']} pruned, {counts['fail']} failed) in "
               f"{seconds:.0f}s, best {f'{k}-fold cv' if k else 'validation'} {metric} "
               f"{best.value:.5f} (trial "
               f"{number(best)}; trial 1 = spec params"
               + (f" {study.trials[0].value:.5f}" if study.trials[0].value is not None else "")
               + unlike
               + f"), params {json.dumps(best.params, sort_keys=True)}")
    log(f"[{spec.name}] {summary}")
    tuned = replace(spec, params={**spec.params, **best.params, "eval_metric": metric})
    quiet: Log = lambda _: None  # noqa: E731
    defaults, _, _ = fit_in_memory(spec, ts, quiet)
    holdout = np.asarray(defaults.inplace_predict(ts.test.X), dtype=np.float64)
    return Tuning(tuned, study_id, summary, holdout, spec.threshold)


def _cv_trial(trial: optuna.Trial, params: dict[str, Any], folds: _Folds, rounds: int,
              early: int, errors: list[str]) -> float:
    """One tune.cv trial: each fold early-stopped on its held-out rows; the running mean of
    the folds' best values is reported after each fold (the pruner's step is the fold)."""
    values: list[float] = []
    best_rounds: list[int] = []
    for f in range(folds.k):
        dtrain, dheld = folds.get(f, int(params.get("max_bin", 256)))
        try:
            booster = xgb.train(params, dtrain, num_boost_round=rounds,
                                evals=[(dheld, "validation")], early_stopping_rounds=early,
                                verbose_eval=False)
        except xgb.core.XGBoostError as e:
            errors.append(str(e).strip().splitlines()[0])
            raise
        values.append(float(booster.best_score))
        best_rounds.append(int(booster.best_iteration))
        trial.set_user_attr("fold_values", values)  # kept for ml.trials if pruned below
        trial.report(float(np.mean(values)), f)
        # Between folds only: a trial that ran every fold has its result, and pruning it then
        # would throw that away (the reordered folds of this session met it in a test).
        if f < folds.k - 1 and trial.should_prune():
            raise optuna.TrialPruned(f"fold {f + 1}: running mean {np.mean(values):.5f}")
    trial.set_user_attr("best_round", int(np.median(best_rounds)))
    return float(np.mean(values))


def _fold_stats(trial: optuna.trial.FrozenTrial) -> tuple[int | None, float | None]:
    """tune.cv: (folds run, standard deviation of their values); (None, None) without cv."""
    values = trial.user_attrs.get("fold_values")
    if not values:
        return None, None
    return len(values), float(np.std(values, ddof=1)) if len(values) > 1 else None


def _last(trial: optuna.trial.FrozenTrial) -> float | None:
    """The value a trial reached: its result, else its last reported (pruned) value."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return trial.value
    return (trial.intermediate_values[max(trial.intermediate_values)]
            if trial.intermediate_values else None)


def _record(con: duckdb.DuckDBPyConnection, name: str, study_id: str, study: optuna.Study,
            metric: str, direction: str, starts: dict[int, tuple[datetime, float]]) -> None:
    """Every trial of the study as a row of ml.trials (one transaction)."""
    rows = []
    for t in study.trials:
        started = starts.get(t.number, (datetime.now().replace(microsecond=0), 0.0))[0]
        seconds = (t.duration.total_seconds() if t.duration is not None else 0.0)
        folds, std = _fold_stats(t)
        rows.append(Trial(name, study_id, number(t), None, dict(t.params), metric, direction,
                          _last(t), t.user_attrs.get("best_round"),
                          STATES.get(t.state, t.state.name.lower()), seconds, started,
                          folds, std))
    record_trials(con, rows)
