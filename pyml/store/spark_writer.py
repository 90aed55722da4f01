"""ml.<model>_predictions on Spark: written whole, then swapped in with one catalog change.

Spark's session catalog cannot replace a parquet table atomically (no CREATE OR REPLACE
TABLE on Hive tables, no transactions), and `drop` + `rename` leaves a moment with no table
at all. So the name users read, `ml.<model>_predictions`, is a VIEW over a data table
written under a fresh name (`ml.pyml_data__<table>__<stamp>`):

1. the rows are written to the new data table (a job that fails or is killed leaves at most
   a data table that no view reads, dropped by the next run);
2. the rows are counted and checked;
3. `CREATE OR REPLACE VIEW` points the name at the new table: one metastore call, so
   readers see the old rows or the new ones, never a mix and never no table;
4. data tables older than the previous one are dropped. The previous one is kept until the
   next run, so a query that resolved the old view a moment before the swap still finishes.

What this cannot give (docs/reliability.md): a reader that holds a view definition across
two runs may find its table dropped; and other engines reading the metastore (Hive, Trino)
do not read Spark views.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyml.engines.spark import first_line, qualified, quote, sql, string_literal, table_exists
from pyml.errors import DataError, ModelNotFound
from pyml.interrupts import note_written
from pyml.store.names import SCHEMA, predictions_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DATA_PREFIX = "pyml_data__"  # data tables behind the views: pyml_data__<table>__<stamp>
DATA_TABLE_PROPERTY = "pyml.data_table"  # the view's property naming its data table


@dataclass(frozen=True)
class Written:
    """What replace_table wrote."""

    table: str  # "ml.<table>", for messages and results
    rows: int  # rows in the new table
    data_table: str  # the data table the view now reads


def _data_name(table: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{DATA_PREFIX}{table}__{stamp}_{uuid.uuid4().hex[:8]}"


def _data_tables(spark: SparkSession, table: str) -> list[str]:
    """The data tables written for `table` (exact pattern: `a_predictions` never matches
    the data of `a_predictions_x_predictions`)."""
    pattern = re.compile(rf"^{re.escape(DATA_PREFIX + table)}__\d{{14}}_[0-9a-f]{{8}}$")
    return sorted(t.name for t in spark.catalog.listTables(SCHEMA) if pattern.match(t.name))


def current_data_table(spark: SparkSession, table: str) -> str | None:
    """The data table the view `ml.<table>` reads now (None: no such view)."""
    if not table_exists(spark, SCHEMA, table):
        return None
    rows = sql(spark, f"show tblproperties {qualified(SCHEMA, table)} "
                      f"({string_literal(DATA_TABLE_PROPERTY)})").collect()
    value = str(rows[0][-1]) if rows else ""
    return value if value.startswith(DATA_PREFIX) else None


def replace_table(spark: SparkSession, table: str, frame: DataFrame, *, expected_rows: int,
                  where: str, comment: str, column_comments: Mapping[str, str]) -> Written:
    """Write `frame` as the new content of ml.<table> (see the module docstring)."""
    from pyspark.errors import PySparkException

    sql(spark, f"create database if not exists {quote(SCHEMA)}")
    previous = current_data_table(spark, table)
    data = _data_name(table)
    try:
        frame.write.format("parquet").saveAsTable(qualified(SCHEMA, data))
    except PySparkException as e:
        _drop(spark, data)
        # An error raised by pyml's own code on an executor (a DataError naming a column)
        # arrives wrapped in the JVM's; its first line is still the user's message.
        raise DataError(f"{where}: writing {SCHEMA}.{table} failed: {first_line(e)}") from e
    rows = spark.table(qualified(SCHEMA, data)).count()
    if rows != expected_rows:
        _drop(spark, data)
        raise DataError(f"{where}: wrote {rows:,} rows but expected {expected_rows:,}; the "
                        f"relation changed while {SCHEMA}.{table} was written, rerun")
    if table_exists(spark, SCHEMA, table) and previous is None:
        # A table (not one of pyml's views) holds the name, e.g. written by hand: it has to
        # go before the view can take its name. The only non-atomic step, once.
        sql(spark, f"drop table if exists {qualified(SCHEMA, table)}")
    columns = [f.name for f in frame.schema.fields]
    cols = ", ".join(f"{quote(c)}" + (f" comment {string_literal(column_comments[c])}"
                                      if c in column_comments else "") for c in columns)
    # The swap: one metastore call replaces the view's definition.
    sql(spark, f"create or replace view {qualified(SCHEMA, table)} ({cols}) "
               f"comment {string_literal(comment)} tblproperties "
               f"({string_literal(DATA_TABLE_PROPERTY)} = {string_literal(data)}) "
               f"as select * from {qualified(SCHEMA, data)}")
    for old in _data_tables(spark, table):
        if old not in (data, previous):
            _drop(spark, old)
    note_written(f"{SCHEMA}.{table}")
    return Written(f"{SCHEMA}.{table}", rows, data)


def _drop(spark: SparkSession, data: str) -> None:
    """Drop a data table; best effort (the next run retries what is left)."""
    from pyspark.errors import PySparkException

    with contextlib.suppress(PySparkException):
        spark.sql(f"drop table if exists {qualified(SCHEMA, data)}")


def top_predictions(spark: SparkSession, model: str, limit: int
                    ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(columns, rows) of the `limit` highest-scored rows of ml.<model>_predictions."""
    table = predictions_table(model)
    if not table_exists(spark, SCHEMA, table):
        raise ModelNotFound(f"{SCHEMA}.{table} does not exist: run `pyml score {model}`")
    frame = spark.table(qualified(SCHEMA, table))
    cols = [f.name for f in frame.schema.fields]
    order = "probability" if "probability" in cols else "prediction"
    rows = frame.orderBy(frame[order].desc()).limit(int(limit)).collect()
    return cols, [tuple(r) for r in rows]
