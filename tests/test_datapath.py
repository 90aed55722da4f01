"""The SQL-side input matrix (`matrix_sql` + `Encoder.from_fixed`) equals the Arrow-side one
(`select_exprs` + `Encoder.matrix`) bit for bit, and a value beyond float32 names its column."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from pyml.data.encode import Encoder, Feature, matrix_sql, range_error, select_exprs
from pyml.errors import DataError


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    rng = np.random.default_rng(3)
    n = 5000
    con.execute("create table t (d double, i bigint, m decimal(12, 4), b boolean, s varchar)")
    d = rng.normal(size=n) * 10.0 ** rng.integers(-8, 30, size=n)
    rows = []
    for k in range(n):
        rows.append((
            None if k % 17 == 0 else (float("nan") if k % 29 == 0 else float(d[k])),
            None if k % 13 == 0 else int(rng.integers(-2**62, 2**62)),
            None if k % 11 == 0 else round(float(rng.normal() * 1000), 4),
            None if k % 7 == 0 else bool(k % 2),
            None if k % 5 == 0 else f"v{k % 9}",
        ))
    con.executemany("insert into t values (?, ?, ?, ?, ?)", rows)
    return con


FEATURES = [
    Feature("d", "numeric", "DOUBLE"),
    Feature("i", "numeric", "BIGINT"),
    Feature("m", "numeric", "DECIMAL(12,4)"),
    Feature("b", "numeric", "BOOLEAN"),
    Feature("s", "categorical", "VARCHAR", ("v1", "v2", "v3", "v4", "v5", "it's")),
]


def test_sql_matrix_equals_arrow_matrix(con: duckdb.DuckDBPyConnection) -> None:
    enc = Encoder(FEATURES)
    cols = con.sql(f"select {', '.join(select_exprs(FEATURES))} from t").to_arrow_table()
    expected = enc.matrix([cols.column(i) for i in range(cols.num_columns)], "test")
    fixed = con.sql(f"select {matrix_sql(FEATURES)} from t").to_arrow_table()
    got = enc.from_fixed(fixed.column(0), "test")
    assert got.dtype == np.float32 and got.shape == expected.shape
    # Equal values and NaN in the same places (NULL, NaN and unseen categories are missing).
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[:, 4]).sum() == np.isnan(expected[:, 4]).sum() > 0


def test_value_beyond_float32_names_the_column(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("update t set d = 1e300 where i is null")
    with pytest.raises(Exception) as info:
        con.sql(f"select {matrix_sql(FEATURES)} from t").to_arrow_table()
    assert "out of range" in str(info.value)
    err = range_error(con, "t", FEATURES, "model 'm'")
    assert isinstance(err, DataError)
    assert str(err).startswith("model 'm': feature 'd' has ")
    assert "out-of-range values" in str(err)


def test_infinity_is_an_error_naming_the_column(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("update t set d = 'inf'::double where i is null")
    fixed = con.sql(f"select {matrix_sql(FEATURES)} from t").to_arrow_table()
    with pytest.raises(DataError, match=r"feature 'd' has .* infinite"):
        Encoder(FEATURES).from_fixed(fixed.column(0), "test")
