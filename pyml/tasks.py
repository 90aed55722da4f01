"""The task vocabulary: the kinds of model pyml trains and what each is judged by.

One entry per task (binary, multiclass, regression) says everything that depends on the task
alone: the XGBoost objective and evaluation metric, the holdout metric that sums a version up,
what tuning optimises and promotion compares by default, the booster parameters pyml sets,
and the prediction columns. Train, tune, score, serve, `pyml sql`, export and the registry read
it from here instead of keeping their own copies.

Layer 0: imports nothing from pyml and nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskInfo:
    """What one task means to XGBoost and to pyml."""

    name: str  # binary | multiclass | regression
    objective: str  # XGBoost objective pyml trains with (stored in ml.models.objective)
    eval_metric: str  # XGBoost metric on the validation part (early stopping, progress)
    headline: str  # holdout metric of `pyml models`, reports and the default promotion
    tune_metrics: tuple[str, ...]  # XGBoost metrics a study may optimise (first: default)
    promote_metrics: tuple[str, ...]  # holdout metrics (ml.metrics) a promotion may compare
    classifier: bool  # predicts a class (prediction + probability columns)


TASK_INFO: dict[str, TaskInfo] = {
    "binary": TaskInfo(
        "binary", "binary:logistic", "logloss", "auc",
        ("logloss", "auc", "aucpr", "error"),
        ("auc", "pr_auc", "log_loss", "brier", "accuracy", "precision", "recall", "f1",
         "best_f1"),
        classifier=True),
    "multiclass": TaskInfo(
        "multiclass", "multi:softprob", "mlogloss", "log_loss",
        ("mlogloss", "merror", "auc"), ("log_loss", "accuracy", "f1_macro"),
        classifier=True),
    "regression": TaskInfo(
        "regression", "reg:squarederror", "rmse", "rmse",
        ("rmse", "mae", "rmsle", "mape", "mphe"), ("rmse", "mae", "r2", "mape"),
        classifier=False),
}
TASKS = tuple(TASK_INFO)

# Views of TASK_INFO by the names the modules used before it existed.
OBJECTIVES = {t.name: t.objective for t in TASK_INFO.values()}
EVAL_METRICS = {t.name: t.eval_metric for t in TASK_INFO.values()}
# The one metric that sums up a version of each task (listings, promotion by hand, reports).
HEADLINE_METRIC = {t.name: t.headline for t in TASK_INFO.values()}
TUNE_METRICS = {t.name: t.tune_metrics for t in TASK_INFO.values()}
DEFAULT_TUNE_METRIC = {t.name: t.tune_metrics[0] for t in TASK_INFO.values()}
PROMOTE_METRICS = {t.name: t.promote_metrics for t in TASK_INFO.values()}

# XGBoost metrics a study maximises (every other one is minimised).
MAXIMIZED_XGB = frozenset({"auc", "aucpr"})
# Holdout metrics where higher is better (every other one is an error or a loss).
HIGHER_IS_BETTER = frozenset({"auc", "pr_auc", "accuracy", "precision", "recall", "f1",
                              "best_f1", "f1_macro", "r2"})


def task_info(task: str) -> TaskInfo:
    """The vocabulary of one task (specs are validated: an unknown task is a KeyError, a bug)."""
    return TASK_INFO[task]


def booster_params(task: str, params: Mapping[str, Any], n_classes: int,
                   eval_metric: str | None = None) -> dict[str, Any]:
    """XGBoost training parameters: `params` (pyml's defaults under the spec's) plus what the
    task fixes.

    The objective always comes from the task. `eval_metric` replaces the spec's (a study
    optimises its own metric); without it the spec's stands, else the task's. Key order is
    part of what is stored in ml.models.params, so keys keep their first position.
    """
    info = task_info(task)
    out: dict[str, Any] = {**params, "objective": info.objective}
    if eval_metric is not None:
        out["eval_metric"] = eval_metric
    else:
        out.setdefault("eval_metric", info.eval_metric)
    out.setdefault("nthread", os.cpu_count() or 1)
    if task == "multiclass":
        out["num_class"] = n_classes
    return out


@dataclass(frozen=True)
class OutputColumn:
    """One column that a prediction adds next to the keys."""

    name: str  # column name in ml.<model>_predictions (and the serve/export field)
    holds: str  # "class": a label in the target's own type; "float": a float64


def output_columns(task: str, classes: Sequence[Any]) -> list[OutputColumn]:
    """The prediction columns a task produces, in order: `prediction`, then for classifiers
    `probability` (of the predicted class; binary: of the positive class) and, multiclass,
    `probability_<class>` per class."""
    if not task_info(task).classifier:
        return [OutputColumn("prediction", "float")]
    cols = [OutputColumn("prediction", "class"), OutputColumn("probability", "float")]
    if task == "multiclass":
        cols += [OutputColumn(f"probability_{c}", "float") for c in classes]
    return cols
