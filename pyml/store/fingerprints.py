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
    """The stream of an incremental score: full_rows_sql's columns for the rows whose key is
    not in ml.<model>_fingerprints with the row's current fingerprint (new or changed)."""
    fp = qualified(SCHEMA, fingerprints_table(model))
    renamed = ", ".join(f"{quote(k)} as {quote(f'{_KEY}{i}')}" for i, k in enumerate(key))
    on = " and ".join(f"s.{quote(k)} = f.{quote(f'{_KEY}{i}')}" for i, k in enumerate(key))
    keys = ", ".join(f"s.{quote(k)}" for k in key)
    return (f"select {keys}, {matrix_sql(features)}, s.{quote(STREAM_COLUMN)} from "
            f"(select *, {fingerprint_sql(features)} as {quote(STREAM_COLUMN)} "
            f"from {source}) s anti join (select {renamed}, {quote(FINGERPRINT)} as "
            f"{quote(STREAM_COLUMN)} from {fp}) f on {on} and "
            f"s.{quote(STREAM_COLUMN)} = f.{quote(STREAM_COLUMN)}")


def stale_reason(con: duckdb.DuckDBPyConnection, model: str, version: int,
                 key: Sequence[str]) -> str | None:
    """Why ml.<model>_predictions cannot be updated in place by `version`, or None if it can:
    it must exist, have fingerprints of its own rows (same rows, same scored_at) and have been
    written by `version`."""
    pred, fp = predictions_table(model), fingerprints_table(model)
    if not table_exists(con, SCHEMA, pred):
        return f"{SCHEMA}.{pred} does not exist yet"
    if not table_exists(con, SCHEMA, fp):
        return (f"{SCHEMA}.{pred} has no row fingerprints (a pyml score without --incremental "
                "wrote it)")
    columns = [str(r[0]) for r in con.execute(
        "select column_name from information_schema.columns where table_catalog = "
        "current_database() and table_schema = ? and table_name = ? order by ordinal_position",
        [SCHEMA, fp]).fetchall()]
    if columns != [*key, FINGERPRINT, "model_version", "scored_at"]:
        return f"{SCHEMA}.{fp} has other columns than key {', '.join(key)} needs"
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


def merge(con: duckdb.DuckDBPyConnection, tmp: str, *, model: str, version: int, source: str,
          key: Sequence[str], scored_at: datetime) -> int:
    """update_table's apply for an incremental score, in its transaction: `tmp` holds the
    rescored rows (keys, prediction columns, the stream's fingerprint). Rows of keys rescored
    or gone from `source` leave both tables, the rescored rows go in, and every row gets
    `scored_at`, as a full score would write. Returns the predictions table's rows."""
    pred = qualified(SCHEMA, predictions_table(model))
    fp = qualified(SCHEMA, fingerprints_table(model))
    new = qualified(SCHEMA, tmp)
    _check_types(con, tmp, predictions_table(model), key)
    outputs = [c for c in _columns(con, tmp) if c != STREAM_COLUMN]
    keys = ", ".join(quote(k) for k in key)
    gone = qualified(SCHEMA, f"{tmp}_gone")  # dropped below; never committed
    con.execute(f"create table {gone} as select {keys} from {new} union all "
                f"(select {keys} from {fp} anti join {source} s using ({keys}))")
    on = " and ".join(f"t.{quote(k)} = g.{quote(k)}" for k in key)
    for table in (pred, fp):
        con.execute(f"delete from {table} as t using {gone} g where {on}")
        con.execute(f"update {table} set scored_at = ?", [scored_at])
    cols = ", ".join(quote(c) for c in outputs)
    con.execute(f"insert into {pred} ({cols}, model_version, scored_at) "
                f"select {cols}, ?, ? from {new}", [version, scored_at])
    con.execute(f"insert into {fp} ({keys}, {quote(FINGERPRINT)}, model_version, scored_at) "
                f"select {keys}, {quote(STREAM_COLUMN)}, ?, ? from {new}", [version, scored_at])
    con.execute(f"drop table {gone}")
    row = first_row(con, f"select count(*) from {pred}")
    return int(row[0]) if row else 0


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [str(r[0]) for r in _typed(con, table)]


def _typed(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(str(n), str(t)) for n, t in con.execute(
        "select column_name, data_type from duckdb_columns() where database_name = "
        "current_database() and schema_name = ? and table_name = ? order by column_index",
        [SCHEMA, table]).fetchall()]


def _check_types(con: duckdb.DuckDBPyConnection, tmp: str, pred: str,
                 key: Sequence[str]) -> None:
    """The rescored rows' columns are the predictions table's (a full score would write the
    same names and types), else Stale: e.g. a key column whose type changed in the dbt
    model."""
    fresh = [c for c in _typed(con, tmp) if c[0] != STREAM_COLUMN]
    stored = [c for c in _typed(con, pred) if c[0] not in ("model_version", "scored_at")]
    if fresh != stored:
        diff = next((f"{a[0]} {a[1]} (was {b[0]} {b[1]})" for a, b in zip(fresh, stored,
                                                                          strict=False)
                     if a != b), "the columns")
        raise Stale(f"{SCHEMA}.{pred}'s columns differ from a full score's: {diff}")
