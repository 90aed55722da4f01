"""Two models' predictions on the same holdout rows: one metric each, their difference and a
paired bootstrap interval of that difference.

Used by the promotion policy (challenger vs champion) and by tuning (tuned vs the spec's
parameters). The interval is paired: each bootstrap replicate draws one set of row weights
and computes both models' metric on it, so row-to-row noise common to both cancels, which
two separate per-model intervals would not show. The metric functions are
`pyml.bootstrap`'s weighted versions, which equal scikit-learn's on the resampled rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pyml.errors import PymlError
from pyml.modelling.bootstrap import (
    MAX_ROWS,
    N_BOOT,
    SEED,
    intervals,
    metric_function,
    rarest_class,
    sample,
)
from pyml.tasks import HIGHER_IS_BETTER

# Why a metric has no value on some rows (MetricUndefined's message).
UNDEFINED_WHY = {"mape": " (a target is 0)", "r2": " (the target is constant)",
                 "auc": " (they hold one class only)", "pr_auc": " (they hold one class only)"}


class MetricUndefined(PymlError):
    """The compared metric has no value on the rows (MAPE with a zero target, AUC with one
    class): nothing to compare. It used to be a KeyError traceback from `pyml train`."""


@dataclass(frozen=True)
class Comparison:
    """Model B against model A on the same rows."""

    metric: str  # holdout metric name, as in ml.metrics
    a: float  # A's value (champion / spec defaults)
    b: float  # B's value (challenger / tuned)
    gain: float  # how much better B is (positive = better, whatever the metric's direction)
    ci_low: float | None  # 95% paired bootstrap interval of `gain`
    ci_high: float | None
    n_rows: int  # rows both were evaluated on

    @property
    def significant(self) -> bool:
        """The interval of the gain excludes 0."""
        return self.ci_low is not None and self.ci_high is not None and (
            self.ci_low > 0 or self.ci_high < 0)

    def describe(self, a_label: str, b_label: str) -> str:
        """One line: values, gain and interval."""
        ci = ("" if self.ci_low is None or self.ci_high is None
              else f", 95% CI [{_signed(self.ci_low)}, {_signed(self.ci_high)}]"
              + ("" if self.significant else ", not significant"))
        return (f"holdout {self.metric} {b_label} {self.b:.4f} vs {a_label} {self.a:.4f} on "
                f"the same {self.n_rows:,} rows (gain {_signed(self.gain)}{ci})")


def _columns(pred: np.ndarray) -> list[np.ndarray]:
    """A prediction array's columns (one for a 1-d array), first to last."""
    return [pred] if pred.ndim == 1 else [pred[:, j] for j in range(pred.shape[1])]


def _signed(value: float) -> str:
    """+0.0123 / -0.0123, and +0.0000 for a value that rounds to zero from below (not -0.0000)."""
    return f"{round(value, 4) + 0.0:+.4f}"


def compare(task: str, metric: str, y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
            threshold_a: float = 0.5, threshold_b: float = 0.5, n_boot: int = N_BOOT,
            seed: int = SEED, max_rows: int = MAX_ROWS) -> Comparison:
    """Compare two models' raw predictions (probabilities or values) on labels `y`.

    The rows are put in one order of their own first (by label, then A's and B's
    predictions), so the interval depends on the rows, not on the order a caller read them
    in: the promotion policy and the tuning note compared the same two versions on the same
    rows with two intervals (a docs walk)."""
    order = np.lexsort([*_columns(pred_b)[::-1], *_columns(pred_a)[::-1], y])
    y, pred_a, pred_b = y[order], pred_a[order], pred_b[order]
    n = len(y)
    fa = metric_function(task, y, pred_a, threshold_a)
    fb = metric_function(task, y, pred_b, threshold_b)
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    ones = np.ones(n)
    a, b = fa(ones).get(metric, math.nan), fb(ones).get(metric, math.nan)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise MetricUndefined(f"holdout {metric} is undefined on these {n:,} rows"
                              f"{UNDEFINED_WHY.get(metric, '')}")
    gain = sign * (b - a)
    # Large holdouts: replicate a seeded sample and rescale around the full gain, as
    # pyml.modelling.evaluate.with_intervals does.
    rows, scale = sample(n, max_rows, seed, rarest=rarest_class(task, y))
    m, centre = n, gain
    if rows is not None:
        fa = metric_function(task, y[rows], pred_a[rows], threshold_a)
        fb = metric_function(task, y[rows], pred_b[rows], threshold_b)
        m, w1 = len(rows), np.ones(len(rows))
        centre = sign * (fb(w1)[metric] - fa(w1)[metric])
    ci = intervals(lambda w: {"gain": sign * (fb(w)[metric] - fa(w)[metric])}, m,
                   n_boot=n_boot, seed=seed)
    lo = hi = None
    if "gain" in ci:
        q_lo, q_hi = ci["gain"]
        lo, hi = gain + (q_lo - centre) * scale, gain + (q_hi - centre) * scale
    return Comparison(metric, a, b, gain, lo, hi, n)
