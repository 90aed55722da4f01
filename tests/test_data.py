"""Columns -> XGBoost inputs: kinds, feature resolution, the float32 matrix, targets, quoting."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyml.data.encode import (
    Encoder,
    Feature,
    check_schema,
    encode_target,
    kind_of,
    learn_categories,
    resolve_features,
)
from pyml.dbt.spec import ModelSpec, parse_specs
from pyml.engines.duckdb import qualified, quote, relation_columns
from pyml.errors import DataError, RelationNotFound, SchemaMismatch, SpecError

SOURCE = "models/schema.yml"
WHERE = f"{SOURCE}: model 'm' on model.loans.loans"
COLUMNS = [("loan_id", "INTEGER"), ("region", "VARCHAR"), ("amount", "DOUBLE"),
           ("term_months", "INTEGER"), ("opened_date", "DATE"), ("defaulted", "BOOLEAN")]


def spec(**extra: Any) -> ModelSpec:
    raw = {"name": "m", "task": "binary", "target": "defaulted", "key": "loan_id", **extra}
    (parsed,) = parse_specs(raw, feature_model="model.loans.loans", schema="main",
                            relation="loans", source_file=SOURCE)
    return parsed


# --- kind_of, on the type names DuckDB itself reports --------------------------------------

DUCKDB_TYPES = {
    "tinyint": "numeric", "smallint": "numeric", "integer": "numeric", "bigint": "numeric",
    "hugeint": "numeric", "utinyint": "numeric", "ubigint": "numeric", "float": "numeric",
    "double": "numeric", "decimal(18,3)": "numeric", "decimal(4,1)": "numeric",
    "boolean": "numeric", "varchar": "categorical", "mood": "categorical", "date": None,
    "timestamp": None, "blob": None, "uuid": None, "json": None, "integer[]": None,
    "struct(x integer)": None,
}


def test_kind_of_duckdb_types() -> None:
    con = duckdb.connect()
    try:
        con.execute("create type mood as enum ('calm', 'angry')")
        cols = ", ".join(f"c{i} {t}" for i, t in enumerate(DUCKDB_TYPES))
        con.execute(f"create table t ({cols})")
        reported = relation_columns(con, "main", "t")
    finally:
        con.close()
    assert [kind_of(dtype) for _, dtype in reported] == list(DUCKDB_TYPES.values())
    assert reported[list(DUCKDB_TYPES).index("mood")][1] == "ENUM('calm', 'angry')"


def test_kind_of_is_case_insensitive() -> None:
    assert kind_of("double") == kind_of("DOUBLE") == "numeric"
    assert kind_of("Decimal(10, 2)") == "numeric"
    assert kind_of("varchar") == "categorical"


def test_relation_columns_of_a_missing_table() -> None:
    con = duckdb.connect()
    try:
        with pytest.raises(RelationNotFound) as info:
            relation_columns(con, "main", "loans")
    finally:
        con.close()
    assert str(info.value) == ("relation main.loans does not exist in the database: build it "
                               "with `dbt build --select loans` first")


# --- resolve_features ---------------------------------------------------------------------

def test_default_features_are_all_other_usable_columns() -> None:
    features = resolve_features(spec(exclude="opened_date"), COLUMNS)
    assert features == [Feature("region", "categorical", "VARCHAR"),
                        Feature("amount", "numeric", "DOUBLE"),
                        Feature("term_months", "numeric", "INTEGER")]


def test_explicit_feature_list_keeps_its_order() -> None:
    features = resolve_features(spec(features=["term_months", "region"]), COLUMNS)
    assert [(f.name, f.kind) for f in features] == [("term_months", "numeric"),
                                                    ("region", "categorical")]


def test_time_split_column_is_not_a_feature() -> None:
    features = resolve_features(spec(split={"method": "time", "column": "opened_date"}),
                                COLUMNS)
    assert [f.name for f in features] == ["region", "amount", "term_months"]


def test_explicit_feature_missing_from_relation() -> None:
    with pytest.raises(SchemaMismatch) as info:
        resolve_features(spec(features=["amount", "income"]), COLUMNS)
    assert str(info.value) == (
        f"{WHERE}: feature 'income' is not in main.loans; columns are: loan_id, region, "
        "amount, term_months, opened_date, defaulted")


@pytest.mark.parametrize(("extra", "role", "column"), [
    ({"target": "is_default"}, "target", "is_default"),
    ({"key": ["loan_id", "branch_id"]}, "key", "branch_id"),
    ({"exclude": ["loss"]}, "exclude", "loss"),
    ({"split": {"method": "time", "column": "opened_at"}}, "split.column", "opened_at"),
])
def test_named_column_missing_from_relation(extra: dict[str, Any], role: str,
                                            column: str) -> None:
    with pytest.raises(SchemaMismatch) as info:
        resolve_features(spec(**extra), COLUMNS)
    assert str(info.value).startswith(f"{WHERE}: {role} column '{column}' is not in main.loans; "
                                      "columns are: loan_id, region")


def test_date_column_cannot_be_a_feature() -> None:
    with pytest.raises(DataError) as info:
        resolve_features(spec(), COLUMNS)
    assert str(info.value) == (
        f"{WHERE}: column 'opened_date' of main.loans has type DATE, which pyml cannot use as "
        "a feature; derive a number or a string from it in SQL, or add it to 'exclude'")


def test_target_cannot_be_a_feature() -> None:
    with pytest.raises(SpecError) as info:
        resolve_features(spec(features=["amount", "defaulted"]), COLUMNS)
    assert str(info.value) == (f"{WHERE}: 'defaulted' is the target or a key and cannot also "
                               "be a feature")


def test_no_features_left() -> None:
    with pytest.raises(SpecError) as info:
        resolve_features(spec(), [("loan_id", "INTEGER"), ("defaulted", "BOOLEAN")])
    assert str(info.value) == (f"{WHERE}: no feature columns are left in main.loans after "
                               "removing the key, target and excluded columns")


# --- Encoder.matrix -----------------------------------------------------------------------

NUM = Feature("amount", "numeric", "DOUBLE")
CAT = Feature("region", "categorical", "VARCHAR", ("east", "north", "west"))


def test_matrix_codes_categories_and_keeps_nulls_missing() -> None:
    amount = pa.array([1.5, None, -2.0, 0.0])
    region = pa.chunked_array([["west", None], ["mars", "east"]])  # 'mars' never seen
    X = Encoder([NUM, CAT]).matrix([amount, region], "model 'm'")
    assert X.dtype == np.float32
    assert X.flags.c_contiguous
    expected = np.array([[1.5, 2.0], [np.nan, np.nan], [-2.0, np.nan], [0.0, 0.0]],
                        dtype=np.float32)
    np.testing.assert_array_equal(X, expected)


def test_matrix_rounds_doubles_to_float32_as_numpy_does() -> None:
    values = np.array([0.1, 1 / 3, 16_777_217.0, 1e10 + 0.3, -123456.789012, 2.0 ** -140,
                       3.4e38, np.nan])
    X = Encoder([NUM]).matrix([pa.array(values)], "model 'm'")
    np.testing.assert_array_equal(X[:, 0], values.astype(np.float32))
    assert X[:, 0].tobytes() == values.astype(np.float32).tobytes()


def test_learned_categories_are_sorted_distinct_non_null_values() -> None:
    col = pa.chunked_array([["west", None, "east"], ["west", "north"]])
    (learned,) = learn_categories([Feature("region", "categorical", "VARCHAR")], [col], "m")
    assert learned.categories == ("east", "north", "west")
    assert Feature.from_dict(learned.to_dict()) == learned


@pytest.mark.parametrize("bad", [math.inf, -math.inf, 1e39])
def test_infinite_value_names_the_column(bad: float) -> None:
    amount = pa.array([1.0, bad, 2.0])
    region = pa.array(["east", "west", None])
    with pytest.raises(DataError) as info:
        Encoder([CAT, NUM]).matrix([region, amount], "model 'm' v2")
    assert str(info.value) == (
        "model 'm' v2: feature 'amount' has 1 infinite or out-of-range values (|x| > 3.4e+38); "
        "clean them in the dbt model (e.g. NULL them) and retry")


# --- check_schema -------------------------------------------------------------------------

def test_check_schema_accepts_extra_columns_and_other_numeric_types() -> None:
    check_schema("model 'm' v1", [NUM, CAT],
                 [("extra", "DATE"), ("region", "VARCHAR"), ("amount", "DECIMAL(18,2)")],
                 "main.loans")


def test_check_schema_missing_feature() -> None:
    with pytest.raises(SchemaMismatch) as info:
        check_schema("model 'm' v1", [NUM, CAT], [("region", "VARCHAR")], "main.loans")
    assert str(info.value) == (
        "model 'm' v1: feature 'amount' is missing from main.loans; add it back to the dbt "
        "model or retrain the model without it")


def test_check_schema_changed_type() -> None:
    with pytest.raises(SchemaMismatch) as info:
        check_schema("model 'm' v1", [NUM, CAT], [("amount", "VARCHAR"), ("region", "VARCHAR")],
                     "main.loans")
    assert str(info.value) == (
        "model 'm' v1: feature 'amount' was DOUBLE (numeric) at training but is VARCHAR in "
        "main.loans; cast it back in the dbt model or retrain")


# --- encode_target ------------------------------------------------------------------------

def target(values: list[Any], type_: pa.DataType | None = None) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, type=type_)])


def test_boolean_target() -> None:
    y, info = encode_target(spec(), "BOOLEAN", target([True, False, False, True]))
    assert y.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert info.classes == (False, True)
    assert info.arrow_type() == pa.bool_()


def test_integer_target() -> None:
    y, info = encode_target(spec(), "INTEGER", target([0, 1, 1], pa.int32()))
    assert y.tolist() == [0.0, 1.0, 1.0]
    assert info.classes == (0, 1)


def test_string_target_and_positive_class_reorders() -> None:
    y, info = encode_target(spec(), "VARCHAR", target(["yes", "no", "yes"]))
    assert (y.tolist(), info.classes) == ([1.0, 0.0, 1.0], ("no", "yes"))
    y, info = encode_target(spec(positive_class="no"), "VARCHAR", target(["yes", "no", "yes"]))
    assert (y.tolist(), info.classes) == ([0.0, 1.0, 0.0], ("yes", "no"))


def test_multiclass_string_target() -> None:
    y, info = encode_target(spec(task="multiclass"), "VARCHAR", target(["B", "C", "A", "B"]))
    assert y.tolist() == [1.0, 2.0, 0.0, 1.0]
    assert info.classes == ("A", "B", "C")
    assert info.arrow_type() == pa.string()


def test_regression_target() -> None:
    y, info = encode_target(spec(task="regression"), "DOUBLE", target([1.5, 2.0]))
    assert y.tolist() == [1.5, 2.0]
    assert info.classes == ()
    assert info.arrow_type() == pa.float64()


def test_target_with_one_class() -> None:
    with pytest.raises(DataError) as info:
        encode_target(spec(), "BOOLEAN", target([True, True]))
    assert str(info.value) == (f"{WHERE}: target 'defaulted' has only one class (True) among "
                               "labelled rows; a binary model needs at least two")


def test_binary_target_with_three_classes() -> None:
    with pytest.raises(DataError) as info:
        encode_target(spec(), "VARCHAR", target(["a", "b", "c"]))
    assert str(info.value) == (f"{WHERE}: target 'defaulted' has 3 classes; use task: "
                               "multiclass")


def test_positive_class_not_a_value() -> None:
    with pytest.raises(SpecError) as info:
        encode_target(spec(positive_class="maybe"), "VARCHAR", target(["yes", "no"]))
    assert str(info.value) == (f"{WHERE}: positive_class 'maybe' is not a value of the target "
                               "(values: ['no', 'yes'])")


@pytest.mark.parametrize("dtype", ["VARCHAR", "BOOLEAN"])
def test_regression_target_must_be_numeric(dtype: str) -> None:
    with pytest.raises(DataError) as info:
        encode_target(spec(task="regression"), dtype, target(["1", "2"]))
    assert str(info.value) == (f"{WHERE}: target 'defaulted' has type {dtype}; a regression "
                               "target must be numeric")


def test_regression_target_with_nan() -> None:
    with pytest.raises(DataError) as info:
        encode_target(spec(task="regression"), "DOUBLE", target([1.0, math.nan, math.inf]))
    assert str(info.value) == (f"{WHERE}: target 'defaulted' has 2 NaN or infinite values; "
                               "NULL or clean them in the dbt model")


def test_class_label_of_unusable_type() -> None:
    with pytest.raises(DataError) as info:
        encode_target(spec(), "DATE", target([1, 2], pa.int32()))
    assert str(info.value) == (f"{WHERE}: target 'defaulted' has type DATE; a class label "
                               "must be a boolean, integer or string column")


# --- quoting ------------------------------------------------------------------------------

HOSTILE = 'x"; drop table ml.models; --'


def test_quote_doubles_embedded_quotes() -> None:
    assert quote(HOSTILE) == '"x""; drop table ml.models; --"'
    assert qualified("ml", HOSTILE) == '"ml"."x""; drop table ml.models; --"'


def test_hostile_names_stay_names_in_duckdb() -> None:
    con = duckdb.connect()
    try:
        con.execute("create schema ml")
        con.execute("create table ml.models (v integer)")
        con.execute(f"create table {qualified('ml', HOSTILE)} ({quote(HOSTILE)} integer)")
        con.execute(f"insert into {qualified('ml', HOSTILE)} values (7)")
        assert con.execute(f"select {quote(HOSTILE)} from {qualified('ml', HOSTILE)}"
                           ).fetchall() == [(7,)]
        assert relation_columns(con, "ml", HOSTILE) == [(HOSTILE, "INTEGER")]
        tables = con.execute("select table_name from information_schema.tables "
                             "where table_schema = 'ml' order by 1").fetchall()
    finally:
        con.close()
    assert tables == [("models",), (HOSTILE,)]


@settings(max_examples=60, deadline=None)
@given(cents=st.lists(st.integers(-10**8, 10**8), min_size=2, max_size=30, unique=True))
def test_decimal_labels_are_the_doubles_duckdb_casts_them_to(cents: list[int]) -> None:
    """Arrow's decimal -> double cast is not correctly rounded: a label 3.30 became the class
    3.3000000000000003, so `prediction = label` was false in SQL for every row of it (an
    audit). The classes are now DuckDB's own doubles, and every label finds its class."""
    with duckdb.connect() as con:
        table = con.sql("select cast(c / 100 as decimal(12, 2)) as d, "
                        "cast(cast(c / 100 as decimal(12, 2)) as double) as x from "
                        "(select unnest(?::bigint[]) as c)", params=[cents]).to_arrow_table()
    y, info = encode_target(spec(task="multiclass"), "DECIMAL(12,2)", table.column("d"))
    assert sorted(info.classes) == sorted(table.column("x").to_pylist())
    assert [info.classes[int(code)] for code in y] == table.column("x").to_pylist()


def test_unsigned_labels_beyond_bigint_are_one_line() -> None:
    """A UBIGINT label above 2^63 - 1 was an OverflowError traceback."""
    with pytest.raises(DataError, match=r"has class labels beyond the BIGINT range; map them "
                                        r"to smaller numbers or strings in the dbt model"):
        encode_target(spec(task="multiclass"), "UBIGINT",
                      target([1, 2, 2**64 - 1], pa.uint64()))
