"""Training on tables bigger than memory: XGBoost external memory fed straight from DuckDB.

With a memory budget (`pyml train --max-memory 2GB`, or `max_memory:` in the spec) and a
training set whose in-memory footprint would not fit it, nothing row-sized is held in Python:

- the train and validation parts reach XGBoost through a `DataIter` that streams
  `FLOAT[k]` Arrow batches out of DuckDB (the same SQL-built input as the in-memory path);
  `ExtMemQuantileDMatrix` quantises them into pages cached in a temporary folder on disk
  and training reads the pages back one at a time;
- the leakage checks and the drift snapshot look at a seeded sample of the train part,
  chosen by hashing the key (so it is the same whatever order DuckDB returns rows in);
- the holdout is streamed once more after training: each batch is predicted and only its
  labels and predictions are kept (plus a small hashed sample of rows for mean |SHAP|);
- DuckDB streams on one thread, and its buffer pool and the batch size are cut down to
  fractions of the budget (see `Budget.duckdb`);
- every read is in one order whatever order dbt wrote the rows in, so the booster and the
  metrics do not depend on it: a part is read as key-bucket ranges small enough to hold
  (`Budget.chunks`), each sorted by row hash in numpy (`ordered_batches`).

What remains in memory grows with the row count only through XGBoost's per-row state
(labels, gradients, the prediction cache: about 24 bytes a row) and the holdout's labels and
predictions; docs/benchmarks.md measures the peak against the budget.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import xgboost as xgb

from pyml.data.encode import Encoder, Feature, Target, is_range_error, matrix_sql, range_error
from pyml.data.split import HASH_BUCKETS, bucket_sql, sample_sql
from pyml.data.trainset import Part, ReadProgress, labels
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import quote, stream_arrow
from pyml.errors import DataError, PymlError

Log = Callable[[str], None]

LIBRARY_BYTES = 400 << 20  # what Python, DuckDB, XGBoost and pyml take before any data
SAMPLE_ROWS = 200_000  # train rows behind the leakage checks and the drift snapshot
SHAP_ROWS = 2_000  # holdout rows kept for mean |SHAP| importance


def in_memory_bytes(rows: int, n_features: int) -> int:
    """Peak of the in-memory path, as measured (docs/benchmarks.md): the float32 parts,
    XGBoost's quantised copy and the temporaries of its construction, its per-row state,
    plus the libraries. About 9 bytes per value: 5.7 GB for 6.2M rows x 100 features."""
    return LIBRARY_BYTES + rows * (9 * n_features + 64)


@dataclass(frozen=True)
class Budget:
    """How a memory budget is shared out while training from disk."""

    total: int  # bytes

    def duckdb(self) -> dict[str, str]:
        """DuckDB settings while training from disk (`duckdb_settings`):

        - memory_limit, a quarter of the budget: the buffer pool would otherwise cache every
          block of the table it reads (a scan of a wide table pins a row group of every
          column, so not much less);
        - threads = 1: a parallel scan runs ahead of a consumer slower than it (XGBoost
          quantising a batch) and buffers its output until it hits the memory limit;
        - preserve_insertion_order = false: no buffering to keep the relation's row order
          either (`ordered_batches` puts rows in order itself).
        """
        return {"memory_limit": f"{self.duckdb_bytes() >> 20}MB", "threads": "1",
                "preserve_insertion_order": "false"}

    def duckdb_bytes(self) -> int:
        """DuckDB's memory limit while training from disk."""
        return max(128 << 20, self.total // 4)

    def chunks(self, rows: int, n_features: int) -> int:
        """Reads of `rows` rows are split into this many key-bucket ranges, each held and
        sorted in memory on its own (`ordered_batches`): each range's rows stay under a
        quarter of DuckDB's memory limit, a sixteenth of the budget (twice that while
        sorted)."""
        return max(1, -(-rows * (4 * n_features + 64) // (self.duckdb_bytes() // 4)))

    def batch_rows(self, n_features: int) -> int:
        """Rows per Arrow batch: the batch and its copy inside XGBoost stay under 1/32."""
        return int(min(262_144, max(4_096, self.total // 32 // (8 * max(n_features, 1)))))


@contextmanager
def duckdb_settings(con: duckdb.DuckDBPyConnection, settings: dict[str, str]
                    ) -> Iterator[None]:
    """Run with DuckDB `settings` changed (`set name = 'value'`), restoring them afterwards."""
    before = {name: str(con.execute(f"select current_setting('{name}')").fetchall()[0][0])
              for name in settings}
    for name, value in settings.items():
        con.execute(f"set {name} = '{value}'")
    try:
        yield
    finally:
        for name, value in before.items():
            con.execute(f"set {name} = '{value}'")


@dataclass(frozen=True)
class Read:
    """One part's rows for XGBoost (`ExternalSet._read`): a query whose rows end with their
    key-bucket range (`__pyml_r`, 0 .. ranges - 1) and row hash (`__pyml_h`)."""

    sql: str
    params: list[Any]
    ranges: int  # Budget.chunks: 1 when the rows fit in memory at once


def _sorted(table: pa.Table, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The table's rows sorted by row hash (its last column), in batches."""
    hashes = table.column(table.num_columns - 1).to_numpy()
    yield from table.take(pa.array(np.argsort(hashes, kind="stable"))).to_batches(
        max_chunksize=batch_rows)


def stage(con: duckdb.DuckDBPyConnection, read: Read, batch_rows: int, folder: str
          ) -> list[str]:
    """Stream the read once and write its rows to one Arrow file per key-bucket range in
    `folder` (each small enough to hold); the files in range order."""
    os.makedirs(folder, exist_ok=True)
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    reader = stream_arrow(con, read.sql, batch_rows, read.params)
    try:
        for batch in reader:
            ranges = batch.column(batch.num_columns - 2).to_numpy(zero_copy_only=False)
            for r in np.unique(ranges):
                if int(r) not in writers:
                    writers[int(r)] = pa.ipc.new_file(os.path.join(folder, f"{int(r)}.arrow"),
                                                      batch.schema)
                writers[int(r)].write_batch(batch.filter(pa.array(ranges == r)))
    finally:
        reader.close()
        for writer in writers.values():
            writer.close()
    return [os.path.join(folder, f"{r}.arrow") for r in sorted(writers)]


def ordered_batches(con: duckdb.DuckDBPyConnection, read: Read, batch_rows: int,
                    staged: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The read's rows in one order whatever order the relation stores them in: by key-bucket
    range, then row hash, sorted in numpy a range at a time (`staged`: the ranges' files
    from `stage`; without them the read must be a single range, held at once). DuckDB does
    not sort: its sort does not spill wide rows."""
    if staged is None:
        reader = stream_arrow(con, read.sql, batch_rows, read.params)
        try:
            table = reader.read_all()
        finally:
            reader.close()
        yield from _sorted(table, batch_rows)
        return
    for path in staged:
        with pa.memory_map(path) as source:
            yield from _sorted(pa.ipc.open_file(source).read_all(), batch_rows)


class _PartIter(xgb.DataIter):
    """One part of the split, streamed from DuckDB each time XGBoost iterates."""

    def __init__(self, batches: Callable[[], Iterator[pa.RecordBatch]],
                 encoder: Encoder, classes: pa.Array | None, batch_rows: int,
                 cache_prefix: str, progress: ReadProgress, meta: dict[str, Any],
                 where: str) -> None:
        self.source, self.meta, self.where = batches, meta, where
        self.encoder, self.classes, self.batch_rows = encoder, classes, batch_rows
        self.progress = progress
        self.batches: Iterator[pa.RecordBatch] | None = None
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def reset(self) -> None:
        self.batches = None
        self.progress.next_pass()

    def next(self, input_data: Callable[..., None]) -> bool:
        if self.batches is None:
            self.batches = self.source()
        batch = next(self.batches, None)
        if batch is None:
            return False
        X = self.encoder.from_fixed(batch.column(1), self.where)
        input_data(data=X, label=labels(batch.column(0), self.classes), **self.meta)
        self.progress.add(len(X))
        return True


@dataclass
class ExternalSet:
    """The parts of a training set that live on disk or in DuckDB, not in memory."""

    con: duckdb.DuckDBPyConnection  # a cursor of its own: the iterators stream from it
    spec: ModelSpec
    source: str  # relation SQL
    features: tuple[Feature, ...]
    target: Target
    part_sql: str  # 0 train, 1 validation, 2 holdout
    part_params: list[Any]
    sizes: tuple[int, int, int]  # rows per part
    budget: Budget
    cache_dir: str  # XGBoost's page cache (a temporary folder)
    log: Log

    def _read(self, part: int, rows: int, extra: str = "", where: str = "") -> Read:
        """The part's rows (about `rows`) with their key-bucket range (`Budget.chunks`
        ranges) and row hash, for `ordered_batches`."""
        y = quote(self.spec.target)
        n = self.budget.chunks(rows, len(self.features))
        bucket = bucket_sql(self.spec.key, self.spec.split.seed, "duckdb")
        used = ", ".join(quote(c) for c in dict.fromkeys(
            [*self.spec.key, self.spec.target, *(f.name for f in self.features)]))
        return Read(f"select {y} as __pyml_y, {matrix_sql(self.features)} as __pyml_x{extra}, "
                    f"{bucket} * {n} // {HASH_BUCKETS} as __pyml_r, hash({used}) as __pyml_h "
                    f"from {self.source} where {y} is not null and ({self.part_sql}) = {part}"
                    f"{where}", list(self.part_params), n)

    def _classes(self) -> pa.Array | None:
        return pa.array(list(self.target.classes)) if self.target.classes else None

    def _pick(self, fraction: float, salt: int) -> str:
        """A hashed-key condition keeping about `fraction` of rows, whatever their order."""
        return sample_sql(self.spec.key, fraction, salt)

    def dmatrix(self, part: int, ref: xgb.DMatrix | None, **kwargs: Any) -> xgb.DMatrix:
        """ExtMemQuantileDMatrix of one part, quantised from DuckDB batches (`kwargs`:
        feature_names and feature_types travel with each batch, the rest to XGBoost)."""
        meta = {k: kwargs.pop(k) for k in ("feature_names", "feature_types") if k in kwargs}
        read = self._read(part, self.sizes[part])
        what = ("train", "validation")[part]
        rows = self.budget.batch_rows(len(self.features))
        try:  # staged once, read back on every pass XGBoost makes
            staged = None if read.ranges == 1 else stage(
                self.con, read, rows, os.path.join(self.cache_dir, f"{what}-rows"))
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            raise self._read_error(e) from None
        progress = ReadProgress(self.spec.name, f"{what} part",
                                self.sizes[part], self.log)
        it = _PartIter(lambda: ordered_batches(self.con, read, rows, staged),
                       Encoder(self.features), self._classes(),
                       self.budget.batch_rows(len(self.features)),
                       os.path.join(self.cache_dir, what), progress, meta, self.spec.where)
        try:
            return xgb.ExtMemQuantileDMatrix(it, ref=ref, **kwargs)
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            raise self._read_error(e) from None
        except xgb.core.XGBoostError as e:
            # XGBoost wraps what the iterator raised; a PymlError keeps its own message.
            cause = e.__cause__ or e.__context__
            if isinstance(cause, PymlError):
                raise cause from None
            if isinstance(cause, duckdb.Error | pa.ArrowException | OSError):
                raise self._read_error(cause) from None
            raise _disk_error(self.spec, self.cache_dir, e) from None

    def _read_error(self, e: BaseException) -> PymlError:
        if is_range_error(e):
            return range_error(self.con, self.source, self.features, self.spec.where)
        return DataError(f"{self.spec.where}: reading {self.source} failed: "
                         f"{str(e).strip().splitlines()[0]}")

    def sample(self, rows: int = SAMPLE_ROWS, salt: int = 11) -> Part:
        """A hashed sample of about `rows` train rows, in memory (checks, drift snapshot)."""
        fraction = min(1.0, rows / max(self.sizes[0], 1))
        queries = self._read(0, min(rows, self.sizes[0]),
                             where=f" and {self._pick(fraction, salt)}")
        X_parts, y_parts = [], []
        encoder, classes = Encoder(self.features), self._classes()
        for batch in self._stream(queries):
            X_parts.append(encoder.from_fixed(batch.column(1), self.spec.where).copy())
            y_parts.append(labels(batch.column(0), classes))
        k = len(self.features)
        X = np.concatenate(X_parts) if X_parts else np.empty((0, k), np.float32)
        y = np.concatenate(y_parts) if y_parts else np.empty(0, np.float64)
        return Part(X, y)

    def holdout(self, booster: xgb.Booster, shap_rows: int = SHAP_ROWS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stream the holdout once: its labels, the booster's predictions and a small sample
        of its rows (for mean |SHAP|)."""
        fraction = min(1.0, shap_rows / max(self.sizes[2], 1))
        queries = self._read(2, self.sizes[2],
                             extra=f", {self._pick(fraction, 13)} as __pyml_pick")
        encoder, classes = Encoder(self.features), self._classes()
        ys, preds, picked = [], [], []
        progress = ReadProgress(self.spec.name, "holdout", self.sizes[2],
                                self.log)
        progress.next_pass()
        for batch in self._stream(queries):
            X = encoder.from_fixed(batch.column(1), self.spec.where)
            ys.append(labels(batch.column(0), classes))
            preds.append(np.asarray(booster.inplace_predict(X), dtype=np.float64))
            pick = batch.column(2).to_numpy(zero_copy_only=False).astype(bool)
            if pick.any():
                picked.append(X[pick].copy())
            progress.add(len(X))
        k = len(self.features)
        return (np.concatenate(ys), np.concatenate(preds),
                np.concatenate(picked) if picked else np.empty((0, k), np.float32))

    def _stream(self, read: Read) -> Iterator[pa.RecordBatch]:
        """A one-pass read in order (staged first when it has several ranges)."""
        rows = self.budget.batch_rows(len(self.features))
        try:
            if read.ranges == 1:
                yield from ordered_batches(self.con, read, rows)
                return
            with tempfile.TemporaryDirectory(dir=self.cache_dir) as folder:
                yield from ordered_batches(self.con, read, rows,
                                           stage(self.con, read, rows, folder))
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            raise self._read_error(e) from None


def _disk_error(spec: ModelSpec, folder: str, e: Exception) -> PymlError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return DataError(f"{spec.where}: XGBoost could not build its external-memory cache in "
                     f"the temporary folder ({first}); free disk space there or point TMPDIR "
                     "at a larger disk")


@contextmanager
def cache_folder() -> Iterator[str]:
    """A temporary folder for XGBoost's page cache, removed afterwards (TMPDIR decides where)."""
    with tempfile.TemporaryDirectory(prefix="pyml-extmem-") as folder:
        yield folder
