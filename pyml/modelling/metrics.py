"""Holdout evaluation with scikit-learn's metrics, each beside a trivial baseline.

The baseline is what a model that learned nothing would score on the same rows: the training
prior for classifiers, the training mean for regression. A metric is only worth reporting next
to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class Metric:
    """One metric of one model version on one split."""

    split: str  # "holdout", "validation" or "train"
    name: str  # e.g. "auc", "rmse"
    value: float  # the model's value
    baseline: float | None  # the trivial baseline's value on the same rows
    n_rows: int  # rows it was computed on
    ci_low: float | None = None  # 95% bootstrap interval of `value` (pyml.bootstrap)
    ci_high: float | None = None
    std: float | None = None  # split "cv": standard deviation across folds


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _best_f1(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the cut-off p >= threshold with the highest F1 (highest on ties)."""
    if not np.any(y == 1):
        return float("nan"), 0.0
    precision, recall, thresholds = skm.precision_recall_curve(y, pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    f1 = f1[:-1][::-1]  # drop the (recall 0) end point; highest threshold first
    best = int(np.argmax(f1))
    return float(thresholds[::-1][best]), float(f1[best])


def label_base(task: str, y_train: np.ndarray, n_classes: int) -> np.ndarray:
    """What the constant baselines need from the training labels: each class's share
    (classifiers) or the mean (regression, a one-element array)."""
    if task == "regression":
        return np.array([float(np.mean(y_train))])
    return np.bincount(y_train.astype(int), minlength=n_classes) / max(len(y_train), 1)


def evaluate(task: str, y: np.ndarray, pred: np.ndarray, base: np.ndarray,
             threshold: float = 0.5, split: str = "holdout") -> list[Metric]:
    """Metrics of `pred` (probabilities, or values for regression) against labels `y`, each
    with the score of a constant baseline built from `base` (see `label_base`)."""
    n = len(y)
    out: list[tuple[str, float, float | None]] = []
    if task == "binary":
        prior = float(base[1])
        base = np.full(n, prior)
        labels = (pred >= threshold).astype(int)
        base_labels = np.full(n, int(prior >= threshold))
        both = len(np.unique(y)) == 2
        out.append(("auc", skm.roc_auc_score(y, pred) if both else np.nan, 0.5))
        # A constant score's average precision is the positive rate of the same rows.
        out.append(("pr_auc", skm.average_precision_score(y, pred) if both else np.nan,
                    float(np.mean(y))))
        out.append(("log_loss", skm.log_loss(y, pred, labels=[0, 1]),
                    skm.log_loss(y, base, labels=[0, 1])))
        out.append(("brier", skm.brier_score_loss(y, pred), skm.brier_score_loss(y, base)))
        out.append(("accuracy", skm.accuracy_score(y, labels),
                    skm.accuracy_score(y, base_labels)))
        for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                         ("f1", skm.f1_score)):
            out.append((name, fn(y, labels, zero_division=0),
                        fn(y, base_labels, zero_division=0)))
        best_threshold, best_f1 = _best_f1(y, pred)
        # Predicting everything positive is the best a constant can do for F1.
        out.append(("best_f1", best_f1, 2 * np.mean(y) / (1 + np.mean(y))))
        out.append(("best_f1_threshold", best_threshold, None))
        out.append(("positive_rate", float(np.mean(y)), prior))
    elif task == "multiclass":
        k = pred.shape[1]
        priors = base
        base_p = np.tile(priors, (n, 1))
        labels = pred.argmax(axis=1)
        majority = np.full(n, int(priors.argmax()))
        out.append(("log_loss", skm.log_loss(y, pred, labels=list(range(k))),
                    skm.log_loss(y, base_p, labels=list(range(k)))))
        out.append(("accuracy", skm.accuracy_score(y, labels), skm.accuracy_score(y, majority)))
        # Averaged over the classes the holdout's labels hold: scikit-learn's default adds
        # any class only predicted, whose F1 of 0 cost a 99%-accurate model a quarter of
        # its f1_macro for one stray row (an audit).
        present = np.unique(y)
        out.append(("f1_macro", skm.f1_score(y, labels, labels=present, average="macro",
                                             zero_division=0),
                    skm.f1_score(y, majority, labels=present, average="macro",
                                 zero_division=0)))
    else:
        mean = float(base[0])
        base = np.full(n, mean)
        out.append(("rmse", float(np.sqrt(skm.mean_squared_error(y, pred))),
                    float(np.sqrt(skm.mean_squared_error(y, base)))))
        out.append(("mae", skm.mean_absolute_error(y, pred), skm.mean_absolute_error(y, base)))
        # Undefined on a constant target: NULL, not scikit-learn's stand-in 0 (or 1), which
        # gave a model off by 40 on every row the r2 of its baseline (an audit).
        varies = n > 1 and bool(np.ptp(y) > 0)
        out.append(("r2", skm.r2_score(y, pred) if varies else np.nan,
                    skm.r2_score(y, base) if varies else np.nan))
        if np.all(y != 0):  # MAPE is undefined with a zero target
            out.append(("mape", skm.mean_absolute_percentage_error(y, pred),
                        skm.mean_absolute_percentage_error(y, base)))
    return [Metric(split, name, float(value), _nan_to_none(b) if b is not None else None, n)
            for name, value, b in out]
