"""Reading a training set out of DuckDB with bounded, predictable memory.

DuckDB computes the split column and the row-major FLOAT[k] input matrix in parallel; Python
receives Arrow batches whose values buffer is already the XGBoost input, and copies each
batch's rows straight into preallocated float32 arrays for the train, validation and holdout
parts (`np.compress(..., out=...)`). There is no pandas frame, no float64 copy of the data
and no fancy-indexing copy of the whole matrix: peak memory is one float32 matrix plus
XGBoost's own quantised copy.

XGBoost's booster depends on row order, and dbt may write a table's rows in any order, so
each part is then put in one order whatever order the rows came in: by a 64-bit hash of the
row's key, label and features (DuckDB's `hash()`, computed with the read), a stable argsort
and one part-sized copy at a time (smaller than XGBoost's quantised copy made later, so the
peak does not grow). DuckDB does not sort: its sort does not spill wide rows and would need
the whole matrix in its buffer pool. Rows with equal hashes are equal rows (or a 64-bit
collision), interchangeable for XGBoost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from pyml.data.encode import (
    F32_MAX,
    Encoder,
    Feature,
    Target,
    encode_target,
    is_range_error,
    label_codes,
    matrix_sql,
    range_error,
)
from pyml.data.encode import learn_categories as data_learn_categories
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import first_row, quote, stream_arrow
from pyml.errors import DataError

BATCH_ROWS = 262_144
PARTS = ("train", "validation", "holdout")


class ReadProgress:
    """Rows read per pass over a part, logged every ~10% with the rate."""

    def __init__(self, name: str, what: str, rows: int, log: Callable[[str], None],
                 passes: bool = True) -> None:
        self.name, self.what, self.rows, self.log = name, what, rows, log
        self.show_passes = passes
        self.passes, self.done, self.next_at = 0, 0, 0
        self.started = time.perf_counter()

    def next_pass(self) -> None:
        if self.done:
            self.passes += 1
        self.done, self.next_at = 0, max(1, self.rows // 10)
        self.started = time.perf_counter()

    def add(self, n: int) -> None:
        self.done += n
        if self.done >= self.next_at or self.done == self.rows:
            self.next_at += max(1, self.rows // 10)
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            which = f" pass {self.passes + 1}" if self.show_passes else ""
            self.log(f"[{self.name}] {self.what}{which}: {self.done:,}/{self.rows:,} rows "
                     f"({rate:,.0f} rows/s)")


@dataclass
class Part:
    """The rows of one part of the split."""

    X: np.ndarray  # float32 (rows, features), NaN = missing
    y: np.ndarray  # encoded labels (class index or value), float64


@dataclass(frozen=True)
class TrainingSet:
    """Everything training needs, read in one pass."""

    features: tuple[Feature, ...]  # with the category mappings learned here
    target: Target  # label type and classes
    parts: tuple[Part, Part, Part]  # train, validation, holdout

    @property
    def train(self) -> Part:
        """Rows the booster is fitted on."""
        return self.parts[0]

    @property
    def valid(self) -> Part:
        """Rows for early stopping (may be empty)."""
        return self.parts[1]

    @property
    def test(self) -> Part:
        """The holdout: evaluated once, never trained or tuned on."""
        return self.parts[2]


def learn_target(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str,
                 dtype: str) -> Target:
    """Classes (classifiers) or a finiteness check (regression), computed in SQL."""
    y = quote(spec.target)
    if spec.task == "regression":
        # Type check first (same message as for in-memory labels), then finiteness in SQL.
        encode_target(spec, dtype, pa.chunked_array([pa.array([], pa.float64())]))
        # XGBoost keeps labels as float32: a finite DOUBLE beyond its range is infinite there.
        bad = first_row(con, f"select count(*) filter (where not isfinite(cast({y} as double)) "
                             f"or abs(cast({y} as double)) > ?) from {source} "
                             f"where {y} is not null", [F32_MAX])
        if bad and bad[0]:
            raise DataError(f"{spec.where}: target '{spec.target}' has {bad[0]} NaN, infinite "
                            f"or out-of-range values (|x| > {F32_MAX:.3g}); NULL or clean them "
                            "in the dbt model")
        return Target(dtype)
    table = con.sql(f"select distinct {y} from {source} where {y} is not null").to_arrow_table()
    assert table is not None
    _, target = encode_target(spec, dtype, table.column(0))
    return target


def learn_categories(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str,
                     features: Sequence[Feature]) -> list[Feature]:
    """Each categorical feature's mapping: its sorted distinct values among labelled rows.

    DuckDB computes the distinct values; `pyml.data.encode.learn_categories` sorts and checks them.
    """
    y = quote(spec.target)
    columns = []
    for f in features:
        if f.kind == "categorical":
            table = con.sql(f"select distinct cast({quote(f.name)} as varchar) from {source} "
                            f"where {y} is not null").to_arrow_table()
            assert table is not None
            columns.append(table.column(0))
        else:
            columns.append(pa.chunked_array([], pa.string()))
    return data_learn_categories(features, columns, spec.where)


def part_sizes(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str, part_sql: str,
               part_params: list[Any]) -> list[int]:
    """Labelled rows in the train, validation and holdout parts."""
    counts = dict(con.execute(
        f"select part, count(*) from (select {part_sql} as part from {source} "
        f"where {quote(spec.target)} is not null) group by part", part_params).fetchall())
    return [int(counts.get(p, 0)) for p in (0, 1, 2)]


def train_label_base(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str,
                     target: Target, part_sql: str, part_params: list[Any]) -> np.ndarray:
    """`pyml.modelling.metrics.label_base` of the train part, computed in SQL (nothing row-sized in
    memory): each class's share, or the mean for regression."""
    y = quote(spec.target)
    where = f"from {source} where {y} is not null and ({part_sql}) = 0"
    if not target.classes:
        row = first_row(con, f"select avg(cast({y} as double)) {where}", part_params)
        return np.array([float(row[0]) if row and row[0] is not None else np.nan])
    table = con.sql(f"select {y}, count(*) {where} group by 1", params=part_params or None
                    ).to_arrow_table()
    assert table is not None
    counts = np.zeros(len(target.classes))
    index = labels(table.column(0), pa.array(list(target.classes))).astype(int)
    counts[index] = table.column(1).to_numpy()
    return counts / max(counts.sum(), 1.0)


def read_training_set(con: duckdb.DuckDBPyConnection, spec: ModelSpec, source: str,
                      features: Sequence[Feature], target: Target, part_sql: str,
                      part_params: list[Any], batch_rows: int = BATCH_ROWS,
                      log: Callable[[str], None] | None = None, ordered: bool = True
                      ) -> TrainingSet:
    """Stream the labelled rows once into preallocated float32 parts, each then sorted by
    row hash (`ordered=False`: left in the order DuckDB returned them; benchmarks only)."""
    y = quote(spec.target)
    sizes = part_sizes(con, spec, source, part_sql, part_params)
    k = len(features)
    parts = tuple(Part(np.empty((n, k), np.float32), np.empty(n, np.float64)) for n in sizes)
    encoder = Encoder(features)
    classes = pa.array(list(target.classes)) if target.classes else None
    hashes = tuple(np.empty(n, np.uint64) for n in sizes)
    reader = None
    try:  # the first batch is computed when the reader is made: a range error can come here
        reader = stream_arrow(
            con, f"select {y} as __pyml_y, {part_sql} as __pyml_part, {matrix_sql(features)} "
                 f"as __pyml_x, {row_hash_sql(spec, features)} as __pyml_h from {source} "
                 f"where {y} is not null",
            batch_rows, part_params)
        progress = ReadProgress(spec.name, "read", sum(sizes),
                                log or (lambda _: None), passes=False)
        progress.next_pass()
        _fill(reader, parts, hashes, sizes, encoder, classes, spec.where, source, progress)
    except (duckdb.Error, pa.ArrowException, OSError) as e:
        if is_range_error(e):
            raise range_error(con, source, features, spec.where) from None
        raise
    finally:
        if reader is not None:
            # An open reader keeps the database open (and locked) for as long as the
            # exception's traceback lives, e.g. in a notebook after an error.
            reader.close()
    if ordered:
        parts = tuple(in_hash_order(part, h) for part, h in zip(parts, hashes, strict=True))
    return TrainingSet(tuple(features), target, (parts[0], parts[1], parts[2]))


def row_hash_sql(spec: ModelSpec, features: Sequence[Feature]) -> str:
    """The row hash (UBIGINT) that puts a part's rows in one order whatever order they came
    in: DuckDB's hash() of the key, the label and the features."""
    used = ", ".join(quote(c) for c in dict.fromkeys(
        [*spec.key, spec.target, *(f.name for f in features)]))
    return f"hash({used})"


def in_hash_order(part: Part, hashes: np.ndarray) -> Part:
    """The part's rows sorted by their row hashes (one copy of the part at a time)."""
    order = np.argsort(hashes, kind="stable")
    return Part(part.X[order], part.y[order])


def labels(column: pa.Array | pa.ChunkedArray, classes: pa.Array | None) -> np.ndarray:
    """XGBoost labels of a batch: class indexes (classifiers) or the values, as float64."""
    if classes is not None:
        y = label_codes(column, classes).to_numpy(zero_copy_only=False)
    else:
        y = column.to_numpy(zero_copy_only=False)
    return np.asarray(y, dtype=np.float64)


def _fill(reader: pa.RecordBatchReader, parts: tuple[Part, ...],
          hashes: tuple[np.ndarray, ...], sizes: list[int], encoder: Encoder,
          classes: pa.Array | None, where: str, source: str, progress: ReadProgress) -> None:
    """Copy each batch's rows into the preallocated part arrays."""
    filled = [0, 0, 0]
    for batch in reader:
        part = batch.column(1).to_numpy()
        X = encoder.from_fixed(batch.column(2), where)
        yb = labels(batch.column(0), classes)
        hb = batch.column(3).to_numpy(zero_copy_only=False)
        for p in (0, 1, 2):
            mask = part == p
            n = int(np.count_nonzero(mask))
            if not n:
                continue
            lo, hi = filled[p], filled[p] + n
            if hi > sizes[p]:
                raise DataError(f"{where}: {source} changed while it was read; rerun")
            np.compress(mask, X, axis=0, out=parts[p].X[lo:hi])
            np.compress(mask, yb, out=parts[p].y[lo:hi])
            np.compress(mask, hb, out=hashes[p][lo:hi])
            filled[p] = hi
        progress.add(len(X))
    if filled != sizes:
        raise DataError(f"{where}: {source} changed while it was read; rerun")
