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
  fractions of the budget (see `Budget.duckdb`).

Reproducible across row orders (issue 16), as the in-memory path is: XGBoost's quantile
sketch follows the batches it is given and its float sums follow row order, so a table
rewritten in another order would train another booster. Each of the train and validation
parts is first streamed once out of DuckDB into bucket files on disk, a bucket per range of
the row hash (`trainset.row_hash_sql`: the key, label and features); every pass XGBoost
makes then reads the buckets in hash order, one bucket in memory at a time, sorted by the
full hash, in batches of a fixed size. The batches are the same whatever order the rows came
in. DuckDB's own sort is not used: it does not spill wide rows (an `ORDER BY` ran out of
memory under the budget's limit). The buckets take about the part's float32 size on disk,
next to XGBoost's quantised pages.

What remains in memory grows with the row count only through XGBoost's per-row state
(labels, gradients, the prediction cache: about 24 bytes a row) and the holdout's labels and
predictions; docs/benchmarks.md measures the peak against the budget.
"""

from __future__ import annotations

import contextlib
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
from pyml.data.split import sample_sql
from pyml.data.trainset import Part, ReadProgress, in_hash_order, labels, row_hash_sql
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import quote, stream_arrow
from pyml.errors import DataError, PymlError
from pyml.interrupts import uninterrupted

Log = Callable[[str], None]

LIBRARY_BYTES = 400 << 20  # what Python, DuckDB, XGBoost and pyml take before any data
SAMPLE_ROWS = 200_000  # train rows behind the leakage checks and the drift snapshot
SHAP_ROWS = 2_000  # holdout rows kept for mean |SHAP| importance
MAX_BUCKETS = 256  # bucket files per staged part (each open while the part is staged)
# Benchmarks only: False streams each pass from DuckDB in scan order (no staging), as pyml
# did before issue 16's ordering; bench/paths.py sets it to measure what ordering costs.
ORDERED = True


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
        - preserve_insertion_order = false: no buffering to keep row order either (pyml
          needs none: samples are hashed and the holdout is put in a canonical order).
        """
        return {"memory_limit": f"{max(128 << 20, self.total // 4) >> 20}MB", "threads": "1",
                "preserve_insertion_order": "false"}

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


class _PartIter(xgb.DataIter):
    """One part of the split, streamed from DuckDB each time XGBoost iterates."""

    def __init__(self, con: duckdb.DuckDBPyConnection, sql: str, params: list[Any],
                 encoder: Encoder, classes: pa.Array | None, batch_rows: int,
                 cache_prefix: str, progress: ReadProgress, meta: dict[str, Any],
                 where: str) -> None:
        self.con, self.sql, self.params, self.meta, self.where = con, sql, params, meta, where
        self.encoder, self.classes, self.batch_rows = encoder, classes, batch_rows
        self.progress = progress
        self.reader: pa.RecordBatchReader | None = None
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def reset(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader = None
        self.progress.next_pass()

    def next(self, input_data: Callable[..., None]) -> bool:
        if self.reader is None:
            self.reader = stream_arrow(self.con, self.sql, self.batch_rows, self.params)
        try:
            batch = self.reader.read_next_batch()
        except StopIteration:
            return False
        X = self.encoder.from_fixed(batch.column(1), self.where)
        input_data(data=X, label=labels(batch.column(0), self.classes), **self.meta)
        self.progress.add(len(X))
        return True


def _record(n_features: int) -> np.dtype:
    """One staged row: its hash, its label and its float32 input row."""
    return np.dtype([("h", "<u8"), ("y", "<f8"), ("x", "<f4", (n_features,))])


def bucket_count(part_bytes: int, budget: int) -> int:
    """Buckets for a staged part: a power of two, each about 1/16 of the budget (one bucket
    and one batch are in memory at a time), at most MAX_BUCKETS."""
    target = max(1 << 20, budget // 16)
    n = 1
    while n < MAX_BUCKETS and part_bytes > n * target:
        n *= 2
    return n


@dataclass(frozen=True)
class Staged:
    """One part's rows on disk, in bucket files by the top bits of their row hash."""

    paths: tuple[str, ...]  # one file per bucket, in hash order
    record: np.dtype
    rows: int

    def batches(self, batch_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(X, y) batches in row hash order: each bucket read whole and sorted by the full
        hash (stable: rows with equal hashes are equal rows, or a 64-bit collision), cut into
        `batch_rows`. The cuts depend on the rows only, not on the order they came in."""
        for path in self.paths:
            rows = np.fromfile(path, dtype=self.record)
            order = np.argsort(rows["h"], kind="stable")
            for lo in range(0, len(rows), batch_rows):
                pick = order[lo:lo + batch_rows]
                yield rows["x"][pick], rows["y"][pick]


class _StagedIter(xgb.DataIter):
    """One staged part, read back in hash order each time XGBoost iterates."""

    def __init__(self, staged: Staged, batch_rows: int, cache_prefix: str,
                 progress: ReadProgress, meta: dict[str, Any]) -> None:
        self.staged, self.batch_rows, self.progress, self.meta = (staged, batch_rows,
                                                                  progress, meta)
        self.batches: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def reset(self) -> None:
        self.batches = None
        self.progress.next_pass()

    def next(self, input_data: Callable[..., None]) -> bool:
        if self.batches is None:
            self.batches = self.staged.batches(self.batch_rows)
        batch = next(self.batches, None)
        if batch is None:
            return False
        input_data(data=batch[0], label=batch[1], **self.meta)
        self.progress.add(len(batch[1]))
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
    cache_dir: str  # XGBoost's page cache (a temporary folder), and the staged parts
    log: Log

    def _query(self, part: int, extra: str = "", where: str = "") -> tuple[str, list[Any]]:
        y = quote(self.spec.target)
        sql = (f"select {y} as __pyml_y, {matrix_sql(self.features)}{extra} from {self.source} "
               f"where {y} is not null and ({self.part_sql}) = {part}{where}")
        return sql, list(self.part_params)

    def _classes(self) -> pa.Array | None:
        return pa.array(list(self.target.classes)) if self.target.classes else None

    def _pick(self, fraction: float, salt: int) -> str:
        """A hashed-key condition keeping about `fraction` of rows, whatever their order."""
        return sample_sql(self.spec.key, fraction, salt)

    def dmatrix(self, part: int, ref: xgb.DMatrix | None, **kwargs: Any) -> xgb.DMatrix:
        """ExtMemQuantileDMatrix of one part, quantised from DuckDB batches (`kwargs`:
        feature_names and feature_types travel with each batch, the rest to XGBoost)."""
        meta = {k: kwargs.pop(k) for k in ("feature_names", "feature_types") if k in kwargs}
        what = ("train", "validation")[part]
        batch_rows = self.budget.batch_rows(len(self.features))
        it: xgb.DataIter
        if ORDERED:
            staged = self.stage(part)
            progress = ReadProgress(self.spec.name, f"{what} part (staged)", staged.rows,
                                    self.log)
            it = _StagedIter(staged, batch_rows, os.path.join(self.cache_dir, what),
                             progress, meta)
        else:
            sql, params = self._query(part)
            progress = ReadProgress(self.spec.name, f"{what} part", self.sizes[part], self.log)
            it = _PartIter(self.con, sql, params, Encoder(self.features), self._classes(),
                           batch_rows, os.path.join(self.cache_dir, what), progress, meta,
                           self.spec.where)
        try:
            return uninterrupted(xgb.ExtMemQuantileDMatrix, it, ref=ref, **kwargs)
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

    def stage(self, part: int) -> Staged:
        """Stream one part out of DuckDB once into bucket files by row hash (Staged)."""
        what = ("train", "validation")[part]
        record = _record(len(self.features))
        buckets = bucket_count(self.sizes[part] * record.itemsize, self.budget.total)
        shift = np.uint64(64 - (buckets.bit_length() - 1))  # the top log2(buckets) bits
        paths = tuple(os.path.join(self.cache_dir, f"{what}-{b:04d}.rows")
                      for b in range(buckets))
        sql, params = self._query(part, extra=f", {row_hash_sql(self.spec, self.features)}")
        encoder, classes = Encoder(self.features), self._classes()
        progress = ReadProgress(self.spec.name, f"{what} part (staging in row hash order)",
                                self.sizes[part], self.log)
        progress.next_pass()
        written = 0
        try:
            with contextlib.ExitStack() as files:
                out = [files.enter_context(open(path, "wb")) for path in paths]
                for batch in self._stream(sql, params):
                    rows = np.empty(batch.num_rows, record)
                    rows["x"] = encoder.from_fixed(batch.column(1), self.spec.where)
                    rows["y"] = labels(batch.column(0), classes)
                    rows["h"] = batch.column(2).to_numpy(zero_copy_only=False)
                    if buckets == 1:
                        rows.tofile(out[0])
                    else:
                        bucket = (rows["h"] >> shift).astype(np.intp)
                        rows = rows[np.argsort(bucket, kind="stable")]
                        start = 0
                        for b, end in enumerate(np.cumsum(np.bincount(bucket,
                                                                      minlength=buckets))):
                            if end > start:
                                rows[start:end].tofile(out[b])
                            start = int(end)
                    written += batch.num_rows
                    progress.add(batch.num_rows)
        except OSError as e:
            raise _disk_error(self.spec, self.cache_dir, e) from None
        if written != self.sizes[part]:
            raise DataError(f"{self.spec.where}: {self.source} changed while it was read; "
                            "rerun")
        return Staged(paths, record, written)

    def _read_error(self, e: BaseException) -> PymlError:
        if is_range_error(e):
            return range_error(self.con, self.source, self.features, self.spec.where)
        return DataError(f"{self.spec.where}: reading {self.source} failed: "
                         f"{str(e).strip().splitlines()[0]}")

    def sample(self, rows: int = SAMPLE_ROWS, salt: int = 11) -> Part:
        """A hashed sample of about `rows` train rows, in memory (checks, drift snapshot)."""
        fraction = min(1.0, rows / max(self.sizes[0], 1))
        sql, params = self._query(0, extra=f", {row_hash_sql(self.spec, self.features)}",
                                  where=f" and {self._pick(fraction, salt)}")
        X_parts, y_parts, h_parts = [], [], []
        encoder, classes = Encoder(self.features), self._classes()
        for batch in self._stream(sql, params):
            X_parts.append(encoder.from_fixed(batch.column(1), self.spec.where).copy())
            y_parts.append(labels(batch.column(0), classes))
            h_parts.append(batch.column(2).to_numpy(zero_copy_only=False))
        k = len(self.features)
        X = np.concatenate(X_parts) if X_parts else np.empty((0, k), np.float32)
        y = np.concatenate(y_parts) if y_parts else np.empty(0, np.float64)
        # In row hash order, as the in-memory path's parts: the checks and the snapshot's
        # seeded sample then follow from the rows alone.
        return in_hash_order(Part(X, y), np.concatenate(h_parts) if h_parts
                             else np.empty(0, np.uint64))

    def holdout(self, booster: xgb.Booster, shap_rows: int = SHAP_ROWS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stream the holdout once: its labels, the booster's predictions and a small sample
        of its rows (for mean |SHAP|)."""
        fraction = min(1.0, shap_rows / max(self.sizes[2], 1))
        sql, params = self._query(2, extra=f", {self._pick(fraction, 13)} as __pyml_pick, "
                                           f"{row_hash_sql(self.spec, self.features)}")
        encoder, classes = Encoder(self.features), self._classes()
        ys, preds, picked, picked_h = [], [], [], []
        progress = ReadProgress(self.spec.name, "holdout", self.sizes[2],
                                self.log)
        progress.next_pass()
        for batch in self._stream(sql, params):
            X = encoder.from_fixed(batch.column(1), self.spec.where)
            ys.append(labels(batch.column(0), classes))
            preds.append(np.asarray(booster.inplace_predict(X), dtype=np.float64))
            pick = batch.column(2).to_numpy(zero_copy_only=False).astype(bool)
            if pick.any():
                picked.append(X[pick].copy())
                picked_h.append(batch.column(3).to_numpy(zero_copy_only=False)[pick])
            progress.add(len(X))
        k = len(self.features)
        if not picked:
            return np.concatenate(ys), np.concatenate(preds), np.empty((0, k), np.float32)
        # The SHAP sample in row hash order (its mean's float sum follows the order).
        order = np.argsort(np.concatenate(picked_h), kind="stable")
        return np.concatenate(ys), np.concatenate(preds), np.concatenate(picked)[order]

    def _stream(self, sql: str, params: list[Any]) -> Iterator[pa.RecordBatch]:
        try:
            yield from stream_arrow(self.con, sql, self.budget.batch_rows(len(self.features)),
                                    params)
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
