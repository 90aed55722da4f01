"""The train / validation / holdout split: one definition, rendered for DuckDB and Spark.

Every engine must put the same row in the same part, so the random (and kfold) split hashes
a canonical text of the key with md5, which DuckDB and Spark compute alike:

    text   = concat_ws(chr(31), '<salt>', coalesce(cast(k1 as varchar), chr(30)), ...)
    bucket = int(first 15 hex digits of md5(text), 16) % 1_000_000

`chr(31)` (unit separator) joins the parts, `chr(30)` stands for a NULL part. A row is in the
holdout when its bucket with salt `seed` is below `test_fraction * 1_000_000`, else in the
validation part when its bucket with salt `seed + 1` is below `validation_fraction *
1_000_000`, else in the train part. The split record (ml.models.split) names the hash kind,
`"hash": "md5-v1"`; a record without it is a version trained with DuckDB's own `hash()`
(pyml before the portable hash), still rendered as such on DuckDB so that the promotion
policy can rebuild an old champion's holdout.

Key types whose text is the same in both engines (checked): integers of any width, DECIMAL,
VARCHAR, BOOLEAN and DATE (years 1-9999). DOUBLE/FLOAT (`1e+20` vs `1.0E20`), TIMESTAMP (time
zones, fractions), UUID, BLOB and nested types render differently; `unportable_keys` names
them so the caller can warn (DuckDB) or refuse (Spark).

The time split keeps the latest `test_fraction` of labelled rows (by the split column, a
`quantile_disc` cut-off) as the holdout and the latest `validation_fraction` of the rest for
early stopping; the cut-offs are computed once per training run (`time_cutoffs` on DuckDB)
and stored in the record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import first_row
from pyml.engines.duckdb import quote as duckdb_quote
from pyml.errors import DataError, SpecError

HASH_BUCKETS = 1_000_000  # resolution of the hashed-key split and samples
HASH_KIND = "md5-v1"  # the split record's "hash" for the portable md5 split
LEGACY_HASH = "duckdb-hash"  # what a random/kfold record without "hash" means
DIALECTS = ("duckdb", "spark")
SEPARATOR = 31  # chr(): joins salt and key parts in the hashed text
NULL_PART = 30  # chr(): the text of a NULL key part
HEX_DIGITS = 15  # md5 hex digits kept: 60 bits, a positive BIGINT in both engines
HASHED_METHODS = ("random", "kfold")  # kfold draws its holdout as random does

# DuckDB type names (as relation_columns reports them) whose text is the same in Spark.
_PORTABLE = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
                       r"UBIGINT|UHUGEINT|DECIMAL(\(\d+,\s*\d+\))?|VARCHAR|BOOLEAN|DATE)$")


@dataclass(frozen=True)
class Cutoffs:
    """Where the time split's parts begin."""

    test_from: Any  # rows with column >= test_from are the holdout
    validation_from: Any | None  # rows in [validation_from, test_from) validate; None: none


def quote(name: str, dialect: str) -> str:
    """Quote one identifier for `dialect`."""
    _check_dialect(dialect)
    if dialect == "spark":
        return "`" + name.replace("`", "``") + "`"
    return duckdb_quote(name)


def bucket_sql(key: Sequence[str], salt: int, dialect: str) -> str:
    """SQL for the md5 bucket (0 .. HASH_BUCKETS - 1) of the key columns, salted."""
    _check_dialect(dialect)
    text_type = "string" if dialect == "spark" else "varchar"
    parts = [f"'{int(salt)}'"] + [
        f"coalesce(cast({quote(k, dialect)} as {text_type}), chr({NULL_PART}))" for k in key]
    digest = f"substr(md5(concat_ws(chr({SEPARATOR}), {', '.join(parts)})), 1, {HEX_DIGITS})"
    if dialect == "spark":
        return f"(cast(conv({digest}, 16, 10) as bigint) % {HASH_BUCKETS})"
    return f"(('0x' || {digest})::ubigint % {HASH_BUCKETS})"


def sample_sql(key: Sequence[str], fraction: float, salt: int, dialect: str = "duckdb") -> str:
    """A condition keeping about `fraction` of rows by their key, whatever the row order."""
    return f"{bucket_sql(key, salt, dialect)} < {int(fraction * HASH_BUCKETS)}"


def split_record(spec: ModelSpec, cutoffs: Cutoffs | None = None) -> dict[str, Any]:
    """The split as stored in ml.models.split (row counts are added after reading)."""
    sp = spec.split
    record: dict[str, Any] = {"method": sp.method, "test_fraction": sp.test_fraction,
                              "validation_fraction": sp.validation_fraction}
    if sp.method in HASHED_METHODS:
        record.update(seed=sp.seed, hash=HASH_KIND)
        if sp.method == "kfold":
            record["folds"] = sp.folds
        return record
    if cutoffs is None:
        raise SpecError(f"{spec.where}: split.method time needs its cut-offs "
                        "(pyml.data.split.time_cutoffs)")
    record.update(column=sp.column, test_from=cutoffs.test_from,
                  validation_from=cutoffs.validation_from)
    return record


def part_sql(spec: ModelSpec, dialect: str, cutoffs: Cutoffs | None = None
             ) -> tuple[str, list[Any]]:
    """SQL for the part of a row (0 train, 1 validation, 2 holdout) and its parameters."""
    return record_part_sql(split_record(spec, cutoffs), spec.key, dialect)


def record_part_sql(record: Mapping[str, Any], key: Sequence[str], dialect: str
                    ) -> tuple[str, list[Any]]:
    """The part expression of a stored split record (a version's `ml.models.split`).

    `key` is the version's key columns. A time record must name its "column" (records
    written before it did: take it from the version's stored spec).
    """
    _check_dialect(dialect)
    method = record.get("method")
    test, valid = float(record["test_fraction"]), float(record["validation_fraction"])
    if method in HASHED_METHODS:
        seed = int(record["seed"])
        kind = record.get("hash", LEGACY_HASH)
        if kind == LEGACY_HASH:
            return _legacy_part_sql(key, seed, test, valid, dialect)
        if kind != HASH_KIND:
            raise DataError(f"split hash {kind!r} is not one this pyml knows ({HASH_KIND}); "
                            "upgrade pyml or retrain")
        return (f"case when {bucket_sql(key, seed, dialect)} < ? then 2 "
                f"when {bucket_sql(key, seed + 1, dialect)} < ? then 1 else 0 end",
                [int(test * HASH_BUCKETS), int(valid * HASH_BUCKETS)])
    if method != "time":
        raise DataError(f"split method {method!r} is not random, time or kfold")
    column = record.get("column")
    if not isinstance(column, str) or not column:
        raise DataError("a time split record without its column")
    col = quote(column, dialect)
    if record.get("validation_from") is None:
        return f"case when {col} >= ? then 2 else 0 end", [record["test_from"]]
    return (f"case when {col} >= ? then 2 when {col} >= ? then 1 else 0 end",
            [record["test_from"], record["validation_from"]])


def _legacy_part_sql(key: Sequence[str], seed: int, test: float, valid: float, dialect: str
                     ) -> tuple[str, list[Any]]:
    """DuckDB's `hash()` split of pyml before md5-v1 (versions stored without "hash")."""
    if dialect != "duckdb":
        raise DataError(f"this version was split with DuckDB's hash() (no \"hash\" in its "
                        f"split record), which {dialect} cannot compute; retrain it")
    keys = ", ".join(duckdb_quote(k) for k in key)
    return (f"case when hash({keys}, ?::bigint) % {HASH_BUCKETS} < ? then 2 "
            f"when hash({keys}, ?::bigint) % {HASH_BUCKETS} < ? then 1 else 0 end",
            [seed, int(test * HASH_BUCKETS), seed + 1, int(valid * HASH_BUCKETS)])


def time_cutoffs(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str) -> Cutoffs:
    """The time split's cut-offs on DuckDB (`quantile_disc` over the labelled rows)."""
    sp = spec.split
    col = duckdb_quote(str(sp.column))
    target = duckdb_quote(spec.target)
    nulls = first_row(con, f"select count(*) from {source} where {target} is not null "
                           f"and {col} is null")
    if nulls and nulls[0]:
        raise DataError(f"{spec.where}: split column '{sp.column}' is NULL in {nulls[0]} "
                        "labelled rows; filter or fill them in the dbt model")
    row = first_row(con, f"select quantile_disc({col}, ?), min({col}) from {source} "
                         f"where {target} is not null", [1.0 - sp.test_fraction])
    test_from, first = (row[0], row[1]) if row else (None, None)
    if test_from is None or test_from == first:
        raise DataError(f"{spec.where}: split column '{sp.column}' has too few distinct "
                        "values to keep older rows for training and newer ones as holdout")
    if sp.validation_fraction <= 0:
        return Cutoffs(test_from, None)
    row = first_row(con, f"select quantile_disc({col}, ?) from {source} where {target} is not "
                         f"null and {col} < ?", [1.0 - sp.validation_fraction, test_from])
    valid_from = row[0] if row else None
    if valid_from is None or valid_from == first:
        # Too few periods for a separate validation slice: hold out none, no early stopping.
        return Cutoffs(test_from, None)
    return Cutoffs(test_from, valid_from)


def unportable_keys(key: Sequence[str], types: Mapping[str, str]) -> list[str]:
    """Key columns whose text differs between engines, each as 'name (TYPE)'."""
    return [f"{k} ({types[k]})" for k in key if k in types
            and not _PORTABLE.match(types[k].upper().strip())]


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """How two split records differ in what decides a row's part ('seed 42 vs 7', ...)."""
    out = []
    for name in ("method", "hash", "seed", "test_fraction", "validation_fraction", "column",
                 "test_from", "validation_from"):
        va, vb = _setting(a, name), _setting(b, name)
        if va != vb:
            out.append(f"{name} {va} vs {vb}")
    return out


def _setting(record: Mapping[str, Any], name: str) -> Any:
    if name == "hash" and record.get("method") in HASHED_METHODS:
        return record.get("hash", LEGACY_HASH)
    value = record.get(name)
    return value if value is None or isinstance(value, int | float) else str(value)


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"split SQL dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
