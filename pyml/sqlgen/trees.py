"""Stored boosters -> plain tree tables, with the exact float semantics XGBoost predicts with.

`pyml sql` turns a model into SQL; this module reads what the SQL must reproduce, from the
booster's own JSON dump, and settles every rounding question once, in Python:

* XGBoost compares float32 feature values: pyml feeds it ``float32(CAST(col AS DOUBLE))``, and
  a split ``x < t`` (t a float32) holds exactly when the DOUBLE value lies below the rounding
  boundary of t. :func:`split_bound` turns each threshold into that boundary, so the SQL compares
  the DOUBLE column itself and agrees with XGBoost on every input, ties included.
* Leaf values are float32 and XGBoost adds them one tree at a time to a float32 margin that
  starts at the base score in margin space; the SQL repeats those float32 additions in tree
  order (see :mod:`pyml.sqlgen`).
* The binary label is ``float32 sigmoid(margin) >= threshold``; :func:`label_cut` finds the
  smallest float32 margin for which XGBoost's own sigmoid reaches the threshold, so the SQL
  decides the label on the margin, exactly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from pyml.errors import RegistryError
from pyml.tasks import OBJECTIVES

# The objectives pyml trains (pyml.tasks), the only ones compiled to SQL.
SUPPORTED_OBJECTIVES = tuple(OBJECTIVES.values())
F32 = np.float32


@dataclass(frozen=True)
class Tree:
    """One regression tree in XGBoost's array layout (node 0 is the root)."""

    group: int  # output (class) whose margin this tree adds to
    left: tuple[int, ...]  # left child per node, -1 for a leaf
    right: tuple[int, ...]  # right child per node
    feature: tuple[int, ...]  # feature position per split node
    value: tuple[float, ...]  # float32 split threshold, or the leaf value for a leaf
    default_left: tuple[bool, ...]  # where a missing value goes
    right_codes: dict[int, frozenset[int]]  # categorical split node -> codes that go right

    def is_leaf(self, node: int) -> bool:
        """Whether `node` is a leaf."""
        return self.left[node] == -1

    def leaves(self) -> list[int]:
        """Leaf nodes, left to right."""
        out: list[int] = []
        stack = [0]
        while stack:
            node = stack.pop()
            if self.is_leaf(node):
                out.append(node)
            else:
                stack += [self.right[node], self.left[node]]
        return out


@dataclass(frozen=True)
class Forest:
    """Everything the SQL needs from a booster, with float32 values kept exact."""

    objective: str  # binary:logistic | multi:softprob | reg:squarederror
    num_groups: int  # margins per row: classes for multi:softprob, else 1
    base_margin: tuple[float, ...]  # float32 start of each margin (margin space)
    trees: tuple[Tree, ...]  # in the order XGBoost adds them


def model_json(booster: xgb.Booster, where: str) -> dict[str, Any]:
    """The booster as XGBoost's JSON document (parsed once, shared by the readers below)."""
    try:
        # XGBoost writes feature names into its JSON unescaped (a column named `\u` made the
        # document invalid); the SQL refers to features by index, so the names are dropped.
        booster = booster.copy()
        booster.feature_names = [f"f{i}" for i in range(booster.num_features())]
        raw: dict[str, Any] = json.loads(bytes(booster.save_raw("json")))
    except (TypeError, ValueError, xgb.core.XGBoostError) as e:
        raise RegistryError(f"{where}: the stored booster cannot be read as an XGBoost "
                            "JSON model; retrain it") from e
    return raw


def read_forest(raw: dict[str, Any], n_features: int, where: str) -> Forest:
    """Parse a booster's JSON; a PymlError names anything the SQL cannot reproduce."""
    try:
        model = raw["learner"]
        objective = str(model["objective"]["name"])
        gbm = model["gradient_booster"]
        param = model["learner_model_param"]
    except (KeyError, TypeError) as e:
        raise RegistryError(f"{where}: the stored booster cannot be read as an XGBoost "
                            "JSON model; retrain it") from e
    if objective not in SUPPORTED_OBJECTIVES:
        raise RegistryError(
            f"{where}: objective '{objective}' is not supported by `pyml sql` (supported: "
            f"{', '.join(SUPPORTED_OBJECTIVES)}); score it with `pyml score` instead"
        )
    if gbm.get("name") != "gbtree":
        raise RegistryError(f"{where}: booster '{gbm.get('name')}' is not supported by "
                            "`pyml sql` (only gbtree); score it with `pyml score` instead")
    if int(param.get("num_feature", n_features)) != n_features:
        raise RegistryError(f"{where}: the booster has {param.get('num_feature')} features but "
                            f"the registry lists {n_features}; retrain the model")
    trees = tuple(_tree(t, group, where)
                  for t, group in zip(gbm["model"]["trees"], gbm["model"]["tree_info"],
                                      strict=True))
    base = [float(F32(v)) for v in json.loads(param["base_score"])]
    groups = max(1, int(param.get("num_class", "0")))
    if objective == OBJECTIVES["binary"]:
        base = [_logit32(base[0])]
    if len(base) == 1 and groups > 1:
        base = base * groups
    if len(base) != groups or any(t.group >= groups for t in trees):
        raise RegistryError(f"{where}: the booster's base score and tree groups do not match "
                            f"its {groups} outputs; retrain the model")
    return Forest(objective, groups, tuple(base), trees)


def _tree(raw: dict[str, Any], group: int, where: str) -> Tree:
    if int(raw["tree_param"].get("size_leaf_vector", "1")) > 1:
        raise RegistryError(f"{where}: multi-target trees are not supported by `pyml sql`")
    right_codes: dict[int, frozenset[int]] = {}
    cats, segments, sizes = raw["categories"], raw["categories_segments"], raw["categories_sizes"]
    for i, node in enumerate(raw["categories_nodes"]):
        right_codes[int(node)] = frozenset(int(c) for c in
                                           cats[segments[i]:segments[i] + sizes[i]])
    split_type = raw["split_type"]
    for node, kind in enumerate(split_type):
        if kind == 1 and node not in right_codes:
            right_codes[node] = frozenset()
    return Tree(
        group=int(group),
        left=tuple(int(v) for v in raw["left_children"]),
        right=tuple(int(v) for v in raw["right_children"]),
        feature=tuple(int(v) for v in raw["split_indices"]),
        # XGBoost writes float32 values with enough digits to round-trip in float32.
        value=tuple(float(F32(v)) for v in raw["split_conditions"]),
        default_left=tuple(bool(v) for v in raw["default_left"]),
        right_codes=right_codes,
    )


def _libm_logf() -> Callable[[float], float] | None:
    """C's logf, the function XGBoost uses to turn a probability base score into a margin."""
    try:
        name = ctypes.util.find_library("m") or "libm.so.6"
        logf = ctypes.CDLL(name).logf
    except (OSError, AttributeError):
        return None
    logf.restype = ctypes.c_float
    logf.argtypes = [ctypes.c_float]
    return lambda x: float(logf(x))


def _logit32(p: float) -> float:
    """XGBoost's ProbToMargin for logistic loss, in float32: ``-logf(1.0f / p - 1.0f)``."""
    x = F32(F32(1.0) / F32(p)) - F32(1.0)
    logf = _libm_logf()
    # numpy's float32 log can differ from C's logf in the last bit; prefer the C function.
    value = logf(float(x)) if logf is not None else float(np.log(F32(x)))
    return float(-F32(value))


def split_bound(threshold: float) -> tuple[float, bool]:
    """(bound, inclusive) such that ``float32(v) < threshold`` iff ``v < bound`` (or ``<=``).

    float32 rounding is monotonic, so the DOUBLE values that round below the float32
    threshold t are exactly those below the midpoint between t and the float32 just under
    it. The midpoint itself is a tie and rounds to whichever neighbour has an even
    significand: when that is t the midpoint is not below (``v < mid``), otherwise it is
    (``v <= mid``). The midpoint needs 25 significant bits, so it is an exact double.
    """
    t = F32(threshold)
    if t == 0:
        t = F32(0.0)  # -0.0 splits like +0.0
    if math.isinf(float(t)):
        if t < 0:
            return -math.inf, False  # nothing is below -inf
        # float32(v) < inf unless v rounds to inf: below the boundary 2^128 - 2^103 (a tie
        # that rounds to inf, whose significand is even).
        return float(np.finfo(np.float32).max) + 2.0 ** 103, False
    below = np.nextafter(t, F32(-np.inf))
    mid = (float(below) + float(t)) / 2.0
    odd = int(np.array(t, dtype=np.float32).view(np.uint32)) & 1
    return mid, bool(odd)


def label_cut(raw: dict[str, Any], n_features: int, threshold: float) -> float | None:
    """Smallest float32 margin m with ``float(float32 sigmoid(m)) >= threshold``.

    The sigmoid is evaluated by XGBoost itself (a copy of the model with no trees scores its
    base margin), so the SQL label matches `pyml score` even for probabilities next to the
    threshold. Returns -inf when every margin reaches the threshold, +inf when none does,
    and None when XGBoost cannot be asked (the caller then compares probabilities).
    """
    try:
        learner = raw["learner"]
        booster = learner["gradient_booster"]
        model = {**booster["model"], "trees": [], "tree_info": [], "iteration_indptr": [0],
                 "gbtree_model_param": {**booster["model"]["gbtree_model_param"],
                                        "num_trees": "0"}}
        empty_json = {**raw, "learner": {**learner,
                                         "gradient_booster": {**booster, "model": model}}}
        empty = xgb.Booster()
        empty.load_model(bytearray(json.dumps(empty_json).encode()))
    except (KeyError, TypeError, ValueError, xgb.core.XGBoostError):
        return None
    zeros = np.zeros((1, n_features), dtype=np.float32)

    def prob(bits: int) -> float:
        margin = np.array([_from_ordered(bits)], dtype=np.float32)
        out = empty.predict(xgb.DMatrix(zeros, base_margin=margin), validate_features=False)
        return float(np.asarray(out, dtype=np.float32).ravel()[0])

    lo, hi = _to_ordered(F32(-np.finfo(np.float32).max)), _to_ordered(
        F32(np.finfo(np.float32).max))
    try:
        if prob(lo) >= threshold:
            return -math.inf
        if prob(hi) < threshold:
            return math.inf
        while hi - lo > 1:  # invariant: prob(lo) < threshold <= prob(hi)
            mid = (lo + hi) // 2
            if prob(mid) >= threshold:
                hi = mid
            else:
                lo = mid
    except (ValueError, xgb.core.XGBoostError):
        return None
    return float(_from_ordered(hi))


def _to_ordered(x: np.float32) -> int:
    """float32 -> integer with the same order (negative floats counted down from zero)."""
    bits = int(np.array(x, dtype=np.float32).view(np.int32))
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF)


def _from_ordered(n: int) -> np.float32:
    bits = n if n >= 0 else (-n) | -0x80000000
    return F32(np.array([bits], dtype=np.int32).view(np.float32)[0])


def margins32(forest: Forest, leaves: np.ndarray) -> np.ndarray:
    """float32 margins XGBoost computes from per-tree leaf ids (rows x trees): for tests."""
    out = np.tile(np.array(forest.base_margin, dtype=np.float32), (leaves.shape[0], 1))
    for k, tree in enumerate(forest.trees):
        values = np.array(tree.value, dtype=np.float32)
        out[:, tree.group] += values[leaves[:, k]]
    return out


def tree_sql(tree: Tree, condition: Callable[[Tree, int], tuple[str, bool] | None],
             leaf: Callable[[Tree, int], str]) -> str:
    """A nested CASE for one tree.

    `condition(tree, node)` gives (SQL condition, whether true means the left child), or None
    when every row goes to the default child (a categorical split with nothing to test).
    """
    def walk(node: int) -> str:
        if tree.is_leaf(node):
            return leaf(tree, node)
        cond = condition(tree, node)
        if cond is None:
            return walk(tree.left[node] if tree.default_left[node] else tree.right[node])
        sql, true_is_left = cond
        first, second = ((tree.left[node], tree.right[node]) if true_is_left
                         else (tree.right[node], tree.left[node]))
        return f"case when {sql} then {walk(first)} else {walk(second)} end"

    return walk(0)


def used_sides(trees: Sequence[Tree]) -> set[tuple[int, bool]]:
    """(feature, default_left) pairs that numeric splits use: which NULL stand-ins to build."""
    out: set[tuple[int, bool]] = set()
    for tree in trees:
        for node, left in enumerate(tree.left):
            if left != -1 and node not in tree.right_codes:
                out.add((tree.feature[node], tree.default_left[node]))
    return out
