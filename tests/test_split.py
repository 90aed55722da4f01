"""The portable split (pyml/data/split.py): DuckDB's SQL bucket equals the pure-Python md5
reference (tests/split_reference.py) for every portable key type, and a stored split record
renders the same parts as the spec it came from.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyml.data import split
from pyml.dbt.spec import ModelSpec, SplitSpec

from .split_reference import bucket, part

# Column types whose text both engines agree on, with values of each (extremes included).
INT64 = st.integers(-(2**63), 2**63 - 1)
TYPES: dict[str, st.SearchStrategy[Any]] = {
    "BIGINT": INT64 | st.sampled_from([-(2**63), 2**63 - 1, 0, -1]),
    "INTEGER": st.integers(-(2**31), 2**31 - 1),
    "VARCHAR": st.text(max_size=12) | st.sampled_from(
        ["", "\x1f", "\x1e", "a\x1fb", "'", '"', "\\", "é", "日本", "\x00", "NULL", "42"]),
    "DATE": st.dates(datetime.date(1, 1, 1), datetime.date(9999, 12, 31)),
    "BOOLEAN": st.booleans(),
    "DECIMAL(18,4)": st.integers(-(10**13), 10**13).map(lambda i: Decimal(i).scaleb(-4)),
}


@st.composite
def keyed_rows(draw: st.DrawFn) -> tuple[list[str], list[tuple[Any, ...]]]:
    types = draw(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=3))
    row = st.tuples(*(TYPES[t] | st.none() if i else TYPES[t] for i, t in enumerate(types)))
    return types, draw(st.lists(row, min_size=1, max_size=5))


def _sql_buckets(types: list[str], rows: list[tuple[Any, ...]], salt: int) -> list[int]:
    # A column name that needs quoting, to exercise split.quote too.
    names = [f'k{i} "x"' for i in range(len(types))]
    con = duckdb.connect()
    try:
        columns = ", ".join(f"{split.quote(n, 'duckdb')} {t}" for n, t in zip(names, types,
                                                                              strict=True))
        con.execute(f"create table t (i integer, {columns})")
        marks = ", ".join("?" for _ in range(len(types) + 1))
        con.executemany(f"insert into t values ({marks})",
                        [[i, *r] for i, r in enumerate(rows)])
        return [b for b, in con.execute(f"select {split.bucket_sql(names, salt, 'duckdb')} "
                                        "from t order by i").fetchall()]
    finally:
        con.close()


@settings(max_examples=60, deadline=None)
@given(data=keyed_rows(), salt=st.integers(0, 2**40))
def test_duckdb_bucket_equals_the_python_reference(data: tuple[list[str], list[tuple[Any, ...]]],
                                                   salt: int) -> None:
    types, rows = data
    assert _sql_buckets(types, rows, salt) == [bucket(salt, r) for r in rows]


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(data=keyed_rows(), salt=st.integers(0, 2**62))
def test_duckdb_bucket_equals_the_python_reference_long(
        data: tuple[list[str], list[tuple[Any, ...]]], salt: int) -> None:
    types, rows = data
    assert _sql_buckets(types, rows, salt) == [bucket(salt, r) for r in rows]


def test_reference_values_checked_in_spark() -> None:
    # Computed by Spark 4 on this machine with the SQL split.bucket_sql(['k'], 42, 'spark')
    # renders: the same numbers here pin the definition for every engine.
    assert bucket(42, [7]) == 191063
    assert int(hashlib.md5(b"1").hexdigest()[:15], 16) == 886263699231969848


def _spec(**split_args: Any) -> ModelSpec:
    return ModelSpec(name="m", task="binary", target="y", key=("id", "region"),
                     feature_model="model.p.f", schema="main", relation="f",
                     source_file="models/f.yml", split=SplitSpec(**split_args))


def _parts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[int]:
    return [p for p, in con.execute(f"select {sql} from f order by id", params).fetchall()]


@pytest.fixture
def con() -> Any:
    c = duckdb.connect()
    c.execute("create table f as select i::integer as id, ['n', 's', null][i % 3 + 1] as region, "
              "date '2020-01-01' + i::integer as opened_at, i % 2 = 0 as y "
              "from range(2000) t(i)")
    yield c
    c.close()


@pytest.mark.parametrize("method", ["random", "kfold"])
def test_random_split_is_the_reference_split(con: duckdb.DuckDBPyConnection,
                                             method: str) -> None:
    spec = _spec(method=method, seed=9, test_fraction=0.3, validation_fraction=0.25)
    sql, params = split.part_sql(spec, "duckdb")
    rows = con.execute("select id, region from f order by id").fetchall()
    expected = [part(r, 9, 0.3, 0.25) for r in rows]
    assert _parts(con, sql, params) == expected
    assert {0, 1, 2} <= set(expected)
    record = split.split_record(spec)
    assert record["hash"] == "md5-v1" and record["seed"] == 9 and record["method"] == method
    # The stored record (a JSON round trip) renders the same parts.
    again = split.record_part_sql(json.loads(json.dumps(record)), spec.key, "duckdb")
    assert again == (sql, params)


def test_time_split_record_round_trips(con: duckdb.DuckDBPyConnection) -> None:
    spec = _spec(method="time", column="opened_at", test_fraction=0.25,
                 validation_fraction=0.2)
    cutoffs = split.time_cutoffs(con, spec, "f")
    day = datetime.date(2020, 1, 1)
    # quantile_disc: the 1499th of 0..1999, then the 1199th of 0..1498.
    assert cutoffs == split.Cutoffs(day + datetime.timedelta(days=1499),
                                    day + datetime.timedelta(days=1199))
    sql, params = split.part_sql(spec, "duckdb", cutoffs)
    parts = _parts(con, sql, params)
    assert (parts.count(2), parts.count(1), parts.count(0)) == (501, 300, 1199)
    stored = json.loads(json.dumps(split.split_record(spec, cutoffs), default=str))
    assert stored["column"] == "opened_at" and stored["test_from"] == "2024-02-08"
    assert _parts(con, *split.record_part_sql(stored, spec.key, "duckdb")) == parts


def test_a_record_without_hash_is_the_old_duckdb_hash_split(
        con: duckdb.DuckDBPyConnection) -> None:
    old = {"method": "random", "seed": 42, "test_fraction": 0.2, "validation_fraction": 0.2}
    sql, params = split.record_part_sql(old, ("id", "region"), "duckdb")
    expected = con.execute("select case when hash(id, region, 42::bigint) % 1000000 < 200000 "
                           "then 2 when hash(id, region, 43::bigint) % 1000000 < 200000 then 1 "
                           "else 0 end from f order by id").fetchall()
    assert _parts(con, sql, params) == [p for p, in expected]
    with pytest.raises(split.DataError, match=r"split with DuckDB's hash.*spark cannot"):
        split.record_part_sql(old, ("id",), "spark")
    assert split.differences(old, split.split_record(_spec(seed=42))) == [
        "hash duckdb-hash vs md5-v1"]


def test_spark_rendering() -> None:
    sql, params = split.part_sql(_spec(seed=5), "spark")
    assert "`id`" in sql and "cast(`region` as string)" in sql and "conv(" in sql
    assert "'5'" in sql and "'6'" in sql and params == [200000, 200000]
    with pytest.raises(ValueError, match="dialect 'oracle'"):
        split.part_sql(_spec(), "oracle")


def test_unportable_key_types_are_named() -> None:
    types = {"id": "BIGINT", "region": "VARCHAR", "at": "TIMESTAMP", "x": "DOUBLE",
             "d": "DECIMAL(18,4)", "day": "DATE"}
    assert split.unportable_keys(("id", "region", "d", "day"), types) == []
    assert split.unportable_keys(("id", "at", "x"), types) == ["at (TIMESTAMP)", "x (DOUBLE)"]
