"""Reads of the per-model and per-relation tables: ml.<model>_predictions and
ml.profile_<relation>. (They are written by pyml.store.writer.)"""

from __future__ import annotations

from typing import Any

import duckdb

from pyml.engines.duckdb import qualified, quote, table_exists
from pyml.errors import ModelNotFound
from pyml.store.names import SCHEMA, predictions_table, profile_table


def top_predictions(con: duckdb.DuckDBPyConnection, model: str, limit: int
                    ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(columns, rows) of the `limit` highest-scored rows of ml.<model>_predictions
    (by probability, or by prediction for regression)."""
    table = predictions_table(model)
    if not table_exists(con, SCHEMA, table):
        raise ModelNotFound(f"{SCHEMA}.{table} does not exist: run `pyml score {model}`")
    rel = con.execute(f"select * from {qualified(SCHEMA, table)} limit 0")
    cols = [d[0] for d in rel.description]
    rel.fetchall()
    order = "probability" if "probability" in cols else "prediction"
    rows = con.execute(f"select * from {qualified(SCHEMA, table)} "
                       f"order by {quote(order)} desc limit ?",
                       [limit]).fetchall()
    return cols, rows


def profile_rows(con: duckdb.DuckDBPyConnection, relation: str, target: str | None
                 ) -> list[dict[str, Any]]:
    """The rows of ml.profile_<relation> when it was profiled against `target` (None: no
    target); [] where it has not been."""
    table = profile_table(relation)
    if not table_exists(con, SCHEMA, table):
        return []
    rel = con.execute(f"select * from {qualified(SCHEMA, table)} "
                      "where target is not distinct from ?", [target])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
