"""Never silently stale: which version wrote each of a model's output tables, against the
version that serves now.

Every row of ml.<name>_predictions and ml.<name>_explanations carries the `model_version`
that wrote it. After `pyml promote`, `pyml rollback` or a training that promotes, those
tables still hold the old champion's numbers until `pyml score` / `pyml explain` run again;
`pyml models`, `show`, `predictions`, `promote`, `rollback` and `tune` say so with the
command that fixes it (docs/reliability.md, "Stale predictions"). The rule (`Written`) is
engine-neutral; this module reads DuckDB, pyml.store.spark_registry reads Spark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from pyml.engines.duckdb import first_row, qualified, table_exists
from pyml.store.lifecycle import serving_versions
from pyml.store.names import SCHEMA, explanations_table, predictions_table

__all__ = ["OUTPUTS", "Written", "stale_hints", "written"]

# (table name for a model, the command that rewrites it)
OUTPUTS = ((predictions_table, "pyml score"), (explanations_table, "pyml explain"))


@dataclass(frozen=True)
class Written:
    """One output table of a model: the versions that wrote its rows, and the one serving."""

    model: str  # model name
    table: str  # e.g. ml.churn_predictions
    versions: tuple[int, ...]  # distinct model_version values of its rows, ascending
    serving: int | None  # the champion (a registry from before statuses: the latest)
    command: str  # what rewrites it: pyml score | pyml explain

    @property
    def stale(self) -> bool:
        """True when some row was written by a version other than the serving one."""
        return self.serving is not None and bool(self.versions) and \
            self.versions != (self.serving,)

    def hint(self) -> str:
        """One line: who wrote the table, who is champion, and the command that fixes it."""
        by = " and ".join(", ".join(f"v{v}" for v in self.versions).rsplit(", ", 1))
        return (f"{self.table} was written by {by}; the champion is v{self.serving}: "
                f"run `{self.command} {self.model}`")


def _versions(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, ...]:
    target = qualified(SCHEMA, table)
    # min/max first: one pass over a column DuckDB keeps statistics for; the distinct list
    # only when the table is mixed (an incremental score over a promotion).
    row = first_row(con, f"select min(model_version), max(model_version) from {target}")
    if not row or row[0] is None:
        return ()
    if row[0] == row[1]:
        return (int(row[0]),)
    rows = con.execute(f"select distinct model_version from {target} "
                       "where model_version is not null order by 1").fetchall()
    return tuple(int(r[0]) for r in rows)


def _has_version_column(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    # An integer model_version, as pyml writes it; a table reshaped by hand is not judged.
    row = first_row(con, "select count(*) from duckdb_columns() where database_name = "
                         "current_database() and schema_name = ? and table_name = ? and "
                         "column_name = 'model_version' and data_type in ('TINYINT', "
                         "'SMALLINT', 'INTEGER', 'BIGINT', 'HUGEINT', 'UTINYINT', "
                         "'USMALLINT', 'UINTEGER', 'UBIGINT')", [SCHEMA, table])
    return bool(row and row[0])


def written(con: duckdb.DuckDBPyConnection, names: Sequence[str]) -> list[Written]:
    """The output tables of the named (default: all) models that exist, each with the
    versions that wrote it and the version serving now. Read-only."""
    serving = serving_versions(con)
    out = []
    for name in names or sorted(serving):
        for table_of, command in OUTPUTS:
            table = table_of(name)
            if table_exists(con, SCHEMA, table) and _has_version_column(con, table):
                out.append(Written(name, f"{SCHEMA}.{table}", _versions(con, table),
                                   serving.get(name), command))
    return out


def stale_hints(con: duckdb.DuckDBPyConnection, names: Sequence[str] = (),
                predictions_only: bool = False) -> list[str]:
    """One line for each stale output table of the named (default: all) models (only their
    predictions tables with `predictions_only`); none when all are current."""
    return [w.hint() for w in written(con, names)
            if w.stale and (not predictions_only or w.command == "pyml score")]
