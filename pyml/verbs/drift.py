"""Training snapshots and `pyml drift`: is what we score still like what the model learned on?

At train time each feature's distribution over the training rows is stored in
`ml.training_snapshots` (bin edges and counts, category counts, null share; never the rows).
`pyml drift` streams the relation to be scored through the same float32 encoding the model
sees and compares, per feature: PSI, the KS statistic (numeric), the share of categories never
seen in training (categorical) and the null share then and now.

Both sides bin values after the float32 rounding XGBoost applies (`pyml.data.encode.Encoder`), so a
relation compared with its own training rows has a PSI of exactly 0.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyml.data.encode import Feature, check_schema, select_exprs
from pyml.dbt.project import Project, resolve_relation
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import (
    abort_transaction,
    connect,
    qualified,
    relation_columns,
    stream_arrow,
    table_exists,
)
from pyml.errors import ModelNotFound
from pyml.store.registry import SCHEMA, load_version

Log = Callable[[str], None]
DEFAULT_THRESHOLD = 0.2  # PSI above 0.2 is the usual "significant shift" rule of thumb
PSI_BINS = 10  # training deciles
KS_POINTS = 101  # percentiles 0..100 of the training values: where the CDFs are compared
PSI_FLOOR = 1e-4  # share used for an empty bin, so PSI stays finite
EXIT_DRIFT = 2  # exit code of `pyml drift` when a feature drifted (1 stays for errors)

DDL = [
    f"""create table if not exists {SCHEMA}.training_snapshots (
        model_name varchar not null,
        version integer not null,
        feature varchar not null,
        kind varchar not null,
        n_rows bigint not null,
        null_count bigint not null,
        null_share double,
        bin_edges json,
        bin_counts json,
        categories json,
        ks_points json,
        ks_cdf json,
        primary key (model_name, version, feature)
    )""",
    f"""create table if not exists {SCHEMA}.drift (
        model_name varchar not null,
        version integer not null,
        feature varchar not null,
        metric varchar not null,
        value double,
        checked_at timestamp not null,
        relation varchar
    )""",
]


@dataclass(frozen=True)
class Snapshot:
    """One feature's training distribution (what ml.training_snapshots holds)."""

    feature: str  # column name
    kind: str  # "numeric" or "categorical"
    n_rows: int  # training rows
    null_count: int  # of which NULL
    bin_edges: tuple[float, ...] = ()  # numeric: inner decile edges; bin i is (e[i-1], e[i]]
    bin_counts: tuple[int, ...] = ()  # numeric: per bin; categorical: per category
    categories: tuple[str, ...] = ()  # categorical: the training categories
    ks_points: tuple[float, ...] = ()  # numeric: distinct training percentiles
    ks_cdf: tuple[float, ...] = ()  # share of non-null training values <= each point

    def row(self, name: str, version: int) -> list[Any]:
        """The ml.training_snapshots row."""
        share = self.null_count / self.n_rows if self.n_rows else None
        return [name, version, self.feature, self.kind, self.n_rows, self.null_count, share,
                json.dumps(self.bin_edges), json.dumps(self.bin_counts),
                json.dumps(self.categories), json.dumps(self.ks_points),
                json.dumps(self.ks_cdf)]


SNAPSHOT_MAX_ROWS = 200_000  # above this, a seeded uniform sample of rows is profiled


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
    for j, f in enumerate(features):
        col = X[:, j]
        missing = np.isnan(col)
        values = col[~missing]
        if f.kind == "categorical":
            counts = np.bincount(values.astype(np.int64), minlength=len(f.categories))
            out.append(Snapshot(f.name, f.kind, n, int(missing.sum()),
                                bin_counts=tuple(int(c) for c in counts),
                                categories=f.categories))
            continue
        if len(values) == 0:
            out.append(Snapshot(f.name, f.kind, n, n))
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
                            ks_cdf=tuple(float(c) for c in cdf)))
    return out


def write_snapshots(con: duckdb.DuckDBPyConnection, name: str, version: int,
                    snapshots: Sequence[Snapshot]) -> None:
    """Store a version's snapshots (inside the caller's transaction)."""
    for ddl in DDL:
        con.execute(ddl)
    if snapshots:
        con.executemany(f"insert into {SCHEMA}.training_snapshots values "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [s.row(name, version) for s in snapshots])  # one row per feature


def load_snapshots(con: duckdb.DuckDBPyConnection, name: str, version: int) -> list[Snapshot]:
    """A version's snapshots, in feature order of the table."""
    if not table_exists(con, SCHEMA, "training_snapshots"):
        return []
    rows = con.execute(
        f"select feature, kind, n_rows, null_count, bin_edges, bin_counts, categories, "
        f"ks_points, ks_cdf from {SCHEMA}.training_snapshots where model_name = ? "
        "and version = ?", [name, version]).fetchall()
    return [Snapshot(r[0], r[1], int(r[2]), int(r[3]),
                     *(tuple(json.loads(v)) if v else () for v in r[4:]))
            for r in rows]


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

    def metrics(self) -> list[tuple[str, float | None]]:
        """(metric, value) rows for ml.drift."""
        return [("psi", self.psi), ("ks", self.ks), ("unseen_share", self.unseen_share),
                ("null_share_train", self.null_share_train),
                ("null_share_now", self.null_share_now)]


@dataclass(frozen=True)
class DriftResult:
    """What one `pyml drift` run compared and found."""

    name: str  # model name
    version: int  # model version whose snapshot was the reference
    relation: str  # schema.table compared
    rows: int  # rows read now
    threshold: float  # PSI above which a feature counts as drifted
    features: tuple[FeatureDrift, ...]  # per feature, in model order
    checked_at: datetime  # when (written to ml.drift)

    @property
    def drifted(self) -> list[FeatureDrift]:
        """Features whose PSI exceeds the threshold, worst first."""
        return sorted((f for f in self.features if f.psi > self.threshold),
                      key=lambda f: -f.psi)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two count vectors over the same bins: sum (a - e) ln(a / e) of floored shares."""
    e = np.maximum(expected / max(expected.sum(), 1), PSI_FLOOR)
    a = np.maximum(actual / max(actual.sum(), 1), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


class _Counter:
    """Accumulates one feature's counts over streamed batches, binned like its snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.rows = self.nulls = self.unseen = 0
        if snap.kind == "categorical":
            self.value_set = pa.array(snap.categories, type=pa.string())
            self.counts = np.zeros(len(snap.categories), dtype=np.int64)
        else:
            self.edges = np.asarray(snap.bin_edges, dtype=np.float32)
            self.points = np.asarray(snap.ks_points, dtype=np.float32)
            self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
            self.below = np.zeros(len(self.points) + 1, dtype=np.int64)

    def add(self, col: pa.Array) -> None:
        self.rows += len(col)
        nulls = col.null_count
        self.nulls += nulls
        if self.snap.kind == "categorical":
            codes = pc.index_in(col, value_set=self.value_set)
            self.unseen += codes.null_count - nulls
            known = codes.drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
            self.counts += np.bincount(known, minlength=len(self.counts))
            return
        # The same float32 rounding as the training matrix (pyml.data.encode.Encoder).
        values = col.drop_null().to_numpy(zero_copy_only=False).astype(np.float32)
        values = values[~np.isnan(values)]
        self.counts += np.bincount(np.searchsorted(self.edges, values, side="left"),
                                   minlength=len(self.counts))
        self.below += np.bincount(np.searchsorted(self.points, values, side="left"),
                                  minlength=len(self.below))

    def result(self) -> FeatureDrift:
        snap = self.snap
        null_train = snap.null_count / snap.n_rows if snap.n_rows else 0.0
        null_now = self.nulls / self.rows if self.rows else 0.0
        expected = np.asarray([snap.null_count, *snap.bin_counts, 0], dtype=np.float64)
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


def drift_relation(con: duckdb.DuckDBPyConnection, name: str, version: int | None,
                   relation: tuple[str, str], threshold: float, *, batch_size: int = 100_000,
                   log: Log | None = None) -> DriftResult:
    """Compare `relation` with a version's training snapshot; append the result to ml.drift."""
    stored = load_version(con, name, version)
    snaps = {s.feature: s for s in load_snapshots(con, name, stored.version)}
    if not snaps:
        raise ModelNotFound(
            f"model '{name}' v{stored.version} has no training snapshot (it was trained before "
            f"pyml stored them): retrain it with `pyml train {name}`, then rerun `pyml drift`")
    schema, table = relation
    label = f"{schema}.{table}"
    where = f"model '{name}' v{stored.version}"
    check_schema(where, stored.features, relation_columns(con, schema, table), label)
    features = [f for f in stored.features if f.name in snaps]
    counters = [_Counter(snaps[f.name]) for f in features]
    started = time.perf_counter()
    cur = con.cursor()
    try:
        reader = stream_arrow(cur, f"select {', '.join(select_exprs(features))} from "
                                   f"{qualified(schema, table)}", batch_size)
        for batch in reader:
            for j, counter in enumerate(counters):
                counter.add(batch.column(j))
    finally:
        cur.close()
    rows = counters[0].rows if counters else 0
    if log:
        log(f"[{name}] compared {rows:,} rows of {label} with the v{stored.version} training "
            f"snapshot in {time.perf_counter() - started:.1f}s")
    result = DriftResult(name, stored.version, label, rows, threshold,
                         tuple(c.result() for c in counters),
                         datetime.now().replace(microsecond=0))
    _write(con, result)
    return result


def _write(con: duckdb.DuckDBPyConnection, result: DriftResult) -> None:
    for ddl in DDL:
        con.execute(ddl)
    rows = [[result.name, result.version, f.feature, metric, value, result.checked_at,
             result.relation]
            for f in result.features for metric, value in f.metrics()
            if value is not None and math.isfinite(value)]
    con.execute("begin transaction")
    try:
        con.executemany(f"insert into {SCHEMA}.drift values (?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("commit")
    except BaseException:
        abort_transaction(con)
        raise


def drift(project: Project, specs: Sequence[ModelSpec], *, version: int | None = None,
          threshold: float | None = None, log: Log | None = None,
          lock_timeout: float = 5.0) -> list[DriftResult]:
    """Check each spec's score relation against its model's training snapshot."""
    con = connect(project.db_path, lock_timeout=lock_timeout)
    try:
        out = []
        for spec in specs:
            relation = (resolve_relation(project, spec.score.relation, spec.where)
                        if spec.score.relation else (spec.schema, spec.relation))
            limit = threshold if threshold is not None else spec.drift_threshold
            out.append(drift_relation(con, spec.name, version, relation, limit,
                                      batch_size=spec.score.batch_size, log=log))
        return out
    finally:
        con.close()


def format_drift(result: DriftResult) -> str:
    """The table `pyml drift` prints: one line per feature, drifted ones marked."""
    from pyml.report.text import text_table

    def num(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    rows = [[f.feature, f.kind, num(f.psi, ".3f"), num(f.ks, ".3f"),
             num(f.unseen_share, ".1%"), f"{f.null_share_train:.1%}",
             f"{f.null_share_now:.1%}", "DRIFT" if f.psi > result.threshold else ""]
            for f in result.features]
    head = (f"{result.name} v{result.version}: {result.relation} ({result.rows:,} rows) vs the "
            f"training snapshot; PSI threshold {result.threshold:g}")
    table = text_table(["feature", "kind", "psi", "ks", "unseen", "null_train", "null_now",
                        ""], rows)
    return f"{head}\n{table}"
