"""What `pyml train` stores about a version besides the model row, and reading it back:
calibration, lift and curve tables, and the per-version reads of reports, `pyml show`,
`pyml export` and the server (model row, metrics, importances).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from pyml.engines.duckdb import qualified, table_exists
from pyml.store.names import SCHEMA
from pyml.store.schema import CALIBRATION, CURVES, LIFT, Table

JSON_COLUMNS = ("classes", "key_columns", "features", "spec", "params", "split")


def insert_rows(con: duckdb.DuckDBPyConnection, table: Table, rows: Sequence[Sequence[Any]]
                ) -> None:
    """Append rows (in the table's column order) to ml.<table> through one Arrow scan.

    `executemany` costs a round trip per row (a second for a couple of thousand curve
    points); an Arrow table is one statement.
    """
    if not rows:
        return
    names = [c.name for c in table.columns]
    arrow = pa.table({f"c{i}": pa.array([r[i] for r in rows]) for i in range(len(names))})
    con.register("__pyml_rows", arrow)
    try:
        con.execute(f"insert into {qualified(SCHEMA, table.name)} select * from __pyml_rows")
    finally:
        con.unregister("__pyml_rows")


def write_evaluation(con: duckdb.DuckDBPyConnection, name: str, version: int,
                     calibration: Sequence[Sequence[Any]], lift: Sequence[Sequence[Any]],
                     curves: Sequence[Sequence[Any]]) -> None:
    """Insert a version's calibration (bin, low, high, mean_pred, observed, count), lift
    (decile, n, positive_rate, cum_capture, lift) and curve (curve, point, x, y, threshold)
    rows, inside the caller's transaction (ensure_schema has created the tables)."""
    insert_rows(con, CALIBRATION, [[name, version, *r] for r in calibration])
    insert_rows(con, LIFT, [[name, version, *r] for r in lift])
    insert_rows(con, CURVES, [[name, version, *r] for r in curves])


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]
           ) -> list[dict[str, Any]]:
    rel = con.execute(sql, params)
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def _per_version(con: duckdb.DuckDBPyConnection, table: str, name: str, version: int,
                 order: str) -> list[dict[str, Any]]:
    """Every column but model_name/version of ml.<table>'s rows of one version, in `order`
    (pyml's own column list); [] where the table does not exist yet."""
    if not table_exists(con, SCHEMA, table):
        return []
    return _dicts(con, f"select * exclude (model_name, version) from {qualified(SCHEMA, table)} "
                       f"where model_name = ? and version = ? order by {order}", [name, version])


def model_row(con: duckdb.DuckDBPyConnection, name: str, version: int) -> dict[str, Any]:
    """The version's ml.models row without the booster, JSON columns decoded ({} if none)."""
    rows = _dicts(con, f"select * exclude (booster) from {qualified(SCHEMA, 'models')} "
                       "where model_name = ? and version = ?", [name, version])
    row = rows[0] if rows else {}
    for key in JSON_COLUMNS:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def metrics(con: duckdb.DuckDBPyConnection, name: str, version: int) -> list[dict[str, Any]]:
    """The version's ml.metrics rows (split, metric, value, baseline, n_rows, ci_low, ...),
    ordered by split and metric."""
    return _per_version(con, "metrics", name, version, "split, metric")


def curves(con: duckdb.DuckDBPyConnection, name: str, version: int) -> list[dict[str, Any]]:
    """The version's ml.curves points, by curve and point."""
    return _per_version(con, "curves", name, version, "curve, point")


def calibration(con: duckdb.DuckDBPyConnection, name: str, version: int
                ) -> list[dict[str, Any]]:
    """The version's ml.calibration bins, in order."""
    return _per_version(con, "calibration", name, version, "bin")


def lift(con: duckdb.DuckDBPyConnection, name: str, version: int) -> list[dict[str, Any]]:
    """The version's ml.lift deciles, in order."""
    return _per_version(con, "lift", name, version, "decile")


def importance(con: duckdb.DuckDBPyConnection, name: str, version: int
               ) -> list[dict[str, Any]]:
    """The version's ml.feature_importance rows (feature, importance_type, value)."""
    return _per_version(con, "feature_importance", name, version, "importance_type, feature")
