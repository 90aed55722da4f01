"""Everything `pyml train` learns about a new version besides the booster itself.

Called once per training run, after the fit, on the rows already in memory:

- holdout metrics (scikit-learn) beside their baselines, each with a 95% bootstrap interval;
- for `split: {method: kfold}`, the mean and standard deviation of each metric over the
  folds (rows with split 'cv');
- binary: a calibration table, a cumulative lift table and the ROC / PR curves;
  regression: a sample of (predicted, residual) pairs;
- mean |SHAP| per feature on the holdout (beside XGBoost's gain / cover / weight);
- the training snapshot that `pyml drift` compares with.

All of it is written in the same transaction as the version (see `Evaluation.write`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import duckdb
import numpy as np
import xgboost as xgb
from sklearn import metrics as skm

from pyml.data.encode import Feature, dmatrix_kwargs
from pyml.data.trainset import TrainingSet
from pyml.dbt.spec import ModelSpec
from pyml.interrupts import uninterrupted
from pyml.modelling import bootstrap
from pyml.modelling.cbpe import fit_calibrator
from pyml.modelling.drift_stats import Snapshot, snapshot
from pyml.modelling.metrics import Metric, evaluate, label_base
from pyml.modelling.shap import mean_abs_shap
from pyml.store.calibrators import Calibrator, write_calibrator
from pyml.store.drift import write_snapshots
from pyml.store.evaluation import write_evaluation

Log = Callable[[str], None]
CALIBRATION_BINS = 10  # equal-width probability bins
LIFT_GROUPS = 10  # deciles of the score
CURVE_POINTS = 200  # ROC / PR points kept (enough to draw, small to store)
RESIDUAL_POINTS = 2000  # regression (predicted, residual) pairs kept for the report

@dataclass(frozen=True)
class Evaluation:
    """What a training run stores besides the model row."""

    metrics: tuple[Metric, ...]  # holdout (with intervals) and cv rows
    importance: tuple[tuple[str, str, float], ...]  # extra ml.feature_importance rows
    calibration: tuple[tuple[Any, ...], ...]  # (bin, low, high, mean_pred, observed, count)
    lift: tuple[tuple[Any, ...], ...]  # (decile, n, positive_rate, cum_capture, lift)
    curves: tuple[tuple[Any, ...], ...]  # (curve, point, x, y, threshold)
    snapshots: tuple[Snapshot, ...]  # training distribution per feature
    calibrator: Calibrator | None = None  # binary: holdout isotonic map (pyml.modelling.cbpe)

    def write(self, con: duckdb.DuckDBPyConnection, name: str, version: int) -> None:
        """Insert the tables' rows for `name` v`version` (inside the caller's transaction)."""
        write_evaluation(con, name, version, self.calibration, self.lift, self.curves)
        write_snapshots(con, name, version, self.snapshots)
        if self.calibrator is not None:
            write_calibrator(con, name, version, self.calibrator)


def with_intervals(metrics: Sequence[Metric], task: str, y: np.ndarray, pred: np.ndarray,
                   threshold: float, n_boot: int = bootstrap.N_BOOT,
                   max_rows: int = bootstrap.MAX_ROWS) -> list[Metric]:
    """The metrics with their 95% percentile bootstrap intervals filled in.

    On a holdout larger than `max_rows` the replicates are drawn from a seeded random sample
    of m rows (`max_rows`, or more when a class is rare: bootstrap.sample), and each interval
    is rescaled to the full holdout around the full holdout's estimate: theta_n + (q -
    theta_m) * sqrt(m / n), cut to the metric's range. The spread of these metrics shrinks as
    1/sqrt(n), so this keeps the interval honest while training on millions of rows costs
    seconds, not minutes.
    """
    rows, scale = bootstrap.sample(len(y), max_rows, rarest=bootstrap.rarest_class(task, y))
    if rows is not None:
        y, pred = y[rows], pred[rows]
    centre: dict[str, float] = {}
    fn = bootstrap.metric_function(task, y, pred, threshold)
    if scale != 1.0:
        centre = fn(np.ones(len(y)))
    ci = bootstrap.intervals(fn, len(y), n_boot=n_boot)
    out = []
    for m in metrics:
        lo_hi = ci.get(m.name)
        if lo_hi is not None and math.isfinite(m.value):
            if scale != 1.0 and math.isfinite(centre.get(m.name, math.nan)):
                c = centre[m.name]
                lo_hi = bootstrap.within_range(m.name, m.value + (lo_hi[0] - c) * scale,
                                               m.value + (lo_hi[1] - c) * scale)
            m = replace(m, ci_low=lo_hi[0], ci_high=lo_hi[1])
        out.append(m)
    return out


def probabilities(raw: Any) -> np.ndarray:
    """Booster output as float64; multiclass rows renormalised (float32 sums drift by ~1e-7)."""
    pred = np.asarray(raw, dtype=np.float64)
    if pred.ndim == 2:
        pred = pred / pred.sum(axis=1, keepdims=True)
    return pred


def fold_ids(n: int, k: int, seed: int) -> np.ndarray:
    """The fold (0 .. k-1) of each of n rows in canonical order: a seeded permutation dealt
    round-robin. The kfold evaluation and `tune.cv` share it, so with the same seed and k
    their folds are the same rows."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return fold


def cross_validate(spec: ModelSpec, params: dict[str, Any], features: Sequence[Feature],
                   X: np.ndarray, y: np.ndarray, rows: np.ndarray, rounds: int,
                   log: Log) -> list[Metric]:
    """k-fold metrics on the non-holdout `rows`: mean over folds (value) and std (std).

    Folds are a seeded permutation of `rows` (in canonical order). Each fold's
    model is fitted with the number of rounds early stopping chose for the final model, so
    the folds measure that model's recipe; the holdout stays untouched.
    """
    k = spec.split.folds
    fold = fold_ids(len(rows), k, spec.split.seed)
    kwargs = dmatrix_kwargs(features)
    per_fold: dict[str, list[Metric]] = {}
    scored = 0
    for f in range(k):
        fit, held = rows[fold != f], rows[fold == f]
        if spec.task != "regression" and len(np.unique(y[fit])) < len(np.unique(y)):
            # Said, and its rows left out of n_rows: skipped silently, the fold that held a
            # rare class's rows went unscored and cv showed accuracy 1.0000 (an audit).
            log(f"[{spec.name}] cv fold {f + 1}/{k} skipped: its fit part lacks a class "
                f"that the other folds hold (too few rows of it for {k} folds); the cv "
                f"figures leave out its {len(held):,} rows")
            continue
        scored += len(held)
        dtrain = uninterrupted(xgb.QuantileDMatrix, X[fit], y[fit], **kwargs)
        booster = xgb.train(params, dtrain, num_boost_round=max(rounds, 1))
        pred = probabilities(booster.inplace_predict(X[held]))
        base = label_base(spec.task, y[fit], pred.shape[1] if pred.ndim == 2 else 2)
        for m in evaluate(spec.task, y[held], pred, base, spec.threshold, split="cv"):
            per_fold.setdefault(m.name, []).append(m)
        log(f"[{spec.name}] cv fold {f + 1}/{k}: {len(fit):,} fit / {len(held):,} held out")
    return fold_summary(per_fold, scored)


def fold_summary(per_fold: dict[str, list[Metric]], n_rows: int) -> list[Metric]:
    """The 'cv' rows: each metric's mean over the folds where it is finite, and its std."""
    out = []
    for name, ms in per_fold.items():
        values = np.array([m.value for m in ms], dtype=np.float64)
        ok = values[np.isfinite(values)]
        if len(ok) == 0:
            continue
        bases = [m.baseline for m in ms if m.baseline is not None]
        out.append(Metric("cv", name, float(ok.mean()),
                          float(np.mean(bases)) if bases else None, n_rows,
                          std=float(ok.std(ddof=1)) if len(ok) > 1 else None))
    return out


def calibration(y: np.ndarray, p: np.ndarray) -> list[tuple[Any, ...]]:
    """Equal-width probability bins: mean predicted vs observed positive rate (non-empty)."""
    b = np.minimum((p * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    out = []
    for i in range(CALIBRATION_BINS):
        mask = b == i
        n = int(mask.sum())
        if n:
            out.append((i + 1, i / CALIBRATION_BINS, (i + 1) / CALIBRATION_BINS,
                        float(p[mask].mean()), float(y[mask].mean()), n))
    return out


def lift(y: np.ndarray, p: np.ndarray) -> list[tuple[Any, ...]]:
    """Deciles by score (highest first): share of all positives captured so far, and lift.

    Rows with the same score cannot be ranked: a decile boundary that cuts such a group takes
    the group's positives pro rata (what any order of the tied rows gives on average). Sorted
    with the tied rows in read order, the table depended on that order: a model that scores
    every row alike stored a top-decile lift of 4.7 in memory and 0.0 from disk (an audit).
    """
    total_pos = float(y.sum())
    n = len(y)
    if total_pos == 0 or n < LIFT_GROUPS:
        return []
    rate = total_pos / n
    _, group = np.unique(-np.asarray(p, dtype=np.float64), return_inverse=True)
    group_rows = np.bincount(group).astype(np.float64)
    rows_before = np.concatenate([[0.0], np.cumsum(group_rows)])
    pos_before = np.concatenate([[0.0], np.cumsum(np.bincount(group, weights=y))])

    def captured_at(cut: int) -> float:
        """Positives among the `cut` highest-scored rows (a cut group pro rata)."""
        if cut >= n:
            return total_pos
        g = int(np.searchsorted(rows_before, cut, side="right")) - 1
        share = (cut - rows_before[g]) / group_rows[g]
        return float(pos_before[g] + share * (pos_before[g + 1] - pos_before[g]))

    out, seen, before = [], 0, 0.0
    for d, size in enumerate(len(part) for part in np.array_split(np.empty(n), LIFT_GROUPS)):
        seen += size
        captured = captured_at(seen)
        out.append((d + 1, size, (captured - before) / size, captured / total_pos,
                    (captured / seen) / rate))
        before = captured
    return out


def _thin(n: int, keep: int) -> np.ndarray:
    """Indices of at most `keep` points spread evenly over n, first and last included."""
    if n <= keep:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, keep).round().astype(np.int64))


def curves(task: str, y: np.ndarray, pred: np.ndarray) -> list[tuple[Any, ...]]:
    """ROC and PR points (binary) or a sample of (predicted, residual) pairs (regression)."""
    out: list[tuple[Any, ...]] = []
    if task == "binary" and len(np.unique(y)) == 2:
        fpr, tpr, thr = skm.roc_curve(y, pred)
        for i, j in enumerate(_thin(len(fpr), CURVE_POINTS)):
            out.append(("roc", i, float(fpr[j]), float(tpr[j]),
                        float(thr[j]) if np.isfinite(thr[j]) else None))
        precision, recall, thr = skm.precision_recall_curve(y, pred)
        for i, j in enumerate(_thin(len(precision), CURVE_POINTS)):
            out.append(("pr", i, float(recall[j]), float(precision[j]),
                        float(thr[j]) if j < len(thr) else None))
    elif task == "regression":
        rows = np.arange(len(y))
        if len(rows) > RESIDUAL_POINTS:
            rows = np.sort(np.random.default_rng(0).choice(len(y), RESIDUAL_POINTS,
                                                           replace=False))
        for i, j in enumerate(rows):
            out.append(("residuals", i, float(pred[j]), float(y[j] - pred[j]), None))
    return out


def canonical_order(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A row order that depends on the rows' contents only, not on how they were read.

    Sorting by a random projection of (X, y) makes the bootstrap, the folds and the samples
    below reproducible. A missing value adds its own weight (and its value counts as 0): a
    huge stand-in for NaN drowned every other value of the row in float64, so rows with the
    same NULL pattern tied and kept their read order (found by an audit).
    """
    if len(y) == 0:
        return np.arange(0)
    k = X.shape[1]
    w = np.random.default_rng(7).standard_normal(2 * k + 1)
    missing = np.isnan(X)
    filled = np.where(missing, 0.0, X).astype(np.float64)
    return np.argsort(filled @ w[:k] + missing @ w[k:2 * k] + y * w[-1], kind="stable")


def evaluate_version(spec: ModelSpec, booster: xgb.Booster, params: dict[str, Any],
                     ts: TrainingSet, log: Log, cv: Sequence[Metric] | None = None
                     ) -> Evaluation:
    """Metrics, intervals, cv, calibration, lift, curves, SHAP importance and the snapshot.

    `cv`: the 'cv' rows when the caller has them (final_fit cv_average's folds); else
    split.method kfold cross-validates here."""
    order = canonical_order(ts.test.X, ts.test.y)
    X_test, y_test = ts.test.X[order], ts.test.y[order]
    pred = probabilities(booster.inplace_predict(X_test))
    if cv is None and spec.split.method == "kfold":
        X = np.concatenate([ts.train.X, ts.valid.X])
        y = np.concatenate([ts.train.y, ts.valid.y])
        rows = canonical_order(X, y)
        cv = cross_validate(spec, params, ts.features, X, y, rows,
                            booster.num_boosted_rounds(), log)
    base = label_base(spec.task, ts.train.y, len(ts.target.classes))
    return evaluate_predictions(spec, booster, ts.features, y_test, pred, base, X_test,
                                ts.train.X, cv or ())


def evaluate_predictions(spec: ModelSpec, booster: xgb.Booster, features: Sequence[Feature],
                         y_test: np.ndarray, pred: np.ndarray, base: np.ndarray,
                         shap_rows: np.ndarray, train_rows: np.ndarray,
                         cv: Sequence[Metric] = ()) -> Evaluation:
    """Everything stored about a version from its holdout labels and predictions (in a
    canonical order), the training labels' `base` (pyml.modelling.metrics.label_base), holdout rows
    for mean |SHAP| and training rows for the drift snapshot."""
    metrics = evaluate(spec.task, y_test, pred, base, spec.threshold)
    metrics = with_intervals(metrics, spec.task, y_test, pred, spec.threshold)
    binary = spec.task == "binary"
    return Evaluation(
        metrics=tuple(metrics) + tuple(cv),
        importance=tuple(mean_abs_shap(booster, features, shap_rows)),
        calibration=tuple(calibration(y_test, pred)) if binary else (),
        lift=tuple(lift(y_test, pred)) if binary else (),
        curves=tuple(curves(spec.task, y_test, pred)),
        snapshots=tuple(snapshot(features, train_rows)),
        # From the evaluated model's holdout; one class there calibrates nothing.
        calibrator=(fit_calibrator(pred, y_test, spec.threshold)
                    if binary and len(np.unique(y_test)) == 2 else None),
    )


def prediction_order(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """A canonical row order from labels and predictions alone (for a holdout that was
    streamed, not kept): rows equal in both are interchangeable, so the order of the
    resulting arrays does not depend on the order DuckDB returned the rows in."""
    keys = [y] + ([pred[:, j] for j in range(pred.shape[1] - 1, -1, -1)] if pred.ndim == 2
                  else [pred])
    return np.lexsort(keys)
