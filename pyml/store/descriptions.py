"""What the `ml` schema says about itself: every table's and column's description.

The text has one home: the registry tables' in pyml.store.schema (their `Table` and `Column`
comments), the per-model and per-relation tables' in their writers (pyml.verbs.score,
pyml.verbs.explain, pyml.verbs.profile, pyml.store.fingerprints), which put it on the tables
as DuckDB COMMENTs in the transaction that builds them. Whoever documents the schema
elsewhere (`pyml sources`, BI tools) reads it back from here: the registry's from the
declarations (so a table not created yet is described too), the rest from the COMMENTs of
the tables as they are in the database.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from pyml.store.names import SCHEMA, TEMP_PREFIX
from pyml.store.schema import TABLES

# The schema's name as dbt sees it: `pyml sources` declares source('ml', <table>) on it.
SOURCE_SCHEMA = SCHEMA


@dataclass(frozen=True)
class Described:
    """One ml table with its description and its columns' (in table order)."""

    name: str  # table name in the ml schema
    description: str  # the table's COMMENT ('' where it has none)
    columns: tuple[tuple[str, str], ...]  # (column, its COMMENT or '')
    key: tuple[str, ...] = ()  # the columns that identify a row, where pyml guarantees one


def registry_tables() -> list[Described]:
    """The registry tables (ml.models, ml.metrics, ...) as pyml declares them."""
    return [Described(t.name, t.comment, tuple((c.name, c.comment) for c in t.columns),
                      t.key) for t in TABLES]


def database_tables(con: duckdb.DuckDBPyConnection) -> dict[str, Described]:
    """Every table of the ml schema in `con`'s database, by name, with its COMMENTs (tables
    a killed run left half-built excluded). No key: the caller knows which hold one."""
    tables = con.execute(
        "select table_name, coalesce(comment, '') from duckdb_tables() where database_name = "
        "current_database() and schema_name = ? and not starts_with(table_name, ?) "
        "order by table_name", [SCHEMA, TEMP_PREFIX]).fetchall()
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, comment in con.execute(
            "select table_name, column_name, coalesce(comment, '') from duckdb_columns() "
            "where database_name = current_database() and schema_name = ? "
            "order by table_name, column_index", [SCHEMA]).fetchall():
        columns.setdefault(str(table), []).append((str(column), str(comment)))
    return {str(name): Described(str(name), str(text), tuple(columns.get(str(name), [])))
            for name, text in tables}
