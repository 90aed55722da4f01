"""Leakage and sanity checks shared by `pyml profile` (warnings) and `pyml train` (a refusal).

A single column that predicts the label almost perfectly on its own is, in practice, nearly
always derived from the label (a cancellation date, a status written after the outcome). The
check is univariate: the AUC of the column's values against a binary target, or the Spearman
correlation with a numeric one. Text columns are first replaced by an out-of-fold target mean
of their category (two folds), so an id-like column with a category per row scores ~0.5, not
a perfect in-sample fit. A NULL is a value too: for numeric columns the AUC is taken with
NULLs ranked lowest and highest, and the one further from 0.5 counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from pyml.data.encode import Feature
from pyml.dbt.spec import ModelSpec
from pyml.errors import DataError

Log = Callable[[str], None]
LEAK_AUC = 0.98  # univariate AUC >= this (or <= 1 - this) is a near-perfect single feature
LEAK_CORR = 0.98  # |Spearman| >= this with a numeric target
KEY_COPY = 0.98  # share equal to / |Spearman| with the key above which a column copies it
MIN_MINORITY = 0.01  # minority class share below which a classifier target is suspicious
CHECK_ROWS = 50_000  # rows behind the univariate statistics (a seeded sample above that)
SMOOTHING = 10.0  # prior weight of the out-of-fold category means
# A feature present in at least this share of the labelled rows and at most 1 - this share of
# the rows still waiting for their label (the ones pyml score is for) is known only with the
# outcome: another label, a later date. Judged on at least MIN_UNLABELLED such rows.
KNOWN_SHARE = 0.99
MIN_UNLABELLED = 20


@dataclass(frozen=True)
class Finding:
    """One warning (or, for a leak at train time, the reason to refuse)."""

    check: str  # leak | key_copy | constant | all_null | id_like | target | duplicate_keys
    column: str  # the column it names
    message: str  # one sentence with what to do

    def __str__(self) -> str:
        return f"{self.column}: {self.message}"


def _auc(x: np.ndarray, y: np.ndarray) -> float | None:
    """Mann-Whitney AUC of scores x for 0/1 labels y (average ranks for ties)."""
    n_pos = float(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(x)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman correlation of the pairs where both are present (None if undefined)."""
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3:
        return None
    rx, ry = rankdata(x[ok]), rankdata(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _target_encode(codes: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold (2 folds) smoothed target mean of each row's category; NaN is a category."""
    c = np.where(np.isnan(codes), -1, codes).astype(np.int64)
    c = c - c.min()
    k = int(c.max()) + 1 if len(c) else 1
    fold = np.random.default_rng(seed).integers(0, 2, len(c))
    prior = float(y.mean()) if len(y) else 0.0
    out = np.empty(len(c), dtype=np.float64)
    for f in (0, 1):
        other = fold != f
        sums = np.bincount(c[other], weights=y[other], minlength=k)
        counts = np.bincount(c[other], minlength=k)
        mine = fold == f
        out[mine] = (sums[c[mine]] + SMOOTHING * prior) / (counts[c[mine]] + SMOOTHING)
    return out


def univariate(task: str, categorical: Sequence[bool], X: np.ndarray, y: np.ndarray,
               seed: int = 0) -> tuple[list[float | None], list[float | None]]:
    """(AUC per column for binary, Spearman per column for regression); None elsewhere.

    `X` holds numbers or category codes with NaN for NULL; `y` is 0/1 (binary) or numeric.
    Multiclass targets get neither (see `pyml profile`'s mutual information instead).
    """
    n_cols = X.shape[1]
    aucs: list[float | None] = [None] * n_cols
    rhos: list[float | None] = [None] * n_cols
    if task not in ("binary", "regression") or len(y) < 3:
        return aucs, rhos
    for j in range(n_cols):
        x = X[:, j].astype(np.float64)
        if categorical[j]:
            x = _target_encode(x, y, seed + j)
        missing = np.isnan(x)
        if missing.all():
            continue
        if task == "regression":
            rhos[j] = spearman(x, y)
            continue
        if not missing.any():
            aucs[j] = _auc(x, y)
            continue
        low = _auc(np.where(missing, -np.inf, x), y)
        high = _auc(np.where(missing, np.inf, x), y)
        if low is not None and high is not None:
            aucs[j] = low if abs(low - 0.5) >= abs(high - 0.5) else high
    return aucs, rhos


def leak_findings(columns: Sequence[str], target: str, aucs: Sequence[float | None],
                  rhos: Sequence[float | None]) -> list[Finding]:
    """A finding for each column that alone predicts the target almost perfectly."""
    out = []
    for col, auc, rho in zip(columns, aucs, rhos, strict=True):
        if auc is not None and (auc >= LEAK_AUC or auc <= 1 - LEAK_AUC):
            out.append(Finding("leak", col, (
                f"alone predicts '{target}' almost perfectly (univariate AUC {auc:.3f}); "
                "it is probably derived from the label: drop it from the features")))
        elif rho is not None and abs(rho) >= LEAK_CORR:
            out.append(Finding("leak", col, (
                f"moves with '{target}' almost perfectly (Spearman {rho:+.3f}); "
                "it is probably derived from the label: drop it from the features")))
    return out


def column_findings(columns: Sequence[str], null_counts: Sequence[int],
                    distinct_counts: Sequence[int], n_rows: int) -> list[Finding]:
    """Constant and all-NULL columns."""
    out = []
    for col, nulls, distinct in zip(columns, null_counts, distinct_counts, strict=True):
        if n_rows and nulls == n_rows:
            out.append(Finding("all_null", col, "is NULL in every row; it carries no "
                               "information: exclude it or fix the dbt model"))
        elif distinct <= 1 and n_rows and nulls == 0:
            out.append(Finding("constant", col, "has a single value in every row; it "
                               "carries no information: exclude it"))
        # One value or NULL is information (present vs missing): no finding. It was told to
        # exclude a column that alone predicted the target with AUC 0.82 (an audit).
    return out


def target_findings(target: str, class_counts: dict[str, int]) -> list[Finding]:
    """A classifier target with one class, or a minority class under 1%."""
    total = sum(class_counts.values())
    if not total:
        return [Finding("target", target, "has no non-NULL values; nothing to learn from")]
    if len(class_counts) < 2:
        value = next(iter(class_counts))
        return [Finding("target", target, f"has a single class ({value}); a classifier "
                        "needs at least two: check the label logic in the dbt model")]
    value, count = min(class_counts.items(), key=lambda kv: kv[1])
    share = count / total
    if share < MIN_MINORITY:
        return [Finding("target", target, (
            f"minority class {value} is {share:.2%} of labelled rows ({count:,}); metrics "
            "will be noisy: add data, or check the label logic in the dbt model"))]
    return []


def _sample(n: int, seed: int = 0) -> np.ndarray | None:
    if n <= CHECK_ROWS:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, CHECK_ROWS, replace=False))


def presence_sql(features: Sequence[Feature], quote: Callable[[str], str],
                 where: str = "true") -> list[str]:
    """Select items for check_availability's counts (DuckDB or Spark SQL, `quote` the
    engine's): per feature, its rows with a value (not NULL, not NaN) where `where` holds."""
    items = []
    for f in features:
        value = quote(f.name)
        present = f"{value} is not null" + (f" and not isnan(cast({value} as double))"
                                            if f.kind == "numeric" else "")
        items.append(f"count_if({present} and {where})")
    return items


@dataclass(frozen=True)
class Presence:
    """The relation's rows with and without the target, and each feature's rows with a value
    among them (presence_sql's counts: in the labelled rows, then in the unlabelled ones)."""

    labelled: int
    unlabelled: int
    counts: Sequence[int]


def check_availability(spec: ModelSpec, features: Sequence[Feature], presence: Presence,
                       log: Log) -> list[Finding]:
    """Refuse a feature that is (almost) always present in the labelled rows and (almost)
    never in the unlabelled ones of the relation (`presence`): a model that leans on it
    scores every new row as if it were missing. (A docs walk trained the
    demo's churn model on the second label revenue_next_90d: holdout AUC 0.95, promoted, and
    all 1,210 rows awaiting their label scored ~0.01. Its univariate AUC, 0.25, is far from
    a leak's.) `allow_leakage: true` trains anyway, with a warning."""
    labelled, unlabelled, counts = presence.labelled, presence.unlabelled, presence.counts
    if unlabelled < MIN_UNLABELLED or not labelled:
        return []
    n = len(features)
    findings = []
    for f, known, now in zip(features, counts[:n], counts[n:2 * n], strict=True):
        if known / labelled >= KNOWN_SHARE and now / unlabelled <= 1 - KNOWN_SHARE:
            findings.append(Finding(
                "label_only", f.name,
                f"is present in {known / labelled:.0%} of the {labelled:,} rows with "
                f"'{spec.target}' but in {now / unlabelled:.0%} of the {unlabelled:,} rows "
                "without it, the rows pyml score is for; known only with the outcome (another "
                "label, a later date?), it cannot score them"))
    if findings and not spec.allow_leakage:
        worst = findings[0]
        more = (f" (also: {', '.join(f.column for f in findings[1:])})"
                if len(findings) > 1 else "")
        raise DataError(f"{spec.where}: feature '{worst.column}' {worst.message}{more}; add it "
                        "to 'exclude', or set `allow_leakage: true` in the spec if it is "
                        "known for new rows elsewhere")
    for finding in findings:
        log(f"[{spec.name}] warning (allow_leakage: true): {finding}")
    return findings


def check_training(spec: ModelSpec, features: Sequence[Feature], X: np.ndarray,
                   y: np.ndarray, classes: Sequence[Any], log: Log,
                   presence: Presence | None = None) -> list[Finding]:
    """Run before fitting: refuse a near-perfect single-feature leak, then (with `presence`)
    a feature known only in the labelled rows; warn on the rest.

    Raises DataError naming the column unless the spec says `allow_leakage: true`.
    """
    rows = _sample(len(y))
    Xs, ys = (X, y) if rows is None else (X[rows], y[rows])
    names = [f.name for f in features]
    missing = np.isnan(Xs)
    nulls = missing.sum(axis=0).tolist()
    distinct = [len(np.unique(Xs[~missing[:, j], j])) for j in range(Xs.shape[1])]
    findings = column_findings(names, nulls, distinct, len(ys))
    if spec.task != "regression":
        values, counts = np.unique(y, return_counts=True)
        findings += target_findings(spec.target, {str(classes[int(v)]): int(c)
                                                  for v, c in zip(values, counts, strict=True)})
    aucs, rhos = univariate(spec.task, [f.kind == "categorical" for f in features], Xs, ys)
    leaks = leak_findings(names, spec.target, aucs, rhos)
    for finding in findings:
        log(f"[{spec.name}] warning: {finding}")
    if leaks and not spec.allow_leakage:
        worst = leaks[0]
        more = (f" (also: {', '.join(f.column for f in leaks[1:])})" if len(leaks) > 1 else "")
        raise DataError(
            f"{spec.where}: feature '{worst.column}' {worst.message.split(';')[0]}: "
            f"refusing to train on a probable label leak{more}; add it to 'exclude', or set "
            "`allow_leakage: true` in the spec if the column is legitimately known before "
            "the outcome")
    for finding in leaks:
        log(f"[{spec.name}] warning (allow_leakage: true): {finding}")
    later = check_availability(spec, features, presence, log) if presence else []
    return findings + leaks + later
