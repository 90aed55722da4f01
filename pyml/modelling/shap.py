"""Exact TreeSHAP contributions (XGBoost `pred_contribs`) and the top-k of each row.

One place decides what an explanation is, for `pyml explain` / `pyml score --explain`
(ml.<model>_explanations), `pyml serve`'s `?explain=K`, the report's figures and the mean
|SHAP| importances that `pyml train` stores:

- a row's contributions are in margin units (log-odds for binary, the value for regression)
  and, with the bias term, add up to the margin;
- multiclass explains the margin of the *predicted class*: the class with the highest
  probability, exactly the `prediction` that `pyml score` writes (first class on ties);
- the top k are the k largest |contribution|, ties kept in feature order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from pyml.data.encode import Feature

SHAP_IMPORTANCE_ROWS = 2_000  # holdout rows behind mean |SHAP| (a seeded sample above that)


def contributions(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """Exact TreeSHAP values: (n, F + 1) or, multiclass, (n, classes, F + 1); last = bias."""
    dm = xgb.DMatrix(X, feature_names=booster.feature_names,
                     feature_types=booster.feature_types, enable_categorical=True)
    return np.asarray(booster.predict(dm, pred_contribs=True))


def mean_abs_shap(booster: xgb.Booster, features: Sequence[Feature], X: np.ndarray
                  ) -> list[tuple[str, str, float]]:
    """ml.feature_importance rows of type 'mean_abs_shap' on the rows of X (the holdout).

    Multiclass: the sum over classes of each class's mean |SHAP| (the total bar of a stacked
    SHAP summary plot).
    """
    if len(X) > SHAP_IMPORTANCE_ROWS:
        rng = np.random.default_rng(0)
        X = X[np.sort(rng.choice(len(X), SHAP_IMPORTANCE_ROWS, replace=False))]
    if len(X) == 0:
        return []
    c = np.abs(contributions(booster, X).astype(np.float64))
    per_feature = c.mean(axis=0)
    if per_feature.ndim == 2:
        per_feature = per_feature.sum(axis=0)
    return [(f.name, "mean_abs_shap", float(per_feature[j])) for j, f in enumerate(features)]


def predicted_class(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """Multiclass: each row's predicted class index, as `pyml score` picks it (the highest
    probability; the first class on ties)."""
    return np.asarray(booster.inplace_predict(X)).argmax(axis=1)


def margin_contributions(booster: xgb.Booster, X: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row contributions (n, F + 1) of the margin that the prediction rests on.

    For multiclass that is the predicted class's margin; its class index comes second.
    """
    c = contributions(booster, X)
    if c.ndim == 2:
        return c, None
    # The predicted class from the probabilities, not from the summed contributions: a sum
    # of float32 contributions can tip a near tie the other way than the prediction did.
    cls = predicted_class(booster, X)
    return c[np.arange(len(c)), cls, :], cls


@dataclass(frozen=True)
class TopContributions:
    """Each row's largest contributions, with what it takes to add up to the margin."""

    features: np.ndarray  # (n, k) feature indices, largest |contribution| first
    values: np.ndarray  # (n, k) their contributions (float64, margin units)
    other: np.ndarray  # (n,) sum of the contributions not shown
    bias: np.ndarray  # (n,) XGBoost's bias term (the expected margin)
    margin: np.ndarray  # (n,) the margin: values.sum + other + bias
    classes: np.ndarray | None  # (n,) multiclass: index of the class explained; else None


def top_contributions(booster: xgb.Booster, X: np.ndarray, k: int) -> TopContributions:
    """The k largest |contributions| of each row of X (all of them when k >= features)."""
    c, cls = margin_contributions(booster, X)
    c = c.astype(np.float64)
    shap, bias = c[:, :-1], c[:, -1]
    margin = c.sum(axis=1)
    k = min(k, shap.shape[1])
    top = np.argsort(-np.abs(shap), axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(shap, top, axis=1)
    other = margin - bias - values.sum(axis=1)
    return TopContributions(top, values, other, bias, margin, cls)
