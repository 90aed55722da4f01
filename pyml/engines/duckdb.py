"""DuckDB connections and the few SQL helpers every module shares.

Identifiers that come from YAML, the command line or HTTP reach SQL only through
:func:`quote`; values are bound as parameters.
"""

from __future__ import annotations

import contextlib
import functools
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from pyml.errors import DatabaseError, DatabaseLocked, RelationNotFound, UsageError

_PID_RE = re.compile(r"PID (\d+)")
_FILE_RE = re.compile(r'file "([^"]+)"')
F = TypeVar("F", bound=Callable[..., Any])


def quote(name: str) -> str:
    """Quote one SQL identifier (DuckDB / ANSI double quotes)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    """`"schema"."name"` with both parts quoted."""
    return f"{quote(schema)}.{quote(name)}"


def connect(path: Path, *, read_only: bool = False, lock_timeout: float = 5.0
            ) -> duckdb.DuckDBPyConnection:
    """Open the project's DuckDB file, waiting up to `lock_timeout` s for another writer.

    DuckDB allows one writing process per file; a BI tool or a notebook holding the file
    open makes every other process fail to take the lock. pyml retries with backoff and then
    reports who holds the lock and what to do. `lock_timeout` may be `inf` (wait for as long
    as it takes); NaN or a negative number is a UsageError.
    """
    # `not >= 0` also catches NaN, which would make the deadline NaN: no comparison with it
    # is ever true, so the retry loop would spin at 100% CPU forever.
    if not lock_timeout >= 0:
        raise UsageError(f"lock timeout must be a number of seconds >= 0 (or inf), got "
                            f"{lock_timeout!r}")
    if not path.exists():
        raise DatabaseError(
            f"database file {path} does not exist: run `dbt build` first, or check the "
            "path in your dbt profile (--profiles-dir / --target)"
        )
    if path.is_dir():
        raise DatabaseError(f"{path} is a folder, not a DuckDB database file: fix the path in "
                            "your dbt profile")
    if not stat.S_ISREG(path.stat().st_mode):
        # Opening a FIFO blocks until a writer appears (forever); a device or socket is no
        # database either. stat() never blocks.
        raise DatabaseError(f"{path} is not a regular file (a named pipe, device or socket), "
                            "not a DuckDB database file: fix the path in your dbt profile")
    delay, deadline = 0.05, time.monotonic() + lock_timeout
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as e:
            text = str(e)
            if "lock" not in text.lower():
                raise DatabaseError(_io_message(path, text)) from e
            if time.monotonic() >= deadline:
                pid = _PID_RE.search(text)
                holder = f" (PID {pid.group(1)})" if pid else ""
                raise DatabaseLocked(
                    f"database {path} is locked by another process{holder}: close the other "
                    "DuckDB client (dbt, a notebook, a BI tool, another pyml) and retry"
                ) from e
            # The last wait ends at the deadline, where one more try is made: the backoff
            # would otherwise overshoot --lock-timeout by up to a second.
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
            continue
        except duckdb.ConnectionException as e:
            if read_only and "different configuration" in str(e):
                # This process (e.g. dbt run through its Python API in a notebook) already
                # holds the file open for writing; DuckDB then only shares that instance.
                read_only = False
                continue
            raise DatabaseError(_io_message(path, str(e))) from e
        except duckdb.Error as e:
            raise DatabaseError(_io_message(path, str(e))) from e
        _check_complete(con, path)
        return con


# DuckDB's single-file layout: a main header and two database headers of 4 KiB each, then
# the blocks. tests/test_probe.py checks the files it makes against it on the installed
# DuckDB, so a format change shows up as a failing test, not as files called truncated.
FILE_HEADERS = 3 * 4096


def _check_complete(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Raise DatabaseError when the file is too short to hold the blocks in use.

    DuckDB opens a truncated file (a copy cut short, a full disk during a copy) without a
    word and fails later, in whichever query first reads a missing block. The used-block
    count makes it a check of one stat. Not the total count: DuckDB cuts free blocks off the
    end of the file and keeps counting them. A cut that only removes blocks behind free ones
    passes here; write_error names it when a query reads there.
    """
    try:
        row = con.execute("select block_size, used_blocks from pragma_database_size() "
                          "where database_name = current_database()").fetchone()
        size = path.stat().st_size
    except (duckdb.Error, OSError):
        return  # nothing to compare against: the queries themselves will tell
    if row and row[0] and row[1] is not None and size < FILE_HEADERS + int(row[0]) * int(row[1]):
        con.close()
        raise DatabaseError(_truncated_message(path, f"{size:,} bytes for {int(row[1]):,} "
                                                     f"blocks of {int(row[0]):,} in use"))


def _truncated_message(path: Path | str, detail: str) -> str:
    return (f"{path} is truncated ({detail}); restore it from a backup or rebuild it with "
            "dbt")


def _io_message(path: Path, text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    if "not a valid DuckDB database" in text or "is not a valid" in text:
        return f"{path} is not a DuckDB database file: fix the path in your dbt profile"
    if "Permission denied" in text or "read-only" in text.lower():
        return _read_only_message(path)
    if "Could not read enough bytes" in text:
        return _truncated_message(path, first)
    if "Corrupt database file" in text:
        return _corrupt_message(path, first)
    return f"cannot open {path}: {first}"


def _corrupt_message(path: Path | str, first: str) -> str:
    return f"{path} is corrupt ({first}); restore it from a backup or rebuild it with dbt"


def corrupt_error(error: duckdb.Error, path: Path | str) -> DatabaseError | None:
    """The one-line error for a damaged block met after the file opened (DuckDB checks each
    block's checksum as it reads it), or None when `error` is something else."""
    text = str(error).strip()
    if "Corrupt database file" not in text:
        return None
    return DatabaseError(_corrupt_message(path, text.splitlines()[0]))


def _read_only_message(path: Path | str) -> str:
    return (f"cannot write to {path}: permission denied (the file or its folder is "
            "read-only); make both writable and retry")


def write_error(error: duckdb.Error) -> DatabaseError | None:
    """The one-line error for a write the OS refused (disk full, file too large, read-only
    file or folder) or a read past the end of a truncated file, or None when `error` is
    something else.

    DuckDB reports these as I/O or commit errors naming the file it could not write (the
    database or its `.wal`); the transaction is rolled back, so nothing was changed.
    """
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    named = _FILE_RE.search(first)
    if named and "Could not read enough bytes" in first:  # a block past a truncated end
        return DatabaseError(_truncated_message(named.group(1), first))
    if named is None or not any(s in first for s in ("Could not write", "Cannot open file",
                                                     "Could not open", "Could not truncate")):
        return None
    path = named.group(1).removesuffix(".wal")
    reason = first.rsplit(": ", 1)[-1].strip()
    if "Permission denied" in reason or "Read-only file system" in reason:
        return DatabaseError(_read_only_message(path))
    return DatabaseError(f"cannot write to {path}: {reason}; free disk space and retry (the "
                         "failed write was rolled back)")


def write_errors(func: F) -> F:
    """Decorate a library verb so a write the OS refused is a DatabaseError (one line)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except duckdb.Error as e:
            error = write_error(e)
            if error is None:
                raise
            raise error from e
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN on `con`, COMMIT when the block ends; an error in the block (or in the COMMIT)
    rolls back and propagates, so a failed write leaves the database as it was."""
    con.execute("begin transaction")
    try:
        yield con
        con.execute("commit")
    except BaseException:
        abort_transaction(con)
        raise


def abort_transaction(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction, if any.

    A COMMIT that fails (disk full) has already rolled back; a second ROLLBACK would raise
    'no transaction is active' and hide the error that matters.
    """
    with contextlib.suppress(duckdb.Error):
        con.execute("rollback")


def relation_columns(con: duckdb.DuckDBPyConnection, schema: str, name: str
                     ) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a table or view, in order; RelationNotFound if absent."""
    rows = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_catalog = current_database() and table_schema = ? and table_name = ? "
        "order by ordinal_position",
        [schema, name],
    ).fetchall()
    if not rows:
        raise RelationNotFound(
            f"relation {schema}.{name} does not exist in the database: build it with "
            f"`dbt build --select {name}` first"
        )
    try:
        # A view keeps its columns in the catalog after what it selects from is dropped or
        # renamed; only binding a query on it tells, and the verbs' first query would then
        # fail with DuckDB's own multi-line error. Binding `limit 0` reads no rows.
        con.execute(f"select * from {qualified(schema, name)} limit 0").fetchall()
    except (duckdb.CatalogException, duckdb.BinderException) as e:
        problem = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RelationNotFound(
            f"view {schema}.{name} cannot be read ({problem}): rebuild it with "
            f"`dbt build --select {name}`"
        ) from e
    return [(str(c), str(t)) for c, t in rows]


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    """Whether a table or view exists in the current database."""
    row = first_row(con,
        "select count(*) from information_schema.tables "
        "where table_catalog = current_database() and table_schema = ? and table_name = ?",
        [schema, name],
    )
    return bool(row and row[0])


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
                ) -> pa.Table:
    """Run a query and fetch the whole result as an Arrow table."""
    table = con.sql(sql, params=params or None).to_arrow_table()
    assert table is not None
    return table


def stream_arrow(con: duckdb.DuckDBPyConnection, sql: str, batch_size: int,
                 params: list[Any] | None = None) -> pa.RecordBatchReader:
    """Run a query and stream its result as Arrow record batches of `batch_size` rows."""
    reader = con.sql(sql, params=params or None).to_arrow_reader(batch_size)
    assert reader is not None
    return reader


def first_row(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
              ) -> tuple[Any, ...] | None:
    """The first row of a query, with the result fully consumed (the connection is free)."""
    rows = con.execute(sql, params or []).fetchall()
    return tuple(rows[0]) if rows else None
