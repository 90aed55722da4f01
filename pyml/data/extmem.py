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

Not yet reproducible across row orders (issue 16; the in-memory path is): rows reach XGBoost
in the order DuckDB scans them, so a table rewritten in another order can train a slightly
different booster. Ordering them was measured and kept out: DuckDB 2.0.1's sort does not
spill wide rows (an `ORDER BY` ran out of memory under the budget's limit, even per key
range), and staging the part to disk a key range at a time, sorted in numpy, doubled the
peak memory of the 2M x 100 / 256 MB benchmark (1,685 MB against 796 MB); see
docs/benchmarks.md.

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
from pyml.data.split import sample_sql
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
        sql, params = self._query(part)
        what = ("train", "validation")[part]
        progress = ReadProgress(self.spec.name, f"{what} part",
                                self.sizes[part], self.log)
        it = _PartIter(self.con, sql, params, Encoder(self.features), self._classes(),
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
        sql, params = self._query(0, where=f" and {self._pick(fraction, salt)}")
        X_parts, y_parts = [], []
        encoder, classes = Encoder(self.features), self._classes()
        for batch in self._stream(sql, params):
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
        sql, params = self._query(2, extra=f", {self._pick(fraction, 13)} as __pyml_pick")
        encoder, classes = Encoder(self.features), self._classes()
        ys, preds, picked = [], [], []
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
            progress.add(len(X))
        k = len(self.features)
        return (np.concatenate(ys), np.concatenate(preds),
                np.concatenate(picked) if picked else np.empty((0, k), np.float32))

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
