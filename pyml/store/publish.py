"""`pyml publish`: copies of chosen tables for BI tools, in files nobody ever holds a lock on
that pyml or dbt need.

DuckDB lets one process open a file for writing and then no other process at all; a reader
holding it keeps every writer out. So BI tools never read the main file: pyml writes each
published relation to a Parquet file (`<bi stem>_tables/<schema>.<table>.parquet`), written
under a temporary name and renamed over the old one, and a small DuckDB file (the BI file)
holds one view per relation over its Parquet file, with the relation's comments. The BI
file itself is also written new and renamed over the old one, so pyml never opens the file
a reader has open. What a reader sees (docs/reliability.md, "BI tools"):

- every query reads each table whole, as one publish wrote it: a rename is atomic, and a
  query that is reading a file keeps reading the file it opened;
- a connection opened before a publish reads the new rows on its next query (a view reads
  its Parquet file by name each time); tables added by a publish appear on connections
  opened after it;
- a join of two published tables may read them from two publishes a moment apart.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pyml.engines.duckdb import (
    first_row,
    qualified,
    quote,
    relation_columns,
    table_exists,
    write_error,
)
from pyml.errors import OutputError, RelationNotFound
from pyml.files import replacing
from pyml.store.names import SCHEMA, predictions_table
from pyml.store.schema import literal

# The BI file's own settings while it is written: one thread, a small buffer pool.
_WRITE_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "threads": 1, "memory_limit": "256MB"}


@dataclass(frozen=True)
class Published:
    """What one publish wrote."""

    path: Path  # the BI file (views)
    tables: tuple[str, ...]  # "schema.table" of each view, in publish order
    rows: int  # rows over all published tables
    seconds: float  # wall time
    removed: tuple[str, ...] = ()  # "schema.table" of views the last publish had and this not


def predictions_relation(model: str) -> tuple[str, str]:
    """(schema, table) of a model's predictions, as `publish` takes relations."""
    return SCHEMA, predictions_table(model)


def tables_folder(path: Path) -> Path:
    """The folder of a BI file's Parquet files: `<stem>_tables` beside it."""
    return path.with_name(f"{path.stem}_tables")


def parquet_path(path: Path, schema: str, name: str) -> Path:
    """Where `schema.name`'s Parquet file of BI file `path` lives (names percent-encoded, so
    any identifier is one plain file name)."""
    file = urllib.parse.quote(f"{schema}.{name}", safe="") + ".parquet"
    return tables_folder(path) / file


def _comments(con: duckdb.DuckDBPyConnection, schema: str, name: str
              ) -> tuple[str | None, list[tuple[str, str]]]:
    """The relation's table (or view) comment and its column comments, if any."""
    row = first_row(con, "select comment from duckdb_tables() where database_name = "
                    "current_database() and schema_name = ? and table_name = ? union all "
                    "select comment from duckdb_views() where database_name = "
                    "current_database() and schema_name = ? and view_name = ?",
                    [schema, name, schema, name])
    columns = con.execute(
        "select column_name, comment from duckdb_columns() where database_name = "
        "current_database() and schema_name = ? and table_name = ? and comment is not null "
        "and comment <> '' order by column_index", [schema, name]).fetchall()
    return (row[0] if row and row[0] else None), [(str(c), str(t)) for c, t in columns]


def publish(con: duckdb.DuckDBPyConnection, relations: Sequence[tuple[str, str]],
            path: Path) -> Published:
    """Publish `relations` ((schema, name) of tables or views in `con`) to the BI file `path`.

    Every Parquet file is written before any is renamed into place, so a failure while
    reading or writing the data (a missing relation, a full disk) leaves every published
    file as it was. The BI file is written last and replaces the old one: it lists exactly
    `relations`, and the Parquet files of relations no longer published are removed.
    """
    started = time.perf_counter()
    if not relations:
        raise OutputError(f"nothing to publish to {path}: no model has a predictions table "
                          "yet and no relations are listed; run `pyml score` first or list "
                          "relations under vars: pyml: publish: relations in dbt_project.yml")
    for schema, name in relations:
        if not table_exists(con, schema, name):
            raise RelationNotFound(f"cannot publish {schema}.{name}: no such table or view "
                                   f"in {_database(con)}; run dbt build (models) or pyml "
                                   "score (predictions) first, or fix the name")
    path = path.resolve()
    if path.is_dir():
        raise OutputError(f"cannot publish to {path}: it is a folder; name a .duckdb file")
    folder = tables_folder(path)
    if path.exists() and not folder.is_dir():  # never replace a file pyml did not write
        raise OutputError(f"cannot publish to {path}: the file exists and pyml did not write "
                          f"it (no {folder.name}/ beside it); choose another path or remove "
                          "the file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {folder}: {e.strerror or e}; choose another "
                          "publish path") from e
    try:
        rows = _write(con, relations, path)
    except OSError as e:  # e.g. a file that another process keeps from being replaced
        raise OutputError(f"cannot write {e.filename or path}: {e.strerror or e}; nothing "
                          "was published (a table already renamed into place is whole); "
                          "fix the folder or choose another publish path") from e
    except duckdb.Error as e:
        error = write_error(e)
        if error is None:
            raise
        raise error from e
    kept = {parquet_path(path, s, n).name for s, n in relations}
    removed = []
    for old in sorted(folder.glob("*.parquet")):
        if old.name not in kept:
            old.unlink(missing_ok=True)
            removed.append(urllib.parse.unquote(old.stem))
    return Published(path, tuple(f"{s}.{n}" for s, n in relations), rows,
                     time.perf_counter() - started, tuple(removed))


def _exact_columns(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> str:
    """The select list of a copy: Parquet has no 128-bit integer, and DuckDB wrote HUGEINT
    (what sum() of integers gives) as DOUBLE, rounding above 2^53 (an audit): such columns
    go as DECIMAL(38, 0), exact."""
    items = [f"cast({quote(c)} as decimal(38, 0)) as {quote(c)}"
             if t.upper() in ("HUGEINT", "UHUGEINT") else quote(c)
             for c, t in relation_columns(con, schema, name)]
    return ", ".join(items) or "*"


def _write(con: duckdb.DuckDBPyConnection, relations: Sequence[tuple[str, str]],
           path: Path) -> int:
    """Every Parquet file, then the BI file; returns the rows copied."""
    rows = 0
    described = []
    with contextlib.ExitStack() as renames:  # renames every file at the end, or none
        for schema, name in relations:
            tmp = renames.enter_context(replacing(parquet_path(path, schema, name)))
            source = qualified(schema, name)
            copied = con.execute(f"copy (select {_exact_columns(con, schema, name)} from "
                                 f"{source}) to {literal(str(tmp))} (format parquet)").fetchone()
            rows += int(copied[0]) if copied else 0
            described.append((schema, name, *_comments(con, schema, name)))
    with replacing(path) as tmp:
        bi = duckdb.connect(str(tmp), config=_WRITE_CONFIG)
        try:
            for schema in dict.fromkeys(s for s, _ in relations):
                bi.execute(f"create schema if not exists {quote(schema)}")
            for schema, name, table_comment, column_comments in described:
                view = qualified(schema, name)
                file = literal(str(parquet_path(path, schema, name)))
                bi.execute(f"create view {view} as select * from read_parquet({file})")
                if table_comment:
                    bi.execute(f"comment on view {view} is {literal(table_comment)}")
                for column, text in column_comments:
                    bi.execute(f"comment on column {view}.{quote(column)} is {literal(text)}")
        finally:
            bi.close()
    return rows


def _database(con: duckdb.DuckDBPyConnection) -> str:
    row = first_row(con, "select path from duckdb_databases() where database_name = "
                    "current_database()")
    return str(row[0]) if row and row[0] else "the database"
