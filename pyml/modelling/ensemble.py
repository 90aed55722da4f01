"""`final_fit: cv_average`: k fold boosters, stored as ONE booster.

k is split.folds with split.method kfold, else tune.cv; the folds are evaluate.fold_ids'
(the same rows as the kfold evaluation and tune.cv's trials with the same seed and k).

Each fold booster is fitted on k-1 folds of the non-holdout rows and stops early on its own
held-out fold. Their average is one XGBoost model: every tree of every fold, each leaf value
scaled by 1/k, and an intercept that is the mean of the folds' intercepts in margin space, so

    margin(x) = mean over folds of fold_margin(x)

exactly (up to float32 rounding), and the probability is the sigmoid (binary) or softmax
(multiclass) of that mean margin: the average of margins, not of probabilities. Being one
ordinary gbtree model, it is what `pyml score`, `sql`, `serve`, `export` and `explain` load.
The holdout stays unseen by every fold, so its metrics measure this very booster.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xgboost as xgb

from pyml.data.trainset import TrainingSet
from pyml.dbt.spec import ModelSpec
from pyml.errors import SpecError
from pyml.modelling.evaluate import canonical_order, fold_ids, fold_summary, probabilities
from pyml.modelling.fit import fit
from pyml.modelling.metrics import Metric, evaluate, label_base

Log = Callable[[str], None]
# How each objective stores its intercept (learner_model_param.base_score): as a probability
# (binary:logistic, turned into a margin by the logit) or as the margin itself.
_PROBABILITY_INTERCEPT = {"binary:logistic": True, "multi:softprob": False,
                          "reg:squarederror": False}


def fit_fold_average(spec: ModelSpec, ts: TrainingSet, log: Log
                     ) -> tuple[xgb.Booster, list[int], dict[str, Any], list[Metric]]:
    """Fit one booster per fold of the train + validation rows (early stopping on the held
    fold) and average them. Returns the averaged booster, each fold booster's rounds, the
    parameters and the 'cv' metric rows (each fold booster on its held fold: the fold it
    stopped on, so slightly optimistic; the holdout metrics are the honest ones)."""
    X = np.concatenate([ts.train.X, ts.valid.X])
    y = np.concatenate([ts.train.y, ts.valid.y])
    rows = canonical_order(X, y)
    k = folds(spec)
    fold = fold_ids(len(rows), k, spec.split.seed)
    n_classes = len(ts.target.classes)
    boosters, rounds = [], []
    per_fold: dict[str, list[Metric]] = {}
    params: dict[str, Any] = {}
    for f in range(k):
        train, held = rows[fold != f], rows[fold == f]
        seen = len(np.unique(y[train])) if spec.task != "regression" else 0

        def data(kwargs: dict[str, Any], use_valid: bool,
                 train: np.ndarray = train, held: np.ndarray = held
                 ) -> tuple[xgb.DMatrix, xgb.DMatrix | None]:
            dtrain = xgb.QuantileDMatrix(X[train], y[train], **kwargs)
            dheld = (xgb.QuantileDMatrix(X[held], y[held], ref=dtrain, **kwargs)
                     if use_valid else None)
            return dtrain, dheld

        booster, _, params = fit(spec, ts.features, n_classes, seen, len(held) > 0, data, log)
        boosters.append(booster)
        rounds.append(booster.num_boosted_rounds())
        pred = probabilities(booster.inplace_predict(X[held]))
        base = label_base(spec.task, y[train], max(n_classes, 2))
        for m in evaluate(spec.task, y[held], pred, base, spec.threshold, split="cv"):
            per_fold.setdefault(m.name, []).append(m)
        log(f"[{spec.name}] fold {f + 1}/{k}: {len(train):,} fit / {len(held):,} held out, "
            f"{rounds[-1]} rounds")
    return average_boosters(boosters, spec.where), rounds, params, fold_summary(per_fold,
                                                                                 len(rows))


def folds(spec: ModelSpec) -> int:
    """The k of cv_average: split.folds with split.method kfold, else tune.cv."""
    if spec.split.method == "kfold":
        return spec.split.folds
    if spec.tune is None or spec.tune.cv is None:
        raise SpecError(f"{spec.where}: final_fit cv_average needs split.method kfold or "
                        "tune.cv")
    return spec.tune.cv


def average_boosters(boosters: Sequence[xgb.Booster], where: str) -> xgb.Booster:
    """One booster whose margin is the mean of `boosters`' margins (see the module doc).

    Refused (SpecError naming `where`) for what cannot be one model: another booster than
    gbtree, vector leaves, boosters of different objectives, classes or features."""
    names, types = boosters[0].feature_names, boosters[0].feature_types
    docs = [_json(b) for b in boosters]
    k = len(docs)
    out = copy.deepcopy(docs[0])
    learner = out["learner"]
    objective = learner["objective"]["name"]
    if learner["gradient_booster"].get("name") != "gbtree":
        raise SpecError(f"{where}: final_fit cv_average needs params.booster gbtree (the "
                        "default): other boosters cannot be averaged into one model")
    if objective not in _PROBABILITY_INTERCEPT:
        raise SpecError(f"{where}: final_fit cv_average cannot average {objective} boosters")
    same = ("num_class", "num_feature", "num_target")
    if any(b.feature_names != names or b.feature_types != types for b in boosters):
        raise SpecError(f"{where}: final_fit cv_average: the fold boosters differ in their "
                        "features and cannot be one model; use final_fit refit")
    for d in docs[1:]:
        other = d["learner"]
        if (other["objective"]["name"] != objective
                or other.get("feature_types") != learner.get("feature_types")
                or any(other["learner_model_param"].get(p) != learner["learner_model_param"]
                       .get(p) for p in same)
                or other["gradient_booster"]["model"].get("cats")
                != learner["gradient_booster"]["model"].get("cats")):
            raise SpecError(f"{where}: final_fit cv_average: the fold boosters differ in "
                            "objective, classes or features and cannot be one model; use "
                            "final_fit refit")
    margins = np.array([_intercept_margins(d, objective) for d in docs], dtype=np.float64)
    mean = margins.mean(axis=0)
    if _PROBABILITY_INTERCEPT[objective]:
        mean = 1.0 / (1.0 + np.exp(-mean))
    learner["learner_model_param"]["base_score"] = (
        "[" + ",".join(f"{float(np.float32(v)):.9E}" for v in mean) + "]")
    trees: list[dict[str, Any]] = []
    info: list[int] = []
    indptr = [0]
    for d in docs:
        model = d["learner"]["gradient_booster"]["model"]
        for tree in model["trees"]:
            if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
                raise SpecError(f"{where}: final_fit cv_average cannot average vector-leaf "
                                "trees (params.multi_strategy); use final_fit refit")
            trees.append(_scaled(tree, 1.0 / k, len(trees)))
        info.extend(model["tree_info"])
        start = indptr[-1]
        indptr.extend(start + int(i) for i in model["iteration_indptr"][1:])
    model = learner["gradient_booster"]["model"]
    model["trees"], model["tree_info"], model["iteration_indptr"] = trees, info, indptr
    model["gbtree_model_param"]["num_trees"] = str(len(trees))
    # best_iteration / best_score belong to one fold's early stopping, not to the average.
    learner["attributes"] = {a: v for a, v in learner.get("attributes", {}).items()
                             if not a.startswith("best_")}
    averaged = xgb.Booster()
    averaged.load_model(bytearray(json.dumps(out).encode()))
    averaged.feature_names, averaged.feature_types = names, types
    return averaged


def _json(booster: xgb.Booster) -> dict[str, Any]:
    """The booster's JSON document, read without its feature names: XGBoost writes them
    unescaped, so a name with a backslash would not parse (they are set back after)."""
    unnamed = booster.copy()
    unnamed.feature_names = None
    return dict(json.loads(bytes(unnamed.save_raw("json"))))


def _intercept_margins(doc: dict[str, Any], objective: str) -> list[float]:
    """A booster's intercept per output, in margin space."""
    text = str(doc["learner"]["learner_model_param"]["base_score"]).strip("[]")
    values = [float(v) for v in text.split(",")]
    if _PROBABILITY_INTERCEPT[objective]:
        return [math.log(p / (1.0 - p)) for p in values]
    return values


def _scaled(tree: dict[str, Any], factor: float, tree_id: int) -> dict[str, Any]:
    """A copy of one tree with its leaf values (and node weights) times `factor`."""
    out = dict(tree)
    out["id"] = tree_id
    left = tree["left_children"]
    out["split_conditions"] = [v * factor if left[i] == -1 else v
                               for i, v in enumerate(tree["split_conditions"])]
    out["base_weights"] = [v * factor for v in tree["base_weights"]]
    return out
