"""Training snapshots and drift checks in the ml schema.

`Snapshot` is the record of ml.training_snapshots (one feature's training distribution:
bin edges and counts, categories, percentiles; never the rows); the statistics that build
and compare them are pyml.modelling.drift_stats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from pyml.engines.duckdb import first_row, qualified, table_exists, transaction
from pyml.store.names import SCHEMA
from pyml.store.schema import DRIFT, ensure_table

SNAPSHOTS = qualified(SCHEMA, "training_snapshots")
DRIFT_TABLE = qualified(SCHEMA, "drift")


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
    # Up to 10,000 seeded training rows' values, the same rows for every feature (numeric:
    # float32 values, categorical: codes; None = missing); () for versions trained before.
    sample: tuple[float | None, ...] = ()

    def row(self, name: str, version: int) -> list[Any]:
        """The ml.training_snapshots row."""
        share = self.null_count / self.n_rows if self.n_rows else None
        return [name, version, self.feature, self.kind, self.n_rows, self.null_count, share,
                json.dumps(self.bin_edges), json.dumps(self.bin_counts),
                json.dumps(self.categories), json.dumps(self.ks_points),
                json.dumps(self.ks_cdf), list(self.sample)]


@dataclass(frozen=True)
class DriftRow:
    """One statistic of one feature in a drift check (a row of ml.drift)."""

    feature: str  # feature column
    metric: str  # psi | ks | unseen_share | null_share_train | null_share_now
    value: float | None  # the statistic (None or not finite: not stored)


def write_snapshots(con: duckdb.DuckDBPyConnection, name: str, version: int,
                    snapshots: Sequence[Snapshot]) -> None:
    """Store a version's snapshots (inside the caller's transaction; ensure_schema has
    created the table)."""
    if snapshots:
        con.executemany(f"insert into {SNAPSHOTS} (model_name, version, feature, kind, n_rows, "
                        "null_count, null_share, bin_edges, bin_counts, categories, ks_points, "
                        "ks_cdf, sample) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [s.row(name, version) for s in snapshots])  # one row per feature


def load_snapshots(con: duckdb.DuckDBPyConnection, name: str, version: int) -> list[Snapshot]:
    """A version's snapshots, in feature order of the table."""
    if not table_exists(con, SCHEMA, "training_snapshots"):
        return []
    # A registry from before the sample column (ensure_schema adds it on the next write).
    sample = "sample" if first_row(
        con, "select 1 from duckdb_columns() where database_name = current_database() and "
             "schema_name = ? and table_name = 'training_snapshots' and column_name = 'sample'",
        [SCHEMA]) else "null"
    rows = con.execute(
        f"select feature, kind, n_rows, null_count, bin_edges, bin_counts, categories, "
        f"ks_points, ks_cdf, {sample} from {SNAPSHOTS} where model_name = ? and version = ?",
        [name, version]).fetchall()
    out = []
    for r in rows:
        edges, counts, categories, points, cdf = (tuple(json.loads(v)) if v else ()
                                                  for v in r[4:9])
        out.append(Snapshot(r[0], r[1], int(r[2]), int(r[3]), edges, counts, categories,
                            points, cdf, tuple(r[9] or ())))
    return out


def has_snapshots(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether this registry stores training snapshots at all (older ones did not)."""
    return table_exists(con, SCHEMA, "training_snapshots")


def write_drift(con: duckdb.DuckDBPyConnection, name: str, version: int, relation: str,
                checked_at: datetime, rows: Sequence[DriftRow]) -> None:
    """Append one drift check to ml.drift, in its own transaction (finite values only)."""
    ensure_table(con, DRIFT)
    values = [[name, version, r.feature, r.metric, r.value, checked_at, relation]
              for r in rows if r.value is not None and math.isfinite(r.value)]
    with transaction(con):
        con.executemany(f"insert into {DRIFT_TABLE} (model_name, version, feature, metric, "
                        "value, checked_at, relation) values (?, ?, ?, ?, ?, ?, ?)", values)


def latest_drift(con: duckdb.DuckDBPyConnection, name: str, version: int
                 ) -> list[dict[str, Any]]:
    """The rows of the newest drift check of a version (feature, metric, value, checked_at,
    relation); [] where none ran."""
    if not table_exists(con, SCHEMA, "drift"):
        return []
    rel = con.execute(
        f"select feature, metric, value, checked_at, relation from {DRIFT_TABLE} "
        "where model_name = ? and version = ? and checked_at = (select max(checked_at) "
        f"from {DRIFT_TABLE} where model_name = ? and version = ?)",
        [name, version, name, version])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
