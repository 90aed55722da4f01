"""Spark: the in-process SparkSession of a dbt-spark target, and the SQL helpers pyml shares.

pyspark is imported inside the functions here (and by the modules that run on Spark), never
at import time of the CLI or the library: it is an optional extra (`pip install
'<pyml checkout>[spark]'`). Identifiers reach Spark SQL only through :func:`quote`
(backticks); values are bound as named parameters (`spark.sql(text, args=...)`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyml.errors import DatabaseError, EngineError, RelationNotFound

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

APP_NAME = "pyml"

# Spark types as the DuckDB type names the encoder plan (pyml.data.encode.kind_of) and the
# stored model speak, so a Spark-trained model reads like a DuckDB-trained one everywhere
# (score, `pyml sql`, export, serve).
_SPARK_TO_DUCKDB = {
    "ByteType": "TINYINT", "ShortType": "SMALLINT", "IntegerType": "INTEGER",
    "LongType": "BIGINT", "FloatType": "FLOAT", "DoubleType": "DOUBLE",
    "BooleanType": "BOOLEAN", "StringType": "VARCHAR", "VarcharType": "VARCHAR",
    "CharType": "VARCHAR", "DateType": "DATE", "TimestampType": "TIMESTAMP",
    "TimestampNTZType": "TIMESTAMP", "BinaryType": "BLOB",
}


def quote(name: str) -> str:
    """Quote one Spark SQL identifier (backticks doubled inside)."""
    return "`" + name.replace("`", "``") + "`"


def qualified(schema: str, name: str) -> str:
    """`schema`.`name` with both parts quoted."""
    return f"{quote(schema)}.{quote(name)}"


def string_literal(text: str) -> str:
    """A Spark SQL string literal, for the few places that take no parameter (COMMENT, view
    properties); pyml's own text only. Spark reads backslash escapes in literals."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def missing_extra(target_name: str) -> EngineError:
    """The one-line error for a Spark target without pyspark installed."""
    return EngineError(f"the dbt target '{target_name}' is type spark: install pyml's Spark "
                       "extra: pip install '<pyml checkout>[spark]'")


def spark_session(master: str, conf: Mapping[str, str], target_name: str) -> SparkSession:
    """The process's SparkSession for a `method: session` target, created if needed.

    dbt-spark's session method calls `SparkSession.builder.enableHiveSupport().getOrCreate()`
    with the same server_side_parameters, so when dbt runs in this process it gets this very
    session (and the same catalog), whichever of the two starts it. A session without Hive
    support keeps its catalog in memory: tables would vanish when it stops, so it is refused.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise missing_extra(target_name) from None
    # Executors must run the Python that runs pyml (local mode starts them from this one).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(APP_NAME).enableHiveSupport()
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # py4j / JVM start-up errors arrive as many kinds
        raise EngineError(f"cannot start Spark for target '{target_name}' (master {master}): "
                          f"{first_line(e)}; check Java and server_side_parameters") from e
    if spark.conf.get("spark.sql.catalogImplementation", "in-memory") != "hive":
        raise EngineError(
            f"the SparkSession of target '{target_name}' has an in-memory catalog (it was "
            "started without Hive support): its tables would vanish when it stops; start it "
            "with enableHiveSupport(), or let pyml start it")
    return spark


def first_line(error: BaseException) -> str:
    """An exception's first non-empty line (Spark's messages run to a JVM stack trace)."""
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def sql(spark: SparkSession, text: str,
        args: Mapping[str, Any] | Sequence[Any] | None = None) -> DataFrame:
    """Run one Spark SQL statement with named (`:name`, a mapping) or positional (`?`, a
    list) parameters; a Spark error becomes a one-line DatabaseError."""
    from pyspark.errors import PySparkException

    bound: dict[str, Any] | list[Any] | None = None
    if isinstance(args, Mapping):
        bound = dict(args)
    elif args:
        bound = list(args)
    try:
        return spark.sql(text, args=bound or None)
    except PySparkException as e:
        raise DatabaseError(f"Spark SQL failed: {first_line(e)}") from e


def duckdb_type(data_type: DataType) -> str:
    """A Spark column type as the DuckDB type name pyml stores (DECIMAL keeps its scale)."""
    kind = type(data_type).__name__
    if kind == "DecimalType":
        return f"DECIMAL({data_type.precision},{data_type.scale})"  # type: ignore[attr-defined,unused-ignore]
    return _SPARK_TO_DUCKDB.get(kind, data_type.simpleString().upper())


def table_exists(spark: SparkSession, schema: str, name: str) -> bool:
    """Whether a table or view exists in the catalog."""
    if not spark.catalog.databaseExists(schema):
        return False
    return bool(spark.catalog.tableExists(f"{quote(schema)}.{quote(name)}"))


def relation_columns(spark: SparkSession, schema: str, name: str) -> list[tuple[str, str]]:
    """(column, DuckDB type name) of a table or view, in order; RelationNotFound if absent
    or unreadable (a view over a dropped table)."""
    from pyspark.errors import PySparkException

    if not table_exists(spark, schema, name):
        raise RelationNotFound(
            f"relation {schema}.{name} does not exist in the Spark catalog: build it with "
            f"`dbt build --select {name}` first")
    try:
        fields = spark.table(qualified(schema, name)).schema.fields
    except PySparkException as e:
        raise RelationNotFound(f"relation {schema}.{name} cannot be read ({first_line(e)}): "
                               f"rebuild it with `dbt build --select {name}`") from e
    return [(f.name, duckdb_type(f.dataType)) for f in fields]


def default_workers(spark: SparkSession) -> int:
    """xgboost.spark workers when neither the spec nor the caller says: one per core the
    cluster offers (Spark's default parallelism)."""
    return max(1, int(spark.sparkContext.defaultParallelism))
