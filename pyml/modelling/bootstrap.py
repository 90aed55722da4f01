"""95% bootstrap confidence intervals for the holdout metrics.

A bootstrap replicate draws n rows with replacement; here it is a vector of integer weights
(how often each row was drawn), and every metric is computed from weighted sums over rows
sorted once by score. That is exactly the metric of the resampled rows (the tests check it
against scikit-learn on the resampled rows), but costs a few vectorised passes per replicate
instead of a sort, so 200+ replicates stay cheap on a million-row holdout.

The point estimates themselves come from scikit-learn (`pyml.modelling.metrics.evaluate`); only the
interval comes from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

N_BOOT = 200  # resamples; percentile intervals need a couple of hundred to be stable
LEVEL = 0.95  # two-sided coverage of the interval
SEED = 20240601  # fixed so that retraining the same data gives the same intervals
MAX_ROWS = 20_000  # above this many rows, replicate a seeded sample and rescale (`sample`)
MIN_CLASS_ROWS = 500  # ... a sample that holds about this many rows of the rarest class
# The range of each metric's value: an interval rescaled from a sample is cut to it.
RANGES = {**dict.fromkeys(("auc", "pr_auc", "brier", "accuracy", "precision", "recall", "f1",
                           "best_f1", "best_f1_threshold", "positive_rate", "f1_macro"),
                          (0.0, 1.0)),
          **dict.fromkeys(("log_loss", "rmse", "mae", "mape"), (0.0, math.inf)),
          "r2": (-math.inf, 1.0)}

WeightedMetrics = Callable[[np.ndarray], dict[str, float]]


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """A dot product without BLAS: OpenBLAS splits long vectors across threads, and on a
    busy machine waking them costs milliseconds per call (measured: 9 ms instead of 0.01 ms
    for 20,000 rows), which a bootstrap pays hundreds of times."""
    return float(np.multiply(a, b).sum())


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> WeightedMetrics:
    """A function of row weights -> every binary metric pyml reports, as scikit-learn does.

    Ties in the score are one threshold, as in scikit-learn's curves; `threshold` is the
    spec's cut-off (positive when p >= threshold).
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    ps = p[order]
    ys = y[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    values = ps[starts]  # distinct scores, descending
    k_at = int(np.count_nonzero(values >= threshold))  # groups predicted positive
    eps = np.finfo(np.float64).eps
    # Per-row losses, as sklearn computes them (clip at machine epsilon).
    row_ll = -np.where(y == 1, np.log(np.clip(p, eps, 1 - eps)),
                       np.log(np.clip(1 - p, eps, 1 - eps)))
    row_brier = (p - y) ** 2

    def compute(w: np.ndarray) -> dict[str, float]:
        ws = w[order]
        pos = np.add.reduceat(ws * ys, starts)
        neg = np.add.reduceat(ws * (1 - ys), starts)
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        n_pos, n_neg = float(tp[-1]), float(fp[-1])
        total = n_pos + n_neg
        both = n_pos > 0 and n_neg > 0
        out = {"positive_rate": _div(n_pos, total),
               "log_loss": _div(_dot(w, row_ll), total),
               "brier": _div(_dot(w, row_brier), total)}
        # A positive beats every negative scored lower and ties half of those scored equal.
        out["auc"] = (_dot(pos, n_neg - fp + 0.5 * neg) / (n_pos * n_neg)
                      if both else float("nan"))
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            f1 = np.where(tp + fp + n_pos > 0, 2 * tp / (tp + fp + n_pos), 0.0)
        out["pr_auc"] = _dot(pos, precision) / n_pos if both else float("nan")
        best = int(np.argmax(f1))  # first maximum = the highest threshold among ties
        out["best_f1"] = float(f1[best])
        out["best_f1_threshold"] = float(values[best])
        tp_t = float(tp[k_at - 1]) if k_at else 0.0
        fp_t = float(fp[k_at - 1]) if k_at else 0.0
        out["accuracy"] = _div(tp_t + n_neg - fp_t, total)
        out["precision"] = tp_t / (tp_t + fp_t) if tp_t + fp_t else 0.0
        out["recall"] = tp_t / n_pos if n_pos else 0.0
        out["f1"] = 2 * tp_t / (tp_t + fp_t + n_pos) if tp_t + fp_t + n_pos else 0.0
        return out

    return compute


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> WeightedMetrics:
    """A function of row weights -> RMSE, MAE, R² and (without zero targets) MAPE."""
    y = np.asarray(y, dtype=np.float64)
    err = np.asarray(pred, dtype=np.float64) - y
    sq, ab = err**2, np.abs(err)
    ape = ab / np.abs(y) if np.all(y != 0) else None

    def compute(w: np.ndarray) -> dict[str, float]:
        total = float(w.sum())
        mean = _div(_dot(w, y), total)
        ss_res, ss_tot = _dot(w, sq), _dot(w, (y - mean) ** 2)
        out = {"rmse": float(np.sqrt(_div(ss_res, total))), "mae": _div(_dot(w, ab), total),
               "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")}
        if ape is not None:
            out["mape"] = _div(_dot(w, ape), total)
        return out

    return compute


def multiclass_metrics(y: np.ndarray, prob: np.ndarray) -> WeightedMetrics:
    """A function of row weights -> log loss, accuracy and macro F1 (over the classes the
    resampled rows' labels hold, as pyml.modelling.metrics)."""
    yi = np.asarray(y).astype(np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    k = prob.shape[1]
    eps = np.finfo(np.float64).eps
    row_ll = -np.log(np.clip(prob[np.arange(len(yi)), yi], eps, 1 - eps))
    yhat = prob.argmax(axis=1)
    correct = (yhat == yi).astype(np.float64)
    cell = yi * k + yhat

    def compute(w: np.ndarray) -> dict[str, float]:
        total = float(w.sum())
        conf = np.bincount(cell, weights=w, minlength=k * k).reshape(k, k)
        tp = np.diag(conf)
        actual, predicted = conf.sum(axis=1), conf.sum(axis=0)
        present = actual > 0  # the classes of the labels (metrics.evaluate's `labels=`)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(actual + predicted > 0, 2 * tp / (actual + predicted), 0.0)
        return {"log_loss": _div(_dot(w, row_ll), total),
                "accuracy": _div(_dot(w, correct), total),
                "f1_macro": float(f1[present].mean()) if present.any() else float("nan")}

    return compute


def metric_function(task: str, y: np.ndarray, pred: np.ndarray,
                    threshold: float = 0.5) -> WeightedMetrics:
    """The weighted-metrics function of a task."""
    if task == "binary":
        return binary_metrics(y, pred, threshold)
    if task == "multiclass":
        return multiclass_metrics(y, pred)
    return regression_metrics(y, pred)


def sample(n: int, max_rows: int = MAX_ROWS, seed: int = SEED, rarest: int | None = None
           ) -> tuple[np.ndarray | None, float]:
    """Rows to replicate when a holdout is large, and how to rescale what they give.

    Above m rows: a seeded sample of m row indexes (sorted) and the factor sqrt(m / n) that
    carries an interval from the sample to all n rows around the full estimate,
    theta_n + (q - theta_m) * factor (the spread of these metrics shrinks as 1/sqrt(n)).
    Otherwise (None, 1.0): replicate every row. m is `max_rows`, or more for a classifier
    whose rarest class has only `rarest` rows: enough to hold about MIN_CLASS_ROWS of them.
    A 20,000-row sample of a holdout with 9 positives in 49,739 rows held three or four, and
    the AUC interval rescaled from it was [0.539, 0.545] where every row gives [0.37, 0.71]
    (an audit): with a handful of a class the spread does not shrink as 1/sqrt(n).
    """
    m = max_rows
    if rarest:
        m = max(m, math.ceil(MIN_CLASS_ROWS * n / rarest))
    if n <= m:
        return None, 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
    return rows, math.sqrt(m / n)


def rarest_class(task: str, y: np.ndarray) -> int | None:
    """Rows of the least frequent label among `y` (a classifier's), None for regression."""
    if task == "regression" or len(y) == 0:
        return None
    return int(np.unique(y, return_counts=True)[1].min())


def within_range(name: str, low: float, high: float) -> tuple[float, float]:
    """An interval cut to the metric's range (a rescaled one can leave it: a best-F1
    threshold interval reached 1.28)."""
    lo, hi = RANGES.get(name, (-math.inf, math.inf))
    return min(max(low, lo), hi), min(max(high, lo), hi)


def intervals(fn: WeightedMetrics, n: int, n_boot: int = N_BOOT, seed: int = SEED,
              level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every metric `fn` returns, from `n_boot` resamples.

    A metric undefined in more than half of the resamples (e.g. AUC on a holdout with a
    handful of positives) gets no interval rather than a misleading one.
    """
    if n < 2:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        for name, value in fn(w).items():
            draws.setdefault(name, []).append(value)
    alpha = (1 - level) / 2
    out = {}
    for name, values in draws.items():
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        if len(arr) * 2 > n_boot:
            lo, hi = np.quantile(arr, [alpha, 1 - alpha])
            out[name] = (float(lo), float(hi))
    return out
