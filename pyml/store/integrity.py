"""Is the registry whole? A damaged `ml` schema is refused, never repaired.

The registry's tables hold each other's keys: every per-version row (metrics, importances,
evaluation tables, snapshots, events, drift checks, trials) belongs to a row of ml.models.
Hand edits can break that: ml.models dropped while ml.metrics stays, rows deleted or their
versions bumped, a column dropped or retyped. pyml used to trip over such a registry with a
DuckDB traceback, or worse, "repair" it: creating an empty ml.models beside orphan metrics,
then failing on their keys (and leaving the empty table behind), or numbering new versions
into the orphans. Each reader and writer of the registry now checks it first, with read-only
catalog queries, and refuses with one line naming the damage and the fix; nothing is written.

What is not damage: a registry from an older release lacks the tables and the trailing
columns later releases added (ensure_schema adds them), so a missing table other than
ml.models, ml.metrics or ml.feature_importance, or missing *trailing* columns, pass. A status
column missing while ml.model_events has rows is damage: events and statuses came together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb

from pyml.engines.duckdb import first_row, qualified
from pyml.errors import RegistryDamaged
from pyml.store.names import SCHEMA

if TYPE_CHECKING:
    from pyml.store.schema import Table

# Tables the first release wrote; any registry that has ml.models has them.
ORIGINAL = ("models", "metrics", "feature_importance")
STATUSES = ("champion", "challenger", "retired")
_RESTORE = "restore the database file from a backup"


def _damaged(what: str, fix: str = _RESTORE) -> RegistryDamaged:
    return RegistryDamaged(f"the model registry (schema {SCHEMA}) is damaged: {what}; {fix} "
                           "(pyml does not repair a registry: it would have to make up what "
                           "was lost)")


def _base_type(declared: str) -> str:
    """'varchar not null' -> 'VARCHAR': the DuckDB type information_schema reports."""
    return declared.split()[0].upper()


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """table -> column -> type, for every table of the ml schema."""
    out: dict[str, dict[str, str]] = {}
    for table, column, kind in con.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_catalog = current_database() and table_schema = ? "
            "order by table_name, ordinal_position", [SCHEMA]).fetchall():
        out.setdefault(str(table), {})[str(column)] = str(kind)
    return out


def _list(items: Sequence[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def check_registry(con: duckdb.DuckDBPyConnection, tables: Sequence[Table]) -> None:
    """Raise RegistryDamaged when the registry's tables contradict each other; else nothing.

    `tables` are the registry's declared tables (pyml.store.schema.TABLES), ml.models first.
    Read-only and cheap (a catalog query and one anti-join per table), so every command that
    reads or writes the registry runs it first.
    """
    have = _columns(con)
    declared = {t.name: t for t in tables}
    present = [t.name for t in tables if t.name in have]
    if "models" not in have:
        if present:
            names = [f"{SCHEMA}.{n}" for n in present]
            remain = (f"{len(names)} other registry tables remain" if len(names) > 1
                      else "another registry table remains")
            raise _damaged(f"{SCHEMA}.models is missing but {remain} ({_list(names)})",
                           f"{_RESTORE}, or drop those tables to start an empty registry")
        return
    for name in ORIGINAL:
        if name not in have:
            raise _damaged(f"{SCHEMA}.{name} is missing while {SCHEMA}.models holds versions")
    for name in present:
        _check_columns(declared[name], have[name])
    if "status" not in have["models"] and "model_events" in have:
        row = first_row(con, f"select count(*) from {qualified(SCHEMA, 'model_events')}")
        if row and row[0]:
            raise _damaged(f"{SCHEMA}.models has no column 'status' while "
                           f"{SCHEMA}.model_events records statuses")
    for name in present:
        if name != "models" and {"model_name", "version"} <= set(have[name]):
            _check_orphans(con, name)
    if "status" in have["models"]:
        _check_statuses(con)


def _check_columns(table: Table, have: dict[str, str]) -> None:
    """Every declared column present with its type, except trailing ones an older release
    did not have yet."""
    names = [c.name for c in table.columns]
    missing = [i for i, n in enumerate(names) if n not in have]
    if missing and missing != list(range(missing[0], len(names))):
        gone = names[missing[0]]
        raise _damaged(f"{SCHEMA}.{table.name} has no column '{gone}'")
    for c in table.columns:
        if c.name in have and have[c.name].upper() != _base_type(c.type):
            raise _damaged(f"column {SCHEMA}.{table.name}.{c.name} is {have[c.name]}, not "
                           f"{_base_type(c.type)} as pyml writes it")


def _check_orphans(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Rows of versions that ml.models lacks (deleted, or versions bumped by hand)."""
    rows = con.execute(
        f"select t.model_name, t.version, count(*) from {qualified(SCHEMA, name)} t "
        f"anti join {qualified(SCHEMA, 'models')} m "
        "on m.model_name = t.model_name and m.version = t.version "
        "where t.version is not null group by all order by 1, 2").fetchall()
    if rows:
        total = sum(int(r[2]) for r in rows)
        versions = [f"{r[0]} v{r[1]}" for r in rows]
        raise _damaged(f"{SCHEMA}.{name} has {total} rows of versions that {SCHEMA}.models "
                       f"lacks ({_list(versions)})",
                       f"{_RESTORE}, or delete those rows from {SCHEMA}.{name}")


def _check_statuses(con: duckdb.DuckDBPyConnection) -> None:
    """Known statuses only, and at most one champion per model."""
    models = qualified(SCHEMA, "models")
    row = first_row(con, f"select model_name, version, status from {models} "
                         "where status is not null and not list_contains(?, status) "
                         "order by 1, 2 limit 1", [list(STATUSES)])
    if row:
        raise _damaged(f"{SCHEMA}.models gives {row[0]} v{row[1]} the status {row[2]!r}; pyml "
                       f"writes {', '.join(STATUSES)}",
                       f"{_RESTORE}, or set it to one of those")
    row = first_row(con, f"select model_name, list(version order by version) from {models} "
                         "where status = 'champion' group by model_name "
                         "having count(*) > 1 order by 1 limit 1")
    if row:
        versions = ", ".join(f"v{v}" for v in row[1])
        raise _damaged(f"model {row[0]} has {len(row[1])} champions ({versions}) in "
                       f"{SCHEMA}.models", f"{_RESTORE}, or set all but one to 'retired'")

