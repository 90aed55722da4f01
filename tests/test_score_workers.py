"""`pyml score` with several prediction threads (pyml.store.writer._in_order): each batch
predicted on its own thread at nthread=1 must give XGBoost's own prediction for every row,
bit for bit, written once per key, with the model's booster left as it was."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest
import xgboost as xgb

import pyml.verbs.score as score_verb
from pyml.data.encode import Encoder, Feature, select_exprs
from pyml.modelling.model import LoadedModel
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
