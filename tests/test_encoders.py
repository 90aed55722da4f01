"""One record encoder plan, four renderers, one row: for any record, the float32 input row that
`pyml score` builds in DuckDB (`matrix_sql`) and from Arrow (`Encoder`), the one `pyml serve`
builds from a request body and the one an exported predict.py builds from the model card are
the same bits, and a value one of them refuses, all of them refuse.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyml.data.encode import (
    F32_MAX,
    Encoder,
    Feature,
    input_plan,
    is_range_error,
    matrix_sql,
    select_exprs,
)
from pyml.data.records import F32_LIMIT
from pyml.engines.duckdb import fetch_arrow
from pyml.errors import DataError
from pyml.export import predict_script
from pyml.serve.champions import served_plan
from pyml.serve.codec import RequestError, encode_plan

CATEGORIES = ("east", "north", "it's", "é", "")
FEATURES = [
    Feature("d", "numeric", "DOUBLE"),
    Feature("i", "numeric", "BIGINT"),
    Feature("b", "numeric", "BOOLEAN"),
    Feature("s", "categorical", "VARCHAR", CATEGORIES),
    Feature("e", "categorical", "VARCHAR"),  # no category seen in training: always missing
]
INT64 = st.integers(-(2**63), 2**63 - 1)
BELOW_LIMIT = math.nextafter(F32_LIMIT, 0.0)  # the largest double float32 rounds to F32_MAX
NUMBERS = st.one_of(
    st.floats(),  # NaN, infinities, subnormals, huge and tiny included
    st.floats(min_value=-F32_LIMIT * 1.01, max_value=F32_LIMIT * 1.01),
    st.sampled_from([F32_MAX, BELOW_LIMIT, F32_LIMIT, -BELOW_LIMIT, -F32_LIMIT, 1e-45, 7e-46,
                     2.0**-149, 2.0**-150, 16777217.0, 0.1, 1 / 3, -0.0, math.nan, math.inf]),
    INT64,
)
# No lone surrogates: a DuckDB string is UTF-8 and cannot hold one, so `pyml score` never sees
# one; serve reads one that a JSON escape smuggles in as an unseen category (docs/reliability.md).
TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
               max_size=6)
RECORD = st.fixed_dictionaries({}, optional={
    "d": st.none() | NUMBERS,
    "i": st.none() | INT64,
    "b": st.none() | st.booleans(),
    "s": st.none() | st.sampled_from(CATEGORIES) | TEXT,
    "e": st.none() | TEXT,
    "other": st.integers(),  # not a feature: ignored
})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The predict.py that `pyml export` writes, imported as a module."""
    path = tmp_path_factory.mktemp("export") / "predict.py"
    path.write_text(predict_script())
    spec = importlib.util.spec_from_file_location("exported_predict", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def card() -> dict[str, Any]:
    """The part of the model card predict.py encodes with, through JSON as export writes it."""
    return json.loads(json.dumps({"plan": [r.to_dict() for r in input_plan(FEATURES)]}))


def by_duckdb(records: list[dict[str, Any]]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """`pyml score`'s two batch encoders on the records stored in a DuckDB table: the row
    built in SQL (`matrix_sql`) and the one built from Arrow columns (`Encoder.matrix`)."""
    con = duckdb.connect()
    try:
        con.execute("create table t (rid integer, d double, i bigint, b boolean, s varchar, "
                    "e varchar)")
        # A number in a DOUBLE column is a double: an integer becomes the nearest one.
        rows = [(n, None if r.get("d") is None else float(r["d"]), r.get("i"), r.get("b"),
                 r.get("s"), r.get("e")) for n, r in enumerate(records)]
        con.executemany("insert into t values (?, ?, ?, ?, ?, ?)", rows)
        encoder = Encoder(FEATURES)
        try:
            table = fetch_arrow(con, f"select {matrix_sql(FEATURES)} from t order by rid")
            in_sql: np.ndarray | None = encoder.from_fixed(table.column(0), "test")
        except (duckdb.Error, DataError) as e:
            assert isinstance(e, DataError) or is_range_error(e), e
            in_sql = None
        table = fetch_arrow(con, f"select {', '.join(select_exprs(FEATURES))} from t "
                                 "order by rid")
        try:
            from_arrow: np.ndarray | None = encoder.matrix(table.columns, "test")
        except DataError:
            from_arrow = None
        return in_sql, from_arrow
    finally:
        con.close()


def by_serve(records: list[dict[str, Any]]) -> np.ndarray | None:
    try:
        return encode_plan(served_plan(FEATURES), records)
    except RequestError as e:
        assert e.status == 422
        return None


def by_export(module: ModuleType, records: list[dict[str, Any]]) -> np.ndarray | None:
    try:
        return np.asarray(module.encode(card(), records))
    except module.RecordError:
        return None


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, except that any NaN equals any NaN (XGBoost reads every NaN as
    missing, whatever its sign or payload)."""
    if a.dtype != np.float32 or b.dtype != np.float32 or a.shape != b.shape:
        return False
    nan = np.isnan(a)
    return bool((nan == np.isnan(b)).all() and (a.view(np.uint32)[~nan]
                                                == b.view(np.uint32)[~nan]).all())


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(RECORD, min_size=1, max_size=12))
def test_every_encoder_builds_the_same_row(exported: ModuleType,
                                           records: list[dict[str, Any]]) -> None:
    in_sql, from_arrow = by_duckdb(records)
    served = by_serve(records)
    export = by_export(exported, records)
    results = {"sql": in_sql, "arrow": from_arrow, "serve": served, "export": export}
    refused = sorted(k for k, v in results.items() if v is None)
    assert refused in ([], sorted(results)), f"only {refused} refused {records}"
    if not refused:
        assert in_sql is not None
        for name, got in results.items():
            assert got is not None and same_bits(got, in_sql), (name, records)


def test_numbers_that_round_to_float32_max_are_read(exported: ModuleType) -> None:
    """Serve refused numbers just above float32's largest value that `pyml score` reads as
    that value (they round down to it); now both read them, and both refuse the next one."""
    records = [{"d": BELOW_LIMIT}, {"d": -BELOW_LIMIT}]
    expected = np.array([[F32_MAX], [-F32_MAX]], dtype=np.float32)
    for got in (by_duckdb(records)[0], by_serve(records), by_export(exported, records)):
        assert got is not None and np.array_equal(got[:, :1], expected)
    assert by_serve([{"d": F32_LIMIT}]) is None


def test_exported_predict_refuses_what_serve_refuses(exported: ModuleType) -> None:
    """predict.py used to pass a number beyond float32 on as infinity and code a number given
    for a category by its text; it now stops with serve's message."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"d": 1e300}, "record 1: field 'd' is 1e+300, outside the float32 range the model "
                       "reads"),
        ({"s": 3}, "record 1: field 's' must be a string (a category) or null, got number 3"),
        ({"d": True}, "record 1: field 'd' must be a number or null, got boolean true"),
        # A BOOLEAN column holds true/false only: 0.5 has no row in the table.
        ({"b": 0.5}, "record 1: field 'b' must be true, false, 0, 1 or null, got number 0.5"),
        ({"b": 2}, "record 1: field 'b' must be true, false, 0, 1 or null, got number 2"),
    ]
    for record, message in cases:
        with pytest.raises(exported.RecordError) as info:
            exported.encode(card(), [record])
        assert str(info.value) == message
        with pytest.raises(RequestError) as served:
            encode_plan(served_plan(FEATURES), [record])
        assert served.value.message == message


def test_a_boolean_feature_reads_1_and_0_as_true_and_false(exported: ModuleType) -> None:
    as_numbers = [{"b": 1}, {"b": 0}, {"b": 1.0}, {"b": float("nan")}]
    as_booleans = [{"b": True}, {"b": False}, {"b": True}, {"b": None}]
    for encode in (by_serve, lambda r: by_export(exported, r)):
        got, want = encode(as_numbers), encode(as_booleans)
        assert got is not None and want is not None and same_bits(got, want)


def test_the_card_carries_the_plan() -> None:
    assert card()["plan"] == [
        {"name": "d", "read": "number", "categories": []},
        {"name": "i", "read": "number", "categories": []},
        {"name": "b", "read": "boolean", "categories": []},
        {"name": "s", "read": "category", "categories": list(CATEGORIES)},
        {"name": "e", "read": "category", "categories": []},
    ]


def test_predict_script_embeds_the_record_encoder_verbatim() -> None:
    from pyml.data import records

    source = Path(records.__file__).read_text()
    assert records.portable_source() in predict_script()
    assert source.endswith(records.portable_source())
