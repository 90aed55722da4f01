"""ml.monitoring: `pyml monitor`'s statistics per model version, window, feature and metric.

A rerun replaces the rows of the windows it computed (one transaction: delete, then insert),
so a scheduler running it every day never duplicates a window, and a reader sees the old
rows or the new ones, never a mix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from pyml.engines.duckdb import qualified, table_exists, transaction
from pyml.store.names import SCHEMA
from pyml.store.schema import MONITORING, ensure_table

MONITORING_TABLE = qualified(SCHEMA, "monitoring")


@dataclass(frozen=True)
class MonitorRow:
    """One row of ml.monitoring (model, version, relation and computed_at come apart)."""

    window: str  # window label (e.g. 2024-Q3) or all
    window_start: datetime | None  # first instant of the window; None for all
    window_end: datetime | None  # first instant after it; None for all
    rows: int  # rows of the relation in the window
    feature: str  # feature column, __prediction__ or __model__
    kind: str  # numeric | categorical | prediction | model
    metric: str  # statistic name
    value: float | None  # the statistic (None, NaN: stored as NULL)
    threshold: float | None  # alert rule (None: none)

    @property
    def alert(self) -> bool:
        """Whether the value is above its threshold."""
        return (self.threshold is not None and self.value is not None
                and math.isfinite(self.value) and self.value > self.threshold)


def write_monitoring(con: duckdb.DuckDBPyConnection, name: str, version: int, relation: str,
                     computed_at: datetime, rows: Sequence[MonitorRow]) -> None:
    """Replace the version's rows of every window in `rows`, atomically."""
    ensure_table(con, MONITORING)
    windows = sorted({r.window for r in rows})
    values = [[name, version, relation, r.window, r.window_start, r.window_end, r.rows,
               r.feature, r.kind, r.metric,
               r.value if r.value is not None and math.isfinite(r.value) else None,
               r.threshold, r.alert, computed_at] for r in rows]
    with transaction(con):
        con.execute(f"delete from {MONITORING_TABLE} where model_name = ? and version = ? "
                    "and window_label in (select unnest(?::varchar[]))", [name, version, windows])
        con.executemany(f"insert into {MONITORING_TABLE} (model_name, version, relation, "
                        "window_label, window_start, window_end, rows, feature, kind, metric, "
                        "value, threshold, alert, computed_at) values "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)


def load_monitoring(con: duckdb.DuckDBPyConnection, name: str, version: int
                    ) -> list[dict[str, Any]]:
    """A version's ml.monitoring rows in window order (window, window_start, feature, kind,
    metric, value, threshold, alert); [] where `pyml monitor` never ran."""
    if not table_exists(con, SCHEMA, "monitoring"):
        return []
    rel = con.execute(
        f"select window_label, window_start, feature, kind, metric, value, threshold, alert "
        f"from {MONITORING_TABLE} where model_name = ? and version = ? "
        "order by window_start nulls first, window_label, feature, metric", [name, version])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
