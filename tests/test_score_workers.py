"""`pyml score` with several prediction threads (pyml.store.writer._in_order): each batch
predicted on its own thread at nthread=1 must give XGBoost's own prediction for every row,
bit for bit, written once per key, with the model's booster left as it was."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import pyml.verbs.score as score_verb
from pyml.data.encode import Encoder, Feature, select_exprs
from pyml.errors import DataError
from pyml.modelling.model import KeyRepeats, LoadedModel, StreamedKeyCheck
from pyml.store.registry import StoredModel, Target

FEATURES = (Feature("a", "numeric", "DOUBLE"), Feature("b", "numeric", "BIGINT"),
            Feature("c", "categorical", "VARCHAR", ("x", "y", "z")))


def _model(con: duckdb.DuckDBPyConnection, task: str) -> StoredModel:
    table = con.sql(f"select {', '.join(select_exprs(list(FEATURES)))}, label from t"
                    ).to_arrow_table()
    X = Encoder(list(FEATURES)).matrix([table.column(i) for i in range(3)], "test")
    y = table.column(3).to_numpy().astype(float)
    params = ({"objective": "binary:logistic"} if task == "binary"
              else {"objective": "reg:squarederror"})
    dtrain = xgb.DMatrix(X, y if task == "regression" else (y > 0.5),
                         feature_names=["a", "b", "c"], feature_types=["q", "q", "c"],
                         enable_categorical=True)
    booster = xgb.train({**params, "max_depth": 5, "tree_method": "hist", "seed": 1,
                         "max_cat_to_onehot": 1}, dtrain, 30)
    target = (Target("BOOLEAN", (False, True)) if task == "binary"
              else Target("DOUBLE", ()))
    return StoredModel(name="m", version=1, created_at=datetime(2026, 1, 1), task=task,
                       target=target, key=("id",), features=FEATURES,
                       spec={"threshold": 0.5}, feature_relation="main.t", booster=booster)


@pytest.mark.parametrize("task", ["binary", "regression"])
@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_batches_give_xgboost_s_predictions_bit_for_bit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str, workers: int) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("""
        create table t as
        select (i * 7919) % 5003 as id,
               case when i % 11 = 0 then null else sin(i) * 100 end as a,
               case when i % 13 = 0 then null else (i * 31) % 97 end as b,
               case when i % 5 = 0 then null when i % 17 = 0 then 'unseen'
                    else ['x', 'y', 'z'][i % 3 + 1] end as c,
               (sin(i) + ((i * 31) % 97) / 50.0 + (i % 3)) as label
        from range(5003) r(i)""")
    stored = _model(con, task)
    threads_before = stored.booster.attr("nthread"), stored.booster.save_config()
    monkeypatch.setattr(score_verb, "prediction_workers", lambda rows, batch: workers)
    result = score_verb.score_relation(con, LoadedModel(stored), ("main", "t"), batch_size=128)
    assert result.rows == 5003
    table = con.sql(f"select {', '.join(select_exprs(list(FEATURES)))}, p.* exclude (id) "
                    "from t join ml.m_predictions p using (id) order by id").to_arrow_table()
    X = Encoder(list(FEATURES)).matrix([table.column(i) for i in range(3)], "test")
    expected = stored.booster.inplace_predict(X)  # all cores, one call
    column = "probability" if task == "binary" else "prediction"
    got = table.column(column).to_numpy()
    assert len(got) == 5003 and np.isfinite(got).all()
    assert np.array_equal(got.astype(np.float32), expected)  # float32 bit patterns
    assert con.execute("select count(distinct id) from ml.m_predictions").fetchall() == [
        (5003,)]
    assert (stored.booster.attr("nthread"), stored.booster.save_config()) == threads_before
    con.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(-40, 40), max_size=30), max_size=6), st.integers(1, 8))
def test_streamed_key_check_raises_exactly_on_a_repeated_key(batches: list[list[int]],
                                                             run: int) -> None:
    # Runs of `run` rows (65,535 in use) so that batches span several runs.
    values = [v for b in batches for v in b]
    if not values:
        return
    check = type("Runs", (StreamedKeyCheck,), {"RUN": run})(min(values), max(values))
    repeated = len(values) != len(set(values))
    try:
        for b in batches:
            check.add(pa.array(b, pa.int64()))
    except KeyRepeats:
        assert repeated
    else:
        assert not repeated


@settings(max_examples=30, deadline=None)
@given(key_type=st.sampled_from(["tinyint", "integer", "bigint", "uinteger", "ubigint",
                                 "hugeint"]),
       keys=st.lists(st.integers(0, 120), min_size=1, max_size=300),
       offset=st.sampled_from([0, -60, 2**31 - 200, 10**12]),
       batch=st.integers(1, 64), workers=st.integers(1, 3))
def test_score_refuses_exactly_the_repeated_keys(
        tmp_path_factory: pytest.TempPathFactory, key_type: str, keys: list[int], offset: int,
        batch: int, workers: int) -> None:
    # Whichever check runs (streamed for a dense single integer key, count(distinct) for the
    # others), a repeated key fails the score with the same message and keeps the old table;
    # a unique one is written once per key.
    bounds = {"tinyint": (-128, 127), "integer": (-2**31, 2**31 - 1),
              "uinteger": (0, 2**32 - 1), "bigint": (-2**63, 2**63 - 1),
              "ubigint": (0, 2**64 - 1), "hugeint": (-2**127, 2**127 - 1)}[key_type]
    values = [k + offset for k in keys]
    assume(bounds[0] <= min(values) and max(values) <= bounds[1])
    con = duckdb.connect(str(tmp_path_factory.mktemp("keys") / "k.duckdb"))
    try:
        con.execute(f"create table t as select cast(k as {key_type}) as id, "
                    "sin(k::double) * 10 as a, (k % 7)::bigint as b, "
                    "['x', 'y', 'z'][(k % 3)::int + 1] as c, random() as label "
                    "from (select unnest(cast(? as varchar[]))::hugeint as k)",
                    [[str(v) for v in values]])
        con.execute("create schema ml")
        con.execute("create table ml.m_predictions as select 'old' as was")
        stored = _model(con, "regression")
        score_verb.prediction_workers = (  # type: ignore[assignment]
            lambda rows, size: workers)
        repeated = len(values) - len(set(values))
        if repeated:
            with pytest.raises(DataError) as info:
                score_verb.score_relation(con, LoadedModel(stored), ("main", "t"),
                                          batch_size=batch)
            assert str(info.value) == (f"model 'm' v1: main.t has {repeated} duplicate keys "
                                       "(id); make the key unique in the dbt model")
            assert con.execute("select * from ml.m_predictions").fetchall() == [("old",)]
        else:
            score_verb.score_relation(con, LoadedModel(stored), ("main", "t"),
                                      batch_size=batch)
            assert sorted(int(r[0]) for r in con.execute(
                "select id from ml.m_predictions").fetchall()) == sorted(values)
    finally:
        score_verb.prediction_workers = PREDICTION_WORKERS  # type: ignore[assignment]
        con.close()


PREDICTION_WORKERS = score_verb.prediction_workers
