"""The one atomic stream-to-table writer behind ml.<model>_predictions, _explanations and
ml.profile_<relation>.

Rows arrive as Arrow record batches (optionally transformed one batch at a time, e.g. by
XGBoost), DuckDB consumes them into `CREATE TABLE <temporary> AS SELECT`, adds the constant
columns itself, and the temporary table replaces the target (drop + rename). All of that is
ONE transaction: readers see the old table or the new one, a failure leaves the old one, and
a process killed at any moment leaves no temporary table behind (tests/test_crash.py,
bench/crash.py).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pyml.dbt.spec import DEFAULT_BATCH_ROWS
from pyml.engines.duckdb import abort_transaction, qualified, quote, stream_arrow
from pyml.errors import DataError, OutputError
from pyml.files import replacing
from pyml.interrupts import note_written
from pyml.store.names import SCHEMA, TEMP_PREFIX
from pyml.store.schema import comment_table

# DuckDB's buffer pool while a table is written. Unbounded, DuckDB keeps every block it reads
# or writes cached, up to 80% of RAM, so the process would grow with the table; bounded, it
# spills (the scan is sequential anyway) and memory stays flat.
WRITE_MEMORY_LIMIT = "256MB"
_VIEW = "__pyml_rows"  # the Arrow stream, registered on the writing cursor only

Transform = Callable[[pa.RecordBatch], pa.RecordBatch]
# replace_table's hook, run in its transaction: (cursor, temporary table) -> more
# (temporary, target) tables to swap in with it.
Finish = Callable[[duckdb.DuckDBPyConnection, str], Sequence[tuple[str, str]]]
# update_table's merge, run in its transaction: (cursor, temporary table) -> the target's rows.
Apply = Callable[[duckdb.DuckDBPyConnection, str], int]


@dataclass(frozen=True)
class Constant:
    """A column with one value on every row, added by DuckDB rather than built in Python."""

    name: str  # column name
    sql_type: str  # DuckDB type; pyml's own text, never the user's
    value: Any  # bound as a parameter


@dataclass(frozen=True)
class Written:
    """What replace_table wrote."""

    table: str  # "ml.<table>", for messages and results
    rows: int  # rows read from the source (before any transform)


def display_name(table: str) -> str:
    """`ml.<table>` as users read it in messages (unquoted)."""
    return f"{SCHEMA}.{table}"


def replace_table(con: duckdb.DuckDBPyConnection, table: str, source: pa.RecordBatchReader,
                  *, transform: Transform | None = None, schema: pa.Schema | None = None,
                  constants: Sequence[Constant] = (), expected_rows: int | None = None,
                  where: str = "pyml", output: Path | None = None,
                  comment: str | None = None, column_comments: Mapping[str, str] | None = None,
                  memory_limit: str = WRITE_MEMORY_LIMIT, finish: Finish | None = None,
                  workers: int = 1) -> Written:
    """Build ml.<table> from `source`'s batches and swap it in, in one transaction.

    `transform` maps each source batch to an output batch of `schema` (both or neither);
    the next source batch is read by a thread meanwhile, so DuckDB produces while Python
    transforms. With `workers` > 1, that many threads transform consecutive batches at once
    (`transform` must be thread-safe) and the batches are written in source order.
    `constants` are appended after the batches' columns. `expected_rows`, if
    given, must equal the rows `source` yields, else the old table stays (DataError naming
    `where`). `output` (.parquet / .csv) is written from the new table before the swap, so a
    file that cannot be written leaves the database as it was. `comment` and
    `column_comments` become the new table's COMMENTs, committed with it (column comments
    need a table comment). `finish(cursor, tmp)`, if given, runs in the same transaction once
    the rows are in (before the comments): it may reshape the temporary table and returns
    further (temporary, target) tables to swap in with it (pyml.store.fingerprints).

    `source` is closed however this ends. The first error raised while reading or
    transforming a batch is re-raised as it was (not as DuckDB's wrapping of it), so a
    caller's one-line DataError reaches the user unchanged.
    """
    if column_comments and comment is None:
        raise ValueError("replace_table: column_comments need a table comment")

    def body(writer: duckdb.DuckDBPyConnection, tmp: str, rows: int) -> None:
        if expected_rows is not None and rows != expected_rows:
            raise DataError(f"{where}: read {rows:,} rows but expected "
                            f"{expected_rows:,}; the relation changed while "
                            f"{display_name(table)} was written, rerun")
        more = finish(writer, tmp) if finish is not None else ()
        if comment is not None:
            comment_table(writer, tmp, comment, column_comments or {})
        if output is not None:
            write_file(writer, qualified(SCHEMA, tmp), output)
        _swap(writer, [(tmp, table), *more])

    rows = _write(con, table, source, _Transform(transform, workers), schema, constants,
                  memory_limit, body)
    note_written(display_name(table))
    return Written(display_name(table), rows)


def update_table(con: duckdb.DuckDBPyConnection, table: str, source: pa.RecordBatchReader,
                 *, transform: Transform, schema: pa.Schema, apply: Apply,
                 expected_rows: int, where: str = "pyml",
                 memory_limit: str | None = None, workers: int = 1) -> Written:
    """Change ml.<table> in place with `source`'s batches, in one transaction.

    The batches (transformed as in replace_table) go into a temporary table; `apply(cursor,
    tmp)` then merges it into ml.<table> (and whatever else must change with it) in the same
    transaction and returns ml.<table>'s rows after the merge, which must equal
    `expected_rows` (else nothing changes: DataError naming `where`). The temporary table is
    dropped and the transaction commits: readers see the old table or the new one, and a
    process killed at any moment before the commit leaves the old one (DuckDB rolls back an
    uncommitted transaction). `written.rows` counts the merged rows read from `source`.

    DuckDB's memory limit stays as it is unless `memory_limit` is given: the few rows
    written need no bound, and the source (a join over the whole table) may already hold
    more than replace_table's bound when its first batch is read.
    """

    def body(writer: duckdb.DuckDBPyConnection, tmp: str, rows: int) -> None:
        after = apply(writer, tmp)
        if after != expected_rows:
            raise DataError(f"{where}: {display_name(table)} would have {after:,} rows but "
                            f"the relation has {expected_rows:,}; the relation changed while "
                            "it was written, rerun")
        _swap(writer, [], drop=[tmp])

    rows = _write(con, table, source, _Transform(transform, workers), schema, (),
                  memory_limit, body)
    note_written(display_name(table))
    return Written(display_name(table), rows)


@dataclass(frozen=True)
class _Transform:
    """A batch transform and how many threads run it."""

    run: Transform | None
    workers: int = 1


def _write(con: duckdb.DuckDBPyConnection, table: str, source: pa.RecordBatchReader,
           transform: _Transform, schema: pa.Schema | None,
           constants: Sequence[Constant], memory_limit: str | None,
           body: Callable[[duckdb.DuckDBPyConnection, str, int], None]) -> int:
    """Open the transaction, build the temporary table from `source`, run `body(cursor, tmp,
    rows read)`, which ends the transaction; roll back on any error. Returns the rows read."""
    if (transform.run is None) != (schema is None):
        raise ValueError("replace_table: give both transform and schema, or neither")
    try:
        drop_leftovers(con, table)
        tmp = f"{TEMP_PREFIX}{table}_{uuid.uuid4().hex[:8]}"
        tmp_sql = qualified(SCHEMA, tmp)
        batches = _Batches(source, transform)
        rows = batches.stream()
        out_schema = schema if schema is not None else source.schema
        if memory_limit is not None:
            con.execute("set memory_limit = ?", [memory_limit])
        writer = con.cursor()
        try:
            writer.register(_VIEW, pa.RecordBatchReader.from_batches(out_schema, rows))
            extra = "".join(f", cast(? as {c.sql_type}) as {quote(c.name)}" for c in constants)
            try:
                # Built inside the swap's transaction: a process killed at any moment before
                # the swap commits leaves no temporary table behind.
                writer.execute("begin transaction")
                writer.execute(f"create table {tmp_sql} as select *{extra} from {_VIEW}",
                               [c.value for c in constants])
            except (duckdb.Error, pa.ArrowException, OSError):
                if batches.error is not None:
                    raise batches.error from None
                raise
            finally:
                # After a failure the transaction is aborted and unregister raises too.
                with contextlib.suppress(duckdb.Error):
                    writer.unregister(_VIEW)
            body(writer, tmp, batches.rows)
        except BaseException:
            abort_transaction(writer)
            raise
        finally:
            # Stops and joins the prefetch thread if DuckDB stopped reading half-way, before
            # the source it reads from is closed below.
            rows.close()
            writer.close()
            if memory_limit is not None:
                con.execute("reset memory_limit")
    finally:
        # An open reader keeps the database open (and locked) for as long as an exception's
        # traceback lives, e.g. in a notebook after an error.
        source.close()
    return batches.rows


def _swap(con: duckdb.DuckDBPyConnection, swaps: Sequence[tuple[str, str]],
          drop: Sequence[str] = ()) -> None:
    # Ends the transaction that built the temporary tables: each (tmp, table) replaces its
    # table, `drop` goes, and concurrent readers see the old tables or the new ones. (A
    # module-level function so bench/crash.py can kill a process exactly around it.)
    for tmp, table in swaps:
        con.execute(f"drop table if exists {qualified(SCHEMA, table)}")
        con.execute(f"alter table {qualified(SCHEMA, tmp)} rename to {quote(table)}")
    for table in drop:
        con.execute(f"drop table if exists {qualified(SCHEMA, table)}")
    con.execute("commit")


def drop_leftovers(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Drop the temporary tables of `table` that a killed run of an older pyml left behind
    (this writer's own runs leave none: their temporary table never commits)."""
    con.execute(f"create schema if not exists {quote(SCHEMA)}")
    rows = con.execute(
        "select table_name from information_schema.tables where table_catalog = "
        "current_database() and table_schema = ? and starts_with(table_name, ?)",
        [SCHEMA, f"{TEMP_PREFIX}{table}_"],
    ).fetchall()
    for (name,) in rows:
        with contextlib.suppress(duckdb.Error):
            con.execute(f"drop table if exists {qualified(SCHEMA, str(name))}")


class _Batches:
    """The output batches; counts source rows and keeps the first error, which DuckDB would
    otherwise wrap in its own message."""

    def __init__(self, source: pa.RecordBatchReader, transform: _Transform) -> None:
        self.source, self.transform = source, transform
        self.error: BaseException | None = None
        self.rows = 0

    def stream(self) -> Generator[pa.RecordBatch, None, None]:
        """The output batches, in order."""
        try:
            with contextlib.closing(_prefetch(self.source)) as batches:
                for rows, out in _in_order(self.transform, batches):
                    yield out
                    self.rows += rows
        except GeneratorExit:  # closed by the writer, not an error of the rows
            raise
        except BaseException as e:
            if self.error is None:
                self.error = e
            raise


def _prefetch(reader: pa.RecordBatchReader) -> Generator[pa.RecordBatch, None, None]:
    """The reader's batches, the next one read by a thread while the caller transforms.

    DuckDB builds the next batch while XGBoost predicts this one (both release the GIL):
    ~10% faster end to end on two cores (docs/benchmarks.md). The thread stops and is joined
    however the caller stops iterating (end, error, or close).
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


def _in_order(transform: _Transform, batches: Iterator[pa.RecordBatch]
              ) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(source rows, output batch) for each batch, in source order.

    With several workers, each transforms whole batches on a thread of its own (pyml score:
    XGBoost on that worker's share of the cores), up to one batch per worker ahead of the one
    being written. Measured against
    one transform at a time on all cores (docs/benchmarks.md): an OpenMP predict splits each
    batch evenly across its threads and waits for the last, so whenever DuckDB's reading or
    writing took a core from one of them, the other sat idle; whole batches per thread let
    the reading and writing fill those gaps. Closing the generator cancels the batches not
    started and waits for those running.
    """
    run = transform.run
    if run is None or transform.workers <= 1:
        for batch in batches:
            yield batch.num_rows, (batch if run is None else run(batch))
        return
    with ThreadPoolExecutor(transform.workers, thread_name_prefix="pyml-transform") as pool:
        pending: deque[tuple[int, Future[pa.RecordBatch]]] = deque()
        try:
            for batch in batches:
                pending.append((batch.num_rows, pool.submit(run, batch)))
                if len(pending) > transform.workers:
                    rows, done = pending.popleft()
                    yield rows, done.result()
            while pending:
                rows, done = pending.popleft()
                yield rows, done.result()
        finally:
            for _, left in pending:
                left.cancel()


def write_file(con: duckdb.DuckDBPyConnection, table_sql: str, path: Path) -> None:
    """Stream a table into a Parquet or CSV file, atomically (temp file + rename).

    The table is read through `con` itself, so it may be one that `con`'s open transaction
    has not committed yet.
    """
    path = path.expanduser().resolve()
    if not path.parent.is_dir():
        raise OutputError(f"output file {path}: folder {path.parent} does not exist")
    reader = stream_arrow(con, f"select * from {table_sql}", DEFAULT_BATCH_ROWS)
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
        raise OutputError(f"cannot write {path}: {e.strerror}") from e
    finally:
        reader.close()
