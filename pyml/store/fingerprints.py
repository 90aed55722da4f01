"""Row fingerprints beside ml.<model>_predictions, for `pyml score --incremental`.

ml.<model>_fingerprints holds one row per predictions row: the key, a 64-bit hash of the
row's feature values as the model reads them, and the model_version and scored_at of the
predictions table it belongs to. It is written in the transaction that writes the
predictions (a full score with fingerprints swaps both tables in; an incremental score
changes both in place), and a full score without fingerprints drops it in its own
transaction, so fingerprints never describe rows other than the ones beside them.

The fingerprint is DuckDB's `hash()` over the features in the model's order, each cast as
the encoder casts it first: numbers and booleans to DOUBLE, categories to VARCHAR. The
model's input row is a function of those values (float32 rounding, category codes and
NULL/NaN/unseen -> missing all come after), so an unchanged fingerprint means an unchanged
input row, whatever the column types became. Values the model cannot tell apart may hash
alike (-0.0 and 0.0; DuckDB hashes every NaN alike) or not (NULL and NaN): a row is then
rescored for nothing, never kept wrongly. NULL, '' and 0 hash apart, and the arguments'
order counts (hash(a, b) != hash(b, a)). The one way to keep a stale prediction is a 64-bit
collision: for DuckDB's (non-cryptographic) hash about 2**-64 per changed row, under 3e-13
for a run that changes 5 million rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

from pyml.data.encode import READ_CATEGORY, Feature, input_plan, matrix_sql
from pyml.engines.duckdb import first_row, qualified, quote, table_exists
from pyml.store.names import SCHEMA, predictions_table
from pyml.store.schema import comment_table

FINGERPRINT = "fingerprint"
# The fingerprint as the scoring stream carries it (user columns never start with __pyml).
STREAM_COLUMN = "__pyml_fingerprint"
_KEY = "__pyml_k"  # the fingerprints table's key columns, renamed apart from the relation's
GONE_COLUMN = "__pyml_gone"  # in the incremental stream: a stored key the relation lacks


class Stale(Exception):
    """The existing table cannot be updated in place; the message says why (logged)."""


def fingerprints_table(model: str) -> str:
    """Name (in the ml schema) of a model's row fingerprints table."""
    return f"{model}_fingerprints"


def fingerprint_sql(features: Sequence[Feature]) -> str:
    """One SQL expression: the row's fingerprint (UBIGINT) over the model's features."""
    parts = [f"cast({quote(rule.name)} as {'varchar' if rule.read == READ_CATEGORY else 'double'})"
             for rule in input_plan(features)]
    return f"hash({', '.join(parts)})"


def full_rows_sql(source: str, key: Sequence[str], features: Sequence[Feature]) -> str:
    """The scoring stream of a full score that keeps fingerprints: keys, the FLOAT[k] input
    row, the fingerprint."""
    keys = ", ".join(quote(k) for k in key)
    return (f"select {keys}, {matrix_sql(features)}, {fingerprint_sql(features)} as "
            f"{quote(STREAM_COLUMN)} from {source}")


def changed_rows_sql(model: str, source: str, key: Sequence[str],
                     features: Sequence[Feature]) -> str:
    """The stream of an incremental score, one join of the relation with the stored
    fingerprints (on the key): full_rows_sql's columns, then GONE_COLUMN, for each row whose
    key is new or whose fingerprint changed (GONE false), and for each stored key the
    relation no longer has (GONE true; its input row is all missing, its fingerprint NULL).
    Unchanged rows are not in it."""
    fp = qualified(SCHEMA, fingerprints_table(model))
    stored = [quote(f"{_KEY}{i}") for i in range(len(key))]
    renamed = ", ".join(f"{quote(k)} as {r}" for k, r in zip(key, stored, strict=True))
    on = " and ".join(f"s.{quote(k)} = f.{r}" for k, r in zip(key, stored, strict=True))
    keys = ", ".join(f"coalesce(s.{quote(k)}, f.{r}) as {quote(k)}"
                     for k, r in zip(key, stored, strict=True))
    column = quote(STREAM_COLUMN)
    return (f"select {keys}, {matrix_sql(features)}, s.{column}, f.{stored[0]} is not null "
            f"and s.{column} is null as {quote(GONE_COLUMN)} from "
            f"(select *, {fingerprint_sql(features)} as {column} from {source}) s "
            f"full outer join (select {renamed}, {quote(FINGERPRINT)} as {column} from {fp}) f "
            f"on {on} where f.{stored[0]} is null or s.{column} is null "
            f"or s.{column} <> f.{column}")


def stale_reason(con: duckdb.DuckDBPyConnection, model: str, version: int,
                 key: Sequence[tuple[str, str]]) -> str | None:
    """Why ml.<model>_predictions cannot be updated in place by `version`, or None if it can:
    it must exist, have fingerprints of its own rows (same rows, same scored_at), have been
    written by `version`, and its key columns must have the types `key` (column, DuckDB type)
    has in the relation now."""
    pred, fp = predictions_table(model), fingerprints_table(model)
    if not table_exists(con, SCHEMA, pred):
        return f"{SCHEMA}.{pred} does not exist yet"
    if not table_exists(con, SCHEMA, fp):
        return (f"{SCHEMA}.{pred} has no row fingerprints (a pyml score without --incremental "
                "wrote it)")
    columns = [(str(n), str(t)) for n, t in con.execute(
        "select column_name, data_type from information_schema.columns where table_catalog = "
        "current_database() and table_schema = ? and table_name = ? order by ordinal_position",
        [SCHEMA, fp]).fetchall()]
    names = [k for k, _ in key]
    if [n for n, _ in columns] != [*names, FINGERPRINT, "model_version", "scored_at"]:
        return f"{SCHEMA}.{fp} has other columns than key {', '.join(names)} needs"
    retyped = [f"{k} is {t} (was {was})" for (k, t), (_, was) in zip(key, columns, strict=False)
               if t != was]
    if retyped:
        return f"the key's type changed: {retyped[0]}"
    stats = ("select count(*), min(model_version), max(model_version), min(scored_at), "
             "max(scored_at) from ")
    try:
        p = first_row(con, stats + qualified(SCHEMA, pred))
        f = first_row(con, stats + qualified(SCHEMA, fp))
    except duckdb.Error as e:
        return f"{SCHEMA}.{pred} cannot be read as pyml wrote it ({str(e).splitlines()[0]})"
    if p is None or f is None or p[1] != p[2] or p[3] != p[4]:
        return f"{SCHEMA}.{pred} was not written by one pyml score"
    if p[1] != version:
        return f"v{p[1]} wrote {SCHEMA}.{pred}; v{version} scores now"
    if p != f:
        return f"{SCHEMA}.{fp} does not describe the rows of {SCHEMA}.{pred}"
    return None


def fingerprint_comments(model: str, key: Sequence[str], label: str
                         ) -> tuple[str, dict[str, str]]:
    """The COMMENTs of ml.<model>_fingerprints: the table's and each column's."""
    pred = f"{SCHEMA}.{predictions_table(model)}"
    columns = {k: f"key column from {label}, as in {pred}" for k in key}
    columns[FINGERPRINT] = ("DuckDB hash() of the row's features as the model reads them "
                            "(numbers as DOUBLE, categories as VARCHAR); a row whose "
                            "fingerprint changed is rescored by pyml score --incremental")
    columns["model_version"] = f"the version that wrote {pred} (as its model_version)"
    columns["scored_at"] = f"when {pred} was written (as its scored_at)"
    return (f"Row fingerprints of {pred} (pyml score --incremental): one row per predictions "
            "row, written in the same transaction", columns)


def split_off(con: duckdb.DuckDBPyConnection, tmp: str, model: str, key: Sequence[str],
              label: str) -> list[tuple[str, str]]:
    """replace_table's finish for a full score that keeps fingerprints: move the stream's
    fingerprint column of the new predictions table `tmp` into a new fingerprints table
    (both still uncommitted); returns the fingerprints table's (temporary, target) swap."""
    fp = fingerprints_table(model)
    tmp_fp = f"{tmp}_fp"
    keys = ", ".join(quote(k) for k in key)
    con.execute(f"create table {qualified(SCHEMA, tmp_fp)} as select {keys}, "
                f"{quote(STREAM_COLUMN)} as {quote(FINGERPRINT)}, model_version, scored_at "
                f"from {qualified(SCHEMA, tmp)}")
    con.execute(f"alter table {qualified(SCHEMA, tmp)} drop column {quote(STREAM_COLUMN)}")
    comment_table(con, tmp_fp, *fingerprint_comments(model, key, label))
    return [(tmp_fp, fp)]


def drop_stale(con: duckdb.DuckDBPyConnection, model: str) -> list[tuple[str, str]]:
    """replace_table's finish for a full score without fingerprints: drop the model's
    fingerprints table in the same transaction (they would describe the old rows)."""
    con.execute(f"drop table if exists {qualified(SCHEMA, fingerprints_table(model))}")
    return []


class Duplicates(Exception):
    """The merge found a key twice or left another row count than the relation's: the
    relation's key is not unique (the caller's key check names the count, as a full score
    does), or else the stored fingerprints did not match the table's rows."""


@dataclass(frozen=True)
class Merged:
    """What an incremental merge changed."""

    rows: int  # rows of the predictions table after it
    rescored: int  # rows scored anew (new keys and changed rows)
    gone: int  # rows dropped: their key left the relation


def merge(con: duckdb.DuckDBPyConnection, tmp: str, *, model: str, version: int,
          key: Sequence[str], scored_at: datetime, total: int) -> Merged:
    """update_table's apply for an incremental score, in its transaction: `tmp` holds
    changed_rows_sql's rows with their predictions. The rows of its keys (rescored or gone)
    leave both tables, the rescored rows go in, and every row gets `scored_at`, as a full
    score would write. The comments of both tables' scored_at columns are gone: the caller
    writes them again (prediction_comments, fingerprint_comments).

    The relation's key was not checked for duplicates up front (that costs a pass over all
    rows): a duplicate key either puts a key twice into `tmp` or leaves the table with
    fewer rows than the relation's `total`; both raise Duplicates, which rolls back.
    """
    pred = qualified(SCHEMA, predictions_table(model))
    fp = qualified(SCHEMA, fingerprints_table(model))
    new = qualified(SCHEMA, tmp)
    _check_types(con, tmp, predictions_table(model))
    outputs = [c for c in _columns(con, tmp) if c not in (STREAM_COLUMN, GONE_COLUMN)]
    keys = ", ".join(quote(k) for k in key)
    scored = f"not {quote(GONE_COLUMN)}"
    row = first_row(con, f"select count(*) filter (where {scored}), count(distinct ({keys})) "
                         f"filter (where {scored}), count(*) from {new}")
    if row is None or row[0] != row[1]:
        raise Duplicates(f"{SCHEMA}.{predictions_table(model)}: a key twice")
    rescored, gone = int(row[0]), int(row[2]) - int(row[0])
    on = " and ".join(f"t.{quote(k)} = n.{quote(k)}" for k in key)
    at = f"timestamp '{scored_at.isoformat(sep=' ')}'"
    for name, table in ((predictions_table(model), pred), (fingerprints_table(model), fp)):
        con.execute(f"delete from {table} as t using {new} n where {on}")
        if _indexed(con, name):  # DuckDB alters no table that has an index: update
            con.execute(f"update {table} set scored_at = ?", [scored_at])
            continue
        # Every row gets the run's scored_at as a new column (last, where it was), not as an
        # UPDATE of every row: at 5M rows the update's commit took 0.6 s, the column swap
        # 0.04 s (docs/benchmarks.md). The caller puts the column's comment back.
        con.execute(f"alter table {table} drop column scored_at")
        con.execute(f"alter table {table} add column scored_at timestamp default {at}")
        con.execute(f"alter table {table} alter column scored_at drop default")
    cols = ", ".join(quote(c) for c in outputs)
    con.execute(f"insert into {pred} ({cols}, model_version, scored_at) "
                f"select {cols}, ?, ? from {new} where {scored}", [version, scored_at])
    con.execute(f"insert into {fp} ({keys}, {quote(FINGERPRINT)}, model_version, scored_at) "
                f"select {keys}, {quote(STREAM_COLUMN)}, ?, ? from {new} where {scored}",
                [version, scored_at])
    row = first_row(con, f"select count(*) from {pred}")
    rows = int(row[0]) if row else 0
    if rows != total:
        raise Duplicates(f"the merge left {SCHEMA}.{predictions_table(model)} with {rows:,} "
                         f"rows for the relation's {total:,}")
    return Merged(rows, rescored, gone)


def _indexed(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ml.<table> has an index (one a user made for lookups by key, say)."""
    row = first_row(con, "select count(*) from duckdb_indexes() where database_name = "
                         "current_database() and schema_name = ? and table_name = ?",
                    [SCHEMA, table])
    return bool(row and row[0])


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [str(r[0]) for r in _typed(con, table)]


def _typed(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(str(n), str(t)) for n, t in con.execute(
        "select column_name, data_type from duckdb_columns() where database_name = "
        "current_database() and schema_name = ? and table_name = ? order by column_index",
        [SCHEMA, table]).fetchall()]


def _check_types(con: duckdb.DuckDBPyConnection, tmp: str, pred: str) -> None:
    """The rescored rows' columns are the predictions table's (a full score would write the
    same names and types), else Stale: e.g. a key column whose type changed in the dbt
    model."""
    fresh = [c for c in _typed(con, tmp) if c[0] not in (STREAM_COLUMN, GONE_COLUMN)]
    stored = [c for c in _typed(con, pred) if c[0] not in ("model_version", "scored_at")]
    if fresh != stored:
        diff = next((f"{a[0]} {a[1]} (was {b[0]} {b[1]})" for a, b in zip(fresh, stored,
                                                                          strict=False)
                     if a != b), "the columns")
        raise Stale(f"{SCHEMA}.{pred}'s columns differ from a full score's: {diff}")
