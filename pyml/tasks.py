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
    holds: str  # "class": a label in the target's type family; "float": a float64


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


# Columns pyml writes next to the keys besides the prediction columns, by what writes them.
# A key column may not be named like any of them (pyml.data.encode refuses it at train).
# ml.<model>_predictions (`pyml sql` writes the first only):
PREDICTION_EXTRAS = ("model_version", "scored_at")
EXPLANATION_COLUMNS = ("class", "rank", "feature", "feature_value", "contribution",
                       "other_contribution", "bias", "margin", "model_version",
                       "explained_at")  # ml.<model>_explanations (`pyml explain`)
SERVE_FIELDS = ("explanation",)  # what `pyml serve ?explain=K` adds to a prediction
ALL_EXTRAS = tuple(dict.fromkeys(PREDICTION_EXTRAS + EXPLANATION_COLUMNS + SERVE_FIELDS))
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """A column name as DuckDB compares it: ASCII letters without case (`É` and `é` stay
    two names, as they are two columns in DuckDB)."""
    return name.translate(_ASCII_LOWER)


def class_clash(task: str, classes: Sequence[Any]) -> str | None:
    """Multiclass: two classes whose `probability_<class>` columns are one name to DuckDB,
    said in words; None when every class has a column of its own."""
    if task != "multiclass":
        return None
    seen: dict[str, Any] = {}
    for c in classes:
        name = f"probability_{c}"
        if fold(name) in seen:
            other = seen[fold(name)]
            return (f"classes {other!r} and {c!r} give columns 'probability_{other}' and "
                    f"'{name}', one name to DuckDB (column names ignore case)")
        seen[fold(name)] = c
    return None


def key_clash(key: Sequence[str], outputs: Sequence[str]) -> str | None:
    """A key column named like one of the `outputs` a command writes next to it, in words;
    None when there is none."""
    names = {fold(n): n for n in outputs}
    for k in key:
        hit = names.get(fold(k))
        if hit is not None:
            same = "" if hit == k else " (DuckDB column names ignore case)"
            return f"key column '{k}' has the name of pyml's output column '{hit}'{same}"
    return None


# The prefix of the names pyml gives its own columns in the SQL it writes (`pyml sql`'s
# `__pyml_x0_l`, the scorer's `__pyml_f0`, ...): a key or feature named so would be confused
# with one of them, so no column pyml reads may start with it.
INTERNAL_PREFIX = "__pyml"


def internal_name(names: Sequence[str]) -> str | None:
    """The first of `names` that starts with INTERNAL_PREFIX (in any case), else None."""
    return next((n for n in names if fold(n).startswith(INTERNAL_PREFIX)), None)


# XGBoost's second names of its parameters -> the first. Two names of one parameter in one
# dict leave XGBoost applying the last: a tuned `eta` beside the spec's `learning_rate` never
# took effect, while ml.trials recorded it (an audit). Specs and tune.space say each once.
PARAM_ALIASES = {"learning_rate": "eta", "reg_lambda": "lambda", "reg_alpha": "alpha",
                 "min_split_loss": "gamma"}


def canonical_param(name: str) -> str:
    """XGBoost's first name of a parameter (`eta` for `learning_rate`)."""
    return PARAM_ALIASES.get(name, name)
