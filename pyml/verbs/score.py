"""`pyml score`: stream a relation through a model and swap in ml.<model>_predictions.

Rows travel as Arrow record batches: DuckDB -> float32 matrix -> XGBoost -> Arrow -> DuckDB,
one batch at a time, so memory is bounded by the batch size. The new table is built under a
temporary name and swapped in with one short transaction: readers see the old table or the
new one, never a half-written one, and a failure leaves the old one in place.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pyml.data.encode import check_schema, is_range_error, matrix_sql, range_error
from pyml.dbt.project import Project, resolve_relation
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import (
    abort_transaction,
    connect,
    first_row,
    qualified,
    quote,
    relation_columns,
    stream_arrow,
)
from pyml.errors import DataError, PymlError
from pyml.files import replacing
from pyml.modelling.model import LoadedModel, key_types
from pyml.store.registry import SCHEMA, load_version

Log = Callable[[str], None]


@dataclass(frozen=True)
class ScoreResult:
    """What one scoring run wrote."""

    name: str  # model name
    version: int  # model version used
    table: str  # ml.<name>_predictions
    rows: int  # rows written
    seconds: float  # wall time
    output: Path | None  # file written with --output, if any


SCORE_MEMORY_LIMIT = "256MB"  # DuckDB buffer pool while scoring (see score_relation)


def _noop(_: str) -> None:
    pass


def predictions_table(name: str) -> str:
    """Name (in the ml schema) of a model's predictions table."""
    return f"{name}_predictions"


def score(project: Project, specs: Sequence[ModelSpec], *, version: int | None = None,
          output: Path | None = None, batch_size: int | None = None, log: Log | None = None,
          lock_timeout: float = 5.0) -> list[ScoreResult]:
    """Score every spec with its latest (or the given) version; write the predictions tables."""
    log = log or _noop
    if output is not None and len(specs) > 1:
        raise PymlError("--output writes one file: select a single model to score")
    if output is not None and output.suffix.lower() not in (".parquet", ".csv"):
        raise PymlError(f"--output {output}: use a .parquet or .csv file name")
    if output is not None and not output.expanduser().resolve().parent.is_dir():
        # Checked before scoring, so a mistyped folder leaves the predictions table as it was.
        path = output.expanduser().resolve()
        raise PymlError(f"--output {path}: folder {path.parent} does not exist")
    con = connect(project.db_path, lock_timeout=lock_timeout)
    try:
        results = []
        for spec in specs:
            relation = (resolve_relation(project, spec.score.relation, spec.where)
                        if spec.score.relation else (spec.schema, spec.relation))
            model = LoadedModel(load_version(con, spec.name, version))
            results.append(score_relation(
                con, model, relation, batch_size=batch_size or spec.score.batch_size,
                output=output, log=log))
        return results
    finally:
        con.close()


def _prefetch(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The reader's batches, the next one read by a thread while the caller predicts.

    DuckDB builds the next `FLOAT[k]` batch while XGBoost predicts this one (both release
    the GIL): ~10% faster end to end on two cores (docs/benchmarks.md). The thread stops
    and is joined however the caller stops iterating (end, error, or close).
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for batch in reader:
                if not put(batch):
                    return
            put(done)
        except BaseException as e:
            put(e)

    thread = threading.Thread(target=pump, name="pyml-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _Batches:
    """Yields output record batches; keeps the first error so it survives DuckDB's wrapping."""

    def __init__(self, reader: pa.RecordBatchReader, model: LoadedModel, n_keys: int,
                 schema: pa.Schema, scored_at: datetime, total: int, log: Log) -> None:
        self.reader, self.model, self.n_keys = reader, model, n_keys
        self.schema, self.scored_at, self.total, self.log = schema, scored_at, total, log
        self.error: BaseException | None = None
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        started = last = time.perf_counter()
        where = f"model '{self.model.name}'"
        encoder = self.model.encoder
        try:
            for batch in _prefetch(self.reader):
                keys = [batch.column(i) for i in range(self.n_keys)]
                X = encoder.from_fixed(batch.column(self.n_keys), where)
                preds = self.model.predict_matrix(X)
                yield pa.record_batch([*keys, *preds], schema=self.schema)
                self.rows += batch.num_rows
                now = time.perf_counter()
                if now - last > 2.0:
                    last = now
                    rate = self.rows / (now - started)
                    self.log(f"[{self.model.name}] scored {self.rows:,}/{self.total:,} rows "
                             f"({rate:,.0f} rows/s)")
        except BaseException as e:
            self.error = e
            raise


def score_relation(con: duckdb.DuckDBPyConnection, model: LoadedModel,
                   relation: tuple[str, str], *, batch_size: int = 100_000,
                   output: Path | None = None, log: Log = _noop) -> ScoreResult:
    """Score one relation with one loaded model and swap in its predictions table."""
    started = time.perf_counter()
    schema, name = relation
    label = f"{schema}.{name}"
    where = f"model '{model.name}' v{model.version}"
    columns = relation_columns(con, schema, name)
    stored = model.stored
    check_schema(where, stored.features, columns, label)
    key_types(columns, stored.key, where, label)
    source = qualified(schema, name)
    keys_sql = ", ".join(quote(k) for k in stored.key)
    any_null = " or ".join(f"{quote(k)} is null" for k in stored.key)
    row = first_row(con, f"select count(*), count(distinct ({keys_sql})), "
                         f"count(*) filter (where {any_null}) from {source}")
    total, distinct, null_keys = (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)
    if total == 0:
        raise DataError(f"{where}: {label} is empty; nothing to score "
                        "(did `dbt build` run?)")
    if null_keys:
        raise DataError(f"{where}: {label} has {null_keys} rows with a NULL key "
                        f"({', '.join(stored.key)}); filter or fill them in the dbt model")
    if distinct != total:
        raise DataError(f"{where}: {label} has {total - distinct} duplicate keys "
                        f"({', '.join(stored.key)}); make the key unique in the dbt model")
    target_table = predictions_table(model.name)
    _drop_leftovers(con, target_table)
    # DuckDB would otherwise keep every block it reads or writes cached, up to 80% of RAM,
    # so the process would grow with the table; a bounded buffer pool keeps scoring's
    # memory flat (it spills, and the scan is sequential anyway).
    con.execute(f"set memory_limit = '{SCORE_MEMORY_LIMIT}'")
    tmp = f"__pyml_tmp_{target_table}_{uuid.uuid4().hex[:8]}"
    reader_con = con.cursor()
    writer = con.cursor()
    reader = None
    try:
        exprs = [quote(k) for k in stored.key] + [matrix_sql(stored.features)]
        try:  # the first batch is computed here: a value beyond float32 fails already
            reader = stream_arrow(reader_con, f"select {', '.join(exprs)} from {source}",
                                  batch_size)
        except duckdb.Error as e:
            if is_range_error(e):
                raise range_error(con, source, stored.features, where) from None
            raise
        key_fields = [reader.schema.field(i).with_name(k) for i, k in enumerate(stored.key)]
        out_schema = pa.schema(
            key_fields
            + [pa.field(c.name, c.type) for c in model.output_columns()]
        )
        scored_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        batches = _Batches(reader, model, len(stored.key), out_schema, scored_at, total, log)
        stream = pa.RecordBatchReader.from_batches(out_schema, iter(batches))
        log(f"[{model.name}] scoring {total:,} rows of {label} with version {model.version}")
        try:
            writer.register("__pyml_scored", stream)
            # Built inside the swap's transaction: a process killed at any moment before
            # the swap commits leaves no temporary table behind (bench/crash.py).
            writer.execute("begin transaction")
            # Constant columns are added by DuckDB, not built row by row in Python.
            writer.execute(f"create table {qualified(SCHEMA, tmp)} as select *, "
                           "cast(? as integer) as model_version, "
                           "cast(? as timestamp) as scored_at from __pyml_scored",
                           [model.version, scored_at])
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            error = batches.error or e
            if is_range_error(error):
                raise range_error(con, source, stored.features, where) from None
            if batches.error is not None:
                raise batches.error from None
            raise
        finally:
            # After a failure the transaction is aborted (unregister then raises) and
            # closing the writer below rolls it back.
            with contextlib.suppress(duckdb.Error):
                writer.unregister("__pyml_scored")
        if batches.rows != total:
            raise DataError(f"{where}: wrote {batches.rows} rows but {label} has {total}; "
                            "the relation changed while scoring, rerun")
        if output is not None:
            # Before the swap: a file that cannot be written leaves the table as it was.
            write_file(writer, qualified(SCHEMA, tmp), output)
        _swap(writer, tmp, target_table, begin=False)
    except BaseException:
        _drop_quietly(con, tmp)
        raise
    finally:
        if reader is not None:
            # An open reader keeps the database open (and locked) for as long as an
            # exception's traceback lives, e.g. in a notebook after an error.
            reader.close()
        reader_con.close()
        writer.close()
        con.execute("reset memory_limit")
    seconds = time.perf_counter() - started
    log(f"[{model.name}] wrote {SCHEMA}.{target_table}: {total:,} rows in {seconds:.1f}s "
        f"({total / max(seconds, 1e-9):,.0f} rows/s)")
    return ScoreResult(model.name, model.version, f"{SCHEMA}.{target_table}", total, seconds,
                       output)


def _swap(con: duckdb.DuckDBPyConnection, tmp: str, target: str, begin: bool = True) -> None:
    # One short transaction: concurrent readers see either the old table or the new one.
    # begin=False: the caller's open transaction (which built `tmp`) commits with the swap.
    if begin:
        con.execute("begin transaction")
    try:
        con.execute(f"drop table if exists {qualified(SCHEMA, target)}")
        con.execute(f"alter table {qualified(SCHEMA, tmp)} rename to {quote(target)}")
        con.execute("commit")
    except BaseException:
        abort_transaction(con)
        raise


def _drop_quietly(con: duckdb.DuckDBPyConnection, tmp: str) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute(f"drop table if exists {qualified(SCHEMA, tmp)}")


def _drop_leftovers(con: duckdb.DuckDBPyConnection, target: str) -> None:
    """Remove temporary tables that a killed earlier run of the same model left behind."""
    con.execute(f"create schema if not exists {SCHEMA}")
    rows = con.execute(
        "select table_name from information_schema.tables where table_catalog = "
        "current_database() and table_schema = ? and starts_with(table_name, ?)",
        [SCHEMA, f"__pyml_tmp_{target}_"],
    ).fetchall()
    for (table,) in rows:
        _drop_quietly(con, str(table))


def write_file(con: duckdb.DuckDBPyConnection, table_sql: str, path: Path) -> None:
    """Stream a table into a Parquet or CSV file, atomically (temp file + rename).

    The table is read through `con` itself, so it may be one that `con`'s open transaction
    has not committed yet.
    """
    path = path.expanduser().resolve()
    if not path.parent.is_dir():
        raise PymlError(f"--output {path}: folder {path.parent} does not exist")
    reader = stream_arrow(con, f"select * from {table_sql}", 100_000)
    try:
        with replacing(path) as tmp:
            if path.suffix.lower() == ".parquet":
                with pq.ParquetWriter(tmp, reader.schema) as pw:
                    for batch in reader:
                        pw.write_batch(batch)
            else:
                with pacsv.CSVWriter(tmp, reader.schema) as cw:
                    for batch in reader:
                        cw.write_batch(batch)
    except OSError as e:
        raise PymlError(f"cannot write {path}: {e.strerror}") from e
    finally:
        reader.close()
