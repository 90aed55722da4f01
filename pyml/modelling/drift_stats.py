"""Drift statistics: a feature's training distribution, and how far data now is from it.

At train time each feature's distribution over the training rows becomes a `Snapshot` (bin
edges and counts, category counts, null share; never the rows). A relation is later
compared with it per feature: PSI, the KS statistic (numeric), the share of categories never
seen in training (categorical) and the null share then and now.

Both sides bin values after the float32 rounding XGBoost applies (`pyml.data.encode.Encoder`),
so a relation compared with its own training rows has a PSI of exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyml.data.encode import F32_MAX, Feature
from pyml.store.drift import DriftRow, Snapshot

__all__ = ["Counter", "FeatureDrift", "Snapshot", "psi", "snapshot"]

PSI_BINS = 10  # training deciles
KS_POINTS = 101  # percentiles 0..100 of the training values: where the CDFs are compared
PSI_FLOOR = 1e-4  # share used for an empty bin, so PSI stays finite


SNAPSHOT_MAX_ROWS = 200_000  # above this, a seeded uniform sample of rows is profiled
# `pyml monitor`'s reference rows: the same seeded rows for every feature, so KS and
# Wasserstein compare with real training values and the booster can score them (the
# prediction distribution's reference).
SAMPLE_ROWS = 10_000


def snapshot(features: Sequence[Feature], X: np.ndarray) -> list[Snapshot]:
    """Snapshots of each feature from the encoded training matrix (NaN = NULL).

    Shares and quantiles from 200,000 sampled rows are as good as from all of them for
    PSI/KS, and keep training on tens of millions of rows from spending minutes here.
    """
    if X.shape[0] > SNAPSHOT_MAX_ROWS:
        rng = np.random.default_rng(0)
        X = X[np.sort(rng.choice(X.shape[0], SNAPSHOT_MAX_ROWS, replace=False))]
    out = []
    n = X.shape[0]
    picked = (np.sort(np.random.default_rng(1).choice(n, SAMPLE_ROWS, replace=False))
              if n > SAMPLE_ROWS else np.arange(n))
    for j, f in enumerate(features):
        col = X[:, j]
        sample = tuple(None if np.isnan(v) else float(v) for v in col[picked])
        missing = np.isnan(col)
        values = col[~missing]
        if f.kind == "categorical":
            counts = np.bincount(values.astype(np.int64), minlength=len(f.categories))
            out.append(Snapshot(f.name, f.kind, n, int(missing.sum()),
                                bin_counts=tuple(int(c) for c in counts),
                                categories=f.categories, sample=sample))
            continue
        if len(values) == 0:
            out.append(Snapshot(f.name, f.kind, n, n, sample=sample))
            continue
        edges = np.unique(np.quantile(values, np.linspace(0, 1, PSI_BINS + 1)[1:-1],
                                      method="inverted_cdf")).astype(np.float32)
        counts = np.bincount(np.searchsorted(edges, values, side="left"),
                             minlength=len(edges) + 1)
        points = np.unique(np.quantile(values, np.linspace(0, 1, KS_POINTS),
                                       method="inverted_cdf")).astype(np.float32)
        cdf = np.searchsorted(np.sort(values), points, side="right") / len(values)
        out.append(Snapshot(f.name, f.kind, n, int(missing.sum()),
                            bin_edges=tuple(float(e) for e in edges),
                            bin_counts=tuple(int(c) for c in counts),
                            ks_points=tuple(float(p) for p in points),
                            ks_cdf=tuple(float(c) for c in cdf), sample=sample))
    return out


@dataclass(frozen=True)
class FeatureDrift:
    """One feature, training vs now."""

    feature: str  # column name
    kind: str  # numeric | categorical
    psi: float  # population stability index over bins (+ a NULL bin, + an unseen bin)
    ks: float | None  # numeric: max |CDF_train - CDF_now| at the training percentiles
    unseen_share: float | None  # categorical: share of rows with a category unseen in training
    null_share_train: float  # NULL share in the training rows
    null_share_now: float  # NULL share in the relation now

    def rows(self) -> list[DriftRow]:
        """Its statistics as rows of ml.drift."""
        return [DriftRow(self.feature, metric, value) for metric, value in (
            ("psi", self.psi), ("ks", self.ks), ("unseen_share", self.unseen_share),
            ("null_share_train", self.null_share_train),
            ("null_share_now", self.null_share_now))]


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two count vectors over the same bins: sum (a - e) ln(a / e) of floored shares."""
    e = np.maximum(expected / max(expected.sum(), 1), PSI_FLOOR)
    a = np.maximum(actual / max(actual.sum(), 1), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


class Counter:
    """Accumulates one feature's counts over streamed batches, binned like its snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.rows = self.nulls = self.unseen = self.out_of_range = 0
        if snap.kind == "categorical":
            self.value_set = pa.array(snap.categories, type=pa.string())
            self.counts = np.zeros(len(snap.categories), dtype=np.int64)
        else:
            self.edges = np.asarray(snap.bin_edges, dtype=np.float32)
            self.points = np.asarray(snap.ks_points, dtype=np.float32)
            self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
            self.below = np.zeros(len(self.points) + 1, dtype=np.int64)

    def add(self, col: pa.Array) -> None:
        """Count a batch of the feature's values (DOUBLE or VARCHAR, as select_exprs reads
        them). A numeric NaN is missing, as NULL is, to the model and to the snapshot; a
        value float32 cannot hold is counted in `out_of_range`, not binned (the caller
        refuses the relation, as pyml score does)."""
        self.rows += len(col)
        nulls = col.null_count
        self.nulls += nulls
        if self.snap.kind == "categorical":
            codes = pc.index_in(col, value_set=self.value_set)
            self.unseen += codes.null_count - nulls
            known = codes.drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
            self.counts += np.bincount(known, minlength=len(self.counts))
            return
        raw = col.drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
        nan = np.isnan(raw)
        self.nulls += int(nan.sum())
        raw = raw[~nan]
        beyond = np.abs(raw) > F32_MAX
        self.out_of_range += int(beyond.sum())
        # The same float32 rounding as the training matrix (pyml.data.encode.Encoder).
        values = raw[~beyond].astype(np.float32)
        self.counts += np.bincount(np.searchsorted(self.edges, values, side="left"),
                                   minlength=len(self.counts))
        self.below += np.bincount(np.searchsorted(self.points, values, side="left"),
                                  minlength=len(self.below))

    def result(self) -> FeatureDrift:
        snap = self.snap
        null_train = snap.null_count / snap.n_rows if snap.n_rows else 0.0
        null_now = self.nulls / self.rows if self.rows else 0.0
        # A numeric feature that was all NULL in training (a new column not yet backfilled)
        # has no bins: every training row sits in the NULL bin, and rows with values now
        # count against empty bins. PSI is then 0 while the column stays NULL and large once
        # values arrive; KS (no training values to compare with) stays None.
        bins = snap.bin_counts or (0,) * len(self.counts)
        expected = np.asarray([snap.null_count, *bins, 0], dtype=np.float64)
        actual = np.asarray([self.nulls, *self.counts, self.unseen], dtype=np.float64)
        ks = unseen = None
        if snap.kind == "categorical":
            unseen = self.unseen / self.rows if self.rows else 0.0
        else:
            non_null = self.rows - self.nulls
            if len(self.points) and non_null:
                cdf_now = np.cumsum(self.below)[: len(self.points)] / non_null
                ks = float(np.max(np.abs(np.asarray(snap.ks_cdf) - cdf_now)))
        return FeatureDrift(snap.feature, snap.kind, psi(expected, actual), ks, unseen,
                            null_train, null_now)
