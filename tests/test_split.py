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
from sklearn.metrics import roc_auc_score

from pyml.data import split
from pyml.dbt.spec import ModelSpec, SplitSpec

from .conftest import SCHEMA_YML, Loans
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


# --- Promotion never judges a version on rows it trained on (issue 19 #4) -------------------

RISK_LINE = "            exclude: [loss, grade]\n"


def _risk_split(loans: Loans, text: str, final_fit: str | None = None) -> None:
    """default_risk's split set to `text` (a YAML flow mapping), and its final_fit."""
    extra = f"            final_fit: {final_fit}\n" if final_fit else ""
    loans.write_schema(SCHEMA_YML.replace(RISK_LINE, RISK_LINE + f"            split: {text}\n"
                                          + extra, 1))


def _decision(loans: Loans, version: int) -> tuple[str, str, dict[str, Any] | None]:
    (event, reason, metrics), = loans.sql(
        "select event, reason, metrics from ml.model_events where model_name = 'default_risk' "
        "and version = ? and event <> 'retired'", [version])
    return str(event), str(reason), json.loads(metrics) if metrics else None


def _auc_on(loans: Loans, version: int, ids: set[int]) -> float:
    """The version's holdout AUC on the given loans, from `pyml score` and scikit-learn (the
    tests that use it train with `final_fit: none`, so the booster that scores is the one the
    policy compares: a refit's is its evaluated fit, tests/test_refit.py)."""
    loans.ok("score", "default_risk", "--version", str(version))
    rows = loans.sql("select p.loan_id, p.probability, f.defaulted "
                     "from ml.default_risk_predictions p join main.loan_features f "
                     "using (loan_id) where f.defaulted is not null")
    picked = [(p, y) for i, p, y in rows if i in ids]
    assert len(picked) == len(ids)
    return float(roc_auc_score([y for _, y in picked], [p for p, _ in picked]))


def _labelled_ids(loans: Loans) -> list[int]:
    return [int(i) for i, in loans.sql("select loan_id from main.loan_features "
                                       "where defaulted is not null")]


def test_a_seed_change_compares_only_rows_held_out_by_both(loans: Loans) -> None:
    # The probe: v1 split with seed 1, v2 with seed 2 on the same rows. Before the fix the
    # champion was scored on v2's whole holdout, half of which v1 had trained on.
    _risk_split(loans, "{test_fraction: 0.5, seed: 1}", final_fit="none")
    loans.ok("train", "default_risk")
    _risk_split(loans, "{test_fraction: 0.5, seed: 2}", final_fit="none")
    loans.ok("train", "default_risk")
    both = {i for i in _labelled_ids(loans)
            if part([i], 1, 0.5, 0.2) == 2 and part([i], 2, 0.5, 0.2) == 2}
    event, reason, metrics = _decision(loans, 2)
    assert metrics is not None and event in ("promoted", "rejected")
    assert metrics["n_rows"] == len(both) and 500 < len(both) < 1000
    assert metrics["champion"]["value"] == pytest.approx(_auc_on(loans, 1, both), abs=1e-9)
    assert metrics["challenger"]["value"] == pytest.approx(_auc_on(loans, 2, both), abs=1e-9)
    assert f"on the same {len(both):,} rows" in reason
    assert "held out by both versions (their splits differ: seed 1 vs 2)" in reason


def test_a_time_split_change_compares_on_the_champions_holdout(loans: Loans) -> None:
    # v2 holds out the latest 50%, v1 only the latest 30%: the 20% between, v1 trained on.
    _risk_split(loans, "{method: time, column: loan_id, test_fraction: 0.3}")
    loans.ok("train", "default_risk")
    _risk_split(loans, "{method: time, column: loan_id, test_fraction: 0.5}")
    loans.ok("train", "default_risk")
    (auc1, n1), = loans.sql("select value, n_rows from ml.metrics where model_name = "
                            "'default_risk' and version = 1 and metric = 'auc' "
                            "and split = 'holdout'")
    event, reason, metrics = _decision(loans, 2)
    assert metrics is not None and event in ("promoted", "rejected")
    assert metrics["n_rows"] == n1 and 800 < n1 < 1000
    assert metrics["champion"]["value"] == pytest.approx(auc1, abs=1e-12)
    assert "their splits differ: test_fraction 0.3 vs 0.5, test_from " in reason


def test_too_few_rows_held_out_by_both_leaves_the_challenger(loans: Loans) -> None:
    loans.ok("train", "default_risk")  # seed 42, 20% holdout
    _risk_split(loans, "{seed: 7}")
    out = loans.ok("train", "default_risk").output
    both = [i for i in _labelled_ids(loans)
            if part([i], 42, 0.2, 0.2) == 2 and part([i], 7, 0.2, 0.2) == 2]
    assert len(both) < 200
    event, reason, metrics = _decision(loans, 2)
    assert (event, metrics) == ("registered", None)
    assert reason == (
        f"v2 was not compared with champion v1: only {len(both)} rows are held out by both "
        "(their splits differ: seed 42 vs 7), fewer than the 200 needed to compare them "
        "without scoring a version on rows it trained on; `pyml promote default_risk` "
        "promotes v2 by hand")
    assert f"-> challenger: {reason}" in out
    assert loans.sql("select version, status from ml.models where model_name = "
                     "'default_risk' order by 1") == [(1, "champion"), (2, "challenger")]


def test_a_version_split_with_the_old_duckdb_hash_is_compared_on_its_own_holdout(
        loans: Loans) -> None:
    # v1 stands for a version stored before md5-v1: its split record has no "hash", so its
    # holdout is DuckDB's hash(loan_id, seed) < test_fraction, as pyml computed it then.
    _risk_split(loans, "{test_fraction: 0.5, seed: 1}", final_fit="none")
    loans.ok("train", "default_risk")
    loans.sql("update ml.models set split = json_remove(split, '$.hash') "
              "where model_name = 'default_risk' and version = 1")
    loans.describe("default_risk", "v2")  # not v1's twin (which is never promoted)
    loans.ok("train", "default_risk")  # the same settings, split with md5
    old = {int(i) for i, in loans.sql("select loan_id from main.loan_features where "
                                      "defaulted is not null and "
                                      "hash(loan_id, 1::bigint) % 1000000 < 500000")}
    both = {i for i in old if part([i], 1, 0.5, 0.2) == 2}
    _, reason, metrics = _decision(loans, 2)
    assert metrics is not None and metrics["n_rows"] == len(both)
    assert metrics["champion"]["value"] == pytest.approx(_auc_on(loans, 1, both), abs=1e-9)
    assert "their splits differ: hash duckdb-hash vs md5-v1" in reason
