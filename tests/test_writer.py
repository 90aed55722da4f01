"""pyml.store.writer.replace_table: the one writer of ml.<model>_predictions, _explanations
and ml.profile_<relation>, on a real DuckDB file (the verbs' own tests run it end to end)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyml.errors import DataError, OutputError
from pyml.store.writer import Constant, replace_table
from tests.conftest import Loans

SCHEMA = pa.schema([("id", pa.int64()), ("x", pa.float64())])


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create schema ml")
    con.execute("create table ml.t as select 1 as old")
    yield con
    con.close()


def _reader(n: int, batch: int = 10) -> pa.RecordBatchReader:
    batches = [pa.record_batch([pa.array(range(i, min(i + batch, n)), pa.int64()),
                                pa.array([0.5] * (min(i + batch, n) - i))], schema=SCHEMA)
               for i in range(0, n, batch)]
    return pa.RecordBatchReader.from_batches(SCHEMA, batches)


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [t for (t,) in con.execute("select table_name from information_schema.tables "
                                      "where table_schema = 'ml' order by 1").fetchall()]


def test_transforms_adds_constants_comments_and_swaps(con: duckdb.DuckDBPyConnection,
                                                      tmp_path: Path) -> None:
    out = pa.schema([("id", pa.int64()), ("y", pa.float64())])

    def double(batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.record_batch([batch.column(0), pa.array([2 * v for v in
                                                           batch.column(1).to_pylist()])],
                               schema=out)

    written = replace_table(con, "t", _reader(25), transform=double, schema=out,
                            constants=[Constant("model_version", "integer", 3)],
                            expected_rows=25, output=tmp_path / "t.parquet",
                            comment="it's the table",
                            column_comments={"id": "key column from main.x", "y": "twice x"})
    assert (written.table, written.rows) == ("ml.t", 25)
    assert con.execute("select count(*), sum(y), min(model_version), max(model_version) "
                       "from ml.t").fetchall() == [(25, 25.0, 3, 3)]
    assert con.execute("select comment from duckdb_tables() where schema_name = 'ml' "
                       "and table_name = 't'").fetchall() == [("it's the table",)]
    assert dict(con.execute("select column_name, comment from duckdb_columns() where "
                            "schema_name = 'ml' and table_name = 't'").fetchall()) == {
        "id": "key column from main.x", "y": "twice x", "model_version": None}
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 25
    assert _tables(con) == ["t"]


def test_the_first_error_of_a_transform_surfaces_unchanged(
        con: duckdb.DuckDBPyConnection) -> None:
    # DuckDB would otherwise report its own wrapping of the error ("Invalid Input Error:
    # ...: DataError: ..."), not the user's one-line message.
    reader = con.cursor().sql("select range as id, 0.5 as x from range(100)"
                              ).to_arrow_reader(10)

    def fail_late(batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.column(0)[0].as_py() >= 50:
            raise DataError("model 'm': feature 'x' has 1 infinite values")
        return batch

    with pytest.raises(DataError) as info:
        replace_table(con, "t", reader, transform=fail_late, schema=SCHEMA)
    assert str(info.value) == "model 'm': feature 'x' has 1 infinite values"
    assert con.execute("select * from ml.t").fetchall() == [(1,)]  # the old table
    assert _tables(con) == ["t"]
    with pytest.raises(pa.ArrowInvalid, match="closed"):
        reader.read_next_batch()  # open, it would hold the database open (and locked)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(0, 60), st.lists(st.floats(0, 0.004), min_size=8,
                                                        max_size=8))
def test_workers_write_the_batches_in_source_order(workers: int, n: int,
                                                   delays: list[float]) -> None:
    # Batches finish out of order (each sleeps its own time); the table must hold them in
    # source order, every row once, whatever the number of workers.
    out = pa.schema([("id", pa.int64()), ("pos", pa.int64())])
    seen: list[int] = []

    def slow(batch: pa.RecordBatch) -> pa.RecordBatch:
        first = batch.column(0)[0].as_py()
        time.sleep(delays[first // 7 % len(delays)])
        return pa.record_batch([batch.column(0), pa.array(range(first, first + len(batch)))],
                               schema=out)

    con = duckdb.connect()
    try:
        con.execute("create schema ml")
        reader = pa.RecordBatchReader.from_batches(SCHEMA, [
            pa.record_batch([pa.array(range(i, min(i + 7, n)), pa.int64()),
                             pa.array([0.5] * len(range(i, min(i + 7, n))))], schema=SCHEMA)
            for i in range(0, n, 7)])
        written = replace_table(con, "t", reader, transform=slow, schema=out,
                                expected_rows=n, workers=workers)
        seen = [r[0] for r in con.execute("select id from ml.t where id = pos").fetchall()]
        assert written.rows == n
        assert con.execute("select count(*) from ml.t").fetchall() == [(n,)]
        # CREATE TABLE AS from one stream keeps its order: rowid follows the batches.
        assert [r[0] for r in con.execute("select id from ml.t order by rowid").fetchall()
                ] == list(range(n))
    finally:
        con.close()
    assert seen == list(range(n))


@pytest.mark.parametrize("workers", [2, 3])
def test_with_workers_the_first_error_surfaces_and_their_threads_stop(
        con: duckdb.DuckDBPyConnection, workers: int) -> None:
    reader = con.cursor().sql("select range as id, 0.5 as x from range(200)"
                              ).to_arrow_reader(10)
    before = {t.name for t in threading.enumerate()}

    def fail_at_50(batch: pa.RecordBatch) -> pa.RecordBatch:
        first = batch.column(0)[0].as_py()
        if first == 50:
            raise DataError("model 'm': feature 'x' has 1 infinite values")
        if first == 60:
            raise DataError("a later batch's error, not the one to report")
        time.sleep(0.002)
        return batch

    with pytest.raises(DataError) as info:
        replace_table(con, "t", reader, transform=fail_at_50, schema=SCHEMA, workers=workers)
    assert str(info.value) == "model 'm': feature 'x' has 1 infinite values"
    assert con.execute("select * from ml.t").fetchall() == [(1,)]  # the old table
    assert _tables(con) == ["t"]
    left = {t.name for t in threading.enumerate()} - before
    assert not [t for t in left if t.startswith(("pyml-transform", "pyml-prefetch"))]


def test_a_row_count_that_changed_keeps_the_old_table(con: duckdb.DuckDBPyConnection,
                                                       tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^model 'm' v1: main\.x: read 30 rows but expected "
                                        r"31; the relation changed while ml\.t was written, "
                                        "rerun$"):
        replace_table(con, "t", _reader(30), expected_rows=31, where="model 'm' v1: main.x",
                      output=tmp_path / "t.csv")
    assert con.execute("select * from ml.t").fetchall() == [(1,)]
    assert _tables(con) == ["t"]
    assert not (tmp_path / "t.csv").exists()  # the file comes after the check


def test_a_file_that_cannot_be_written_keeps_the_old_table(con: duckdb.DuckDBPyConnection,
                                                           tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    target.mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(OutputError, match=r"^cannot write .*t\.parquet: "):
        replace_table(con, "t", _reader(5), output=target)
    assert con.execute("select * from ml.t").fetchall() == [(1,)]
    assert _tables(con) == ["t"]


def test_leftovers_of_an_older_release_are_dropped(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create table ml.__pyml_tmp_t_0123abcd (x int)")
    con.execute("create table ml.__pyml_tmp_other_0123abcd (x int)")  # another table's
    replace_table(con, "t", _reader(3))
    assert _tables(con) == ["__pyml_tmp_other_0123abcd", "t"]


def test_the_buffer_pool_is_bounded_while_writing_and_reset_after(
        con: duckdb.DuckDBPyConnection) -> None:
    seen = []
    before = con.execute("select current_setting('memory_limit')").fetchall()

    def look(batch: pa.RecordBatch) -> pa.RecordBatch:
        seen.append(con.cursor().execute("select current_setting('memory_limit')").fetchall())
        return batch

    replace_table(con, "t", _reader(5), transform=look, schema=SCHEMA, memory_limit="100MB")
    assert seen[0] != before and "MiB" in seen[0][0][0]
    assert con.execute("select current_setting('memory_limit')").fetchall() == before


def test_every_column_of_the_written_tables_has_a_comment(scored: Loans) -> None:
    scored.ok("explain", "grade", "default_risk")
    scored.ok("profile", "default_risk")
    tables = ["default_risk_predictions", "grade_predictions", "loss_amount_predictions",
              "default_risk_explanations", "grade_explanations", "profile_loan_features"]
    found = scored.sql("select table_name, comment from duckdb_tables() where schema_name = "
                       "'ml' and table_name in (select unnest(?))", [tables])
    assert sorted(t for t, c in found if c) == sorted(tables)
    bare = scored.sql("select table_name, column_name from duckdb_columns() where "
                      "schema_name = 'ml' and table_name in (select unnest(?)) and "
                      "coalesce(comment, '') = ''", [tables])
    assert bare == []
    assert scored.sql("select comment from duckdb_columns() where schema_name = 'ml' and "
                      "table_name = 'grade_predictions' and column_name = 'loan_id'") == [
        ("key column from main.loan_features",)]
