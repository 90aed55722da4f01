"""The key check that `pyml score` runs on both engines (pyml.modelling.model.check_key_counts):
a relation with no rows, a NULL key part or a repeated key is refused before anything is
written, since its predictions table would hold rows no key can tell apart.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyml.errors import DataError
from pyml.modelling.model import check_key_counts

WHERE, LABEL, KEY = "model 'm' v1", "main.t", ("a", "b")
part = st.one_of(st.none(), st.integers(0, 3))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(part, part), max_size=12))
def test_refused_exactly_when_a_key_is_missing_null_or_repeated(
        rows: list[tuple[int | None, int | None]]) -> None:
    # The counts as pyml score takes them on DuckDB: one pass over the relation.
    con = duckdb.connect()
    con.register("t", pa.table({"a": pa.array([r[0] for r in rows], pa.int64()),
                                "b": pa.array([r[1] for r in rows], pa.int64())}))
    total, distinct, null_keys = con.execute(
        "select count(*), count(distinct (a, b)), count(*) filter (where a is null or "
        "b is null) from t").fetchone()  # type: ignore[misc]
    con.close()
    nulls = sum(1 for r in rows if None in r)
    repeated = len(rows) - len(set(rows))
    if not rows:
        expected = f"{WHERE}: {LABEL} is empty; nothing to score (did `dbt build` run?)"
    elif nulls:
        expected = (f"{WHERE}: {LABEL} has {nulls} rows with a NULL key (a, b); filter or "
                    "fill them in the dbt model")
    elif repeated:
        expected = (f"{WHERE}: {LABEL} has {repeated} duplicate keys (a, b); make the key "
                    "unique in the dbt model")
    else:
        check_key_counts(WHERE, LABEL, KEY, total, distinct, null_keys)
        return
    with pytest.raises(DataError) as error:
        check_key_counts(WHERE, LABEL, KEY, total, distinct, null_keys)
    assert str(error.value) == expected
