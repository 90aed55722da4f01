"""The XGBoost fit that `pyml train` and `pyml tune` share.

Train fits the version's booster with it (in memory or from disk), tune fits the spec's own
parameters with it to compare the tuned ones against, and both build their parameters with
`spec_params`, so a trial, the final fit and the comparison fit mean the same thing by the
same spec.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xgboost as xgb

from pyml.data.encode import Feature, dmatrix_kwargs
from pyml.data.trainset import Part, TrainingSet
from pyml.dbt.spec import DEFAULT_PARAMS, ModelSpec
from pyml.errors import DataError, SpecError
from pyml.interrupts import uninterrupted
from pyml.tasks import booster_params

Log = Callable[[str], None]
# Builds the train (and, if asked, validation) DMatrix from XGBoost's feature kwargs.
MakeData = Callable[[dict[str, Any], bool], "tuple[xgb.DMatrix, xgb.DMatrix | None]"]


def spec_params(spec: ModelSpec, n_classes: int, eval_metric: str | None = None
                ) -> dict[str, Any]:
    """The booster parameters of a spec: pyml's defaults, the spec's `params`, the task's."""
    return booster_params(spec.task, {**DEFAULT_PARAMS, **spec.params}, n_classes, eval_metric)


def bins(params: dict[str, Any]) -> dict[str, Any]:
    """The QuantileDMatrix argument a `max_bin` parameter needs: XGBoost refuses a booster
    whose max_bin differs from its matrix's (every train with `max_bin` in params failed,
    blamed on the spec: an audit)."""
    return {"max_bin": int(params["max_bin"])} if "max_bin" in params else {}


_UNUSED = re.compile(r"Parameters: \{(.*?)\} (?:are|is) not used")
PARAMETER_DOCS = "https://xgboost.readthedocs.io/en/stable/parameter.html"


def check_params(spec: ModelSpec) -> None:
    """Refuse spec `params` (and tune.space names) that XGBoost would not use: a misspelt
    parameter (`max_depht`) otherwise trains with the default and only warns. One boosting
    round on four rows with the spec's parameters, before any data is read; XGBoost names
    the parameters it did not use, and those the spec set are the error."""
    given = [*spec.params, *(r.name for r in spec.tune.space)] if spec.tune else [*spec.params]
    if not given:
        return
    tried = {r.name: r.low if r.low is not None else r.choices[0] for r in spec.tune.space
             if r.low is not None or r.choices} if spec.tune else {}
    n_classes = 3 if spec.task == "multiclass" else 2
    params = booster_params(spec.task, {**DEFAULT_PARAMS, **tried, **spec.params}, n_classes)
    params["nthread"] = 1
    X = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    y = np.array([0.0, 1.0, 2.0, 1.0] if n_classes == 3 else [0.0, 1.0, 0.0, 1.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=1)
        except xgb.core.XGBoostError:
            return  # a bad value: the real fit says which, as before
    unused = {name.strip().strip('"') for w in caught
              for m in _UNUSED.finditer(str(w.message)) for name in m.group(1).split(",")}
    wrong = [name for name in dict.fromkeys(given) if name in unused]
    if wrong:
        names = ", ".join(f"'{n}'" for n in wrong)
        raise SpecError(f"{spec.where}: XGBoost does not use the parameter{'s' * (len(wrong) > 1)}"
                        f" {names} (misspelt, or not one of this booster's); fix `params`"
                        f"{' or tune.space' if spec.tune and spec.tune.space else ''} in the "
                        f"spec (parameters: {PARAMETER_DOCS})")


def fit(spec: ModelSpec, features: Sequence[Feature], n_classes: int, seen_classes: int,
        has_valid: bool, data: MakeData, log: Log
        ) -> tuple[xgb.Booster, int | None, dict[str, Any]]:
    """Fit the booster on `data(kwargs, use_valid)`'s train (and validation) DMatrix.

    Returns the booster cut at early stopping's best round, that round, and the parameters.
    """
    params = spec_params(spec, n_classes)
    if spec.task != "regression" and seen_classes < n_classes:
        raise DataError(f"{spec.where}: the training part has only {seen_classes} of "
                        f"{n_classes} classes; adjust the split or add data")
    use_valid = has_valid and spec.early_stopping_rounds is not None
    try:
        dtrain, dvalid = uninterrupted(data, {**dmatrix_kwargs(features), **bins(params)},
                                       use_valid)
        # Only the validation part is evaluated each round (early stopping, progress): a
        # metric over the whole train part every round costs time and tells little.
        evals = [(dvalid, "validation")] if dvalid is not None else []
        booster = xgb.train(
            params, dtrain, num_boost_round=spec.num_boost_round, evals=evals,
            early_stopping_rounds=spec.early_stopping_rounds if use_valid else None,
            verbose_eval=False, callbacks=[Progress(spec.name, spec.num_boost_round, log)],
        )
    except xgb.core.XGBoostError as e:
        first = str(e).strip().splitlines()[0]
        raise SpecError(f"{spec.where}: XGBoost rejected the training parameters: {first}; "
                        "fix `params` in the spec") from e
    booster, best = early_stopped(booster, use_valid)
    return booster, best, params


def early_stopped(booster: xgb.Booster, use_valid: bool) -> tuple[xgb.Booster, int | None]:
    """The booster cut to early stopping's best round (and that round), when it stopped on
    a validation part: every consumer of the stored model (score, SQL, export) then predicts
    with exactly the trees it chose (xgboost.spark too returns every round it ran)."""
    if not use_valid or booster.num_boosted_rounds() == 0:
        return booster, None
    best = int(booster.best_iteration)
    return booster[: best + 1], best


def fit_in_memory(spec: ModelSpec, ts: TrainingSet, log: Log
                  ) -> tuple[xgb.Booster, int | None, dict[str, Any]]:
    """Fit on the in-memory train part (early stopping on the validation part)."""
    seen = len(np.unique(ts.train.y)) if spec.task != "regression" else 0

    def data(kwargs: dict[str, Any], use_valid: bool) -> tuple[xgb.DMatrix, xgb.DMatrix | None]:
        dtrain = xgb.QuantileDMatrix(ts.train.X, ts.train.y, **kwargs)
        dvalid = (xgb.QuantileDMatrix(ts.valid.X, ts.valid.y, ref=dtrain, **kwargs)
                  if use_valid else None)
        return dtrain, dvalid

    return fit(spec, ts.features, len(ts.target.classes), seen, len(ts.valid.y) > 0, data, log)


def refit_rounds(evaluated_rounds: int, best: int | None, n_train: int, n_all: int) -> int:
    """Rounds of the refit on all `n_all` labelled rows: early stopping's rounds on the
    `n_train` train rows scaled by REFIT_SCALE(n_all / n_train) (docs/spec.md says why);
    without early stopping the evaluated fit's rounds, as the spec asked for them."""
    if best is None:
        return evaluated_rounds
    return max(1, round((best + 1) * refit_scale(n_train, n_all)))


def refit_scale(n_train: int, n_all: int) -> float:
    """How many more rounds the refit runs than early stopping chose on the train part: the
    ratio of rows (docs/spec.md, bench/refit_scale.py: at a fixed learning rate the rounds
    that pay grow with the rows, and the ratio did at least as well as 1.0 and its sqrt)."""
    return n_all / max(n_train, 1)


class _Parts(xgb.DataIter):
    """The train, validation and holdout parts as batches of one QuantileDMatrix: no
    concatenated copy of the rows, and the same batches in the same order every run."""

    def __init__(self, parts: Sequence[Part], kwargs: dict[str, Any]) -> None:
        self.parts = [p for p in parts if len(p.y)]
        self.kwargs = {k: v for k, v in kwargs.items() if k != "enable_categorical"}
        self.at = 0
        super().__init__()

    def next(self, input_data: Callable[..., None]) -> bool:
        if self.at == len(self.parts):
            return False
        part = self.parts[self.at]
        input_data(data=part.X, label=part.y, **self.kwargs)
        self.at += 1
        return True

    def reset(self) -> None:
        self.at = 0


def refit_all(spec: ModelSpec, ts: TrainingSet, params: dict[str, Any], rounds: int,
              log: Log) -> xgb.Booster:
    """The evaluated fit's parameters fitted again on every labelled row (train, validation
    and holdout) for `rounds` rounds, without early stopping: the booster that scores."""
    kwargs = dmatrix_kwargs(ts.features)
    try:
        dall = uninterrupted(xgb.QuantileDMatrix, _Parts(ts.parts, kwargs),
                             enable_categorical=kwargs["enable_categorical"], **bins(params))
        return xgb.train(params, dall, num_boost_round=rounds, verbose_eval=False,
                         callbacks=[Progress(spec.name, rounds, log)])
    except xgb.core.XGBoostError as e:
        first = str(e).strip().splitlines()[0]
        raise SpecError(f"{spec.where}: XGBoost failed to refit on all labelled rows: "
                        f"{first}; set final_fit: none in the spec to keep the evaluated "
                        "fit") from e


class Progress(xgb.callback.TrainingCallback):
    """Logs every ~10% of rounds with the latest validation metric."""

    def __init__(self, name: str, rounds: int, log: Log) -> None:
        super().__init__()
        self.name, self.rounds, self.log = name, rounds, log
        self.every = max(1, rounds // 10)
        self.started = time.perf_counter()

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        """Log this round if it is one of the ~10 reported; never stops training."""
        if (epoch + 1) % self.every == 0:
            metric = ""
            for data, scores in evals_log.items():
                for mname, values in scores.items():
                    metric = f", {data} {mname} {values[-1]:.4f}"
            rate = (epoch + 1) / max(time.perf_counter() - self.started, 1e-9)
            self.log(f"[{self.name}] round {epoch + 1}/{self.rounds}{metric} "
                     f"({rate:.0f} rounds/s)")
        return False
