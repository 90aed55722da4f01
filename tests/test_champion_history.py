"""Rollback walks the champion history in ml.model_events (issue 16, part 5).

A hypothesis-generated sequence of trainings (promoted or not), promotions by hand and
rollbacks runs on a real DuckDB registry through pyml.store's own writers; after every step
the champion is the one an undo stack of champions predicts, and a rollback is refused only
where that stack has nothing under the champion.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyml.data.encode import Feature, Target
from pyml.errors import LifecycleError
from pyml.store import champions, lifecycle, registry

NAME = "churn"


def _booster() -> xgb.Booster:
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    return xgb.train({"objective": "reg:squarederror", "nthread": 1},
                     xgb.DMatrix(x, label=x[:, 0]), num_boost_round=1)


BOOSTER = _booster()


def _new() -> registry.NewVersion:
    return registry.NewVersion(
        name=NAME, task="regression", objective="reg:squarederror", description="test",
        feature_model="model.t.features", feature_relation="main.features", target="y",
        target_info=Target("DOUBLE"), key=("id",),
        features=(Feature("a", "numeric", "DOUBLE"), Feature("b", "numeric", "DOUBLE")),
        spec={"name": NAME}, params={}, split={}, rows=(20, 0, 20, 0), booster=BOOSTER,
        best_iteration=None, dbt_invocation_id=None, metrics=(), importance=())


def _train(con: duckdb.DuckDBPyConnection, promote: bool) -> int:
    def decide(_: Any, version: int, champion: int) -> lifecycle.Decision:
        if promote:
            return lifecycle.Decision(True, "promoted", f"v{version} beats v{champion}")
        return lifecycle.Decision(False, "rejected", f"v{champion} stays")
    return registry.write_version(con, _new(), decide=decide)


Step = tuple[str, int]  # ("train", promote 0/1) | ("promote", pick) | ("rollback", 0)

steps = st.lists(st.one_of(
    st.tuples(st.just("train"), st.integers(0, 1)),
    st.tuples(st.just("promote"), st.integers(0, 20)),
    st.tuples(st.just("rollback"), st.just(0))), min_size=1, max_size=14)


def _run(db: Path, plan: list[Step]) -> None:
    with duckdb.connect(str(db)) as con:
        _train(con, True)
        stack, versions = [1], [1]  # the model: an undo stack of champions
        for verb, arg in plan:
            if verb == "train":
                v = _train(con, bool(arg))
                versions.append(v)
                if arg or not stack:
                    stack.append(v)
            elif verb == "promote":
                target = versions[arg % len(versions)]
                if target == stack[-1]:
                    with pytest.raises(LifecycleError, match="already the champion"):
                        lifecycle.promote(con, NAME, target)
                    continue
                change = lifecycle.promote(con, NAME, target)
                assert (change.version, change.previous) == (target, stack[-1])
                stack.append(target)
            elif len(stack) < 2:
                with pytest.raises(LifecycleError, match="no earlier champion") as refused:
                    lifecycle.rollback(con, NAME)
                others = {v for v in lifecycle.champion_history(con, NAME)} - {stack[-1]}
                assert not others
                if "only champion" in str(refused.value):  # said only where it is true
                    crowned = con.execute("select distinct version from ml.model_events "
                                          "where to_status = 'champion'").fetchall()
                    assert crowned == [(stack[-1],)]
            else:
                change = lifecycle.rollback(con, NAME)
                assert (change.previous, change.version) == (stack[-1], stack[-2])
                stack.pop()
            assert lifecycle.champion_version(con, NAME) == stack[-1]
            assert lifecycle.champion_history(con, NAME) == stack
            champs = con.execute("select count(*) from ml.models where status = 'champion'"
                                 ).fetchone()
            assert champs == (1,)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_rollback_returns_to_the_previous_champion(tmp_path: Path, plan: list[Step]) -> None:
    db = tmp_path / f"r{abs(hash(tuple(plan)))}.duckdb"
    db.unlink(missing_ok=True)
    _run(db, plan)


@pytest.mark.slow
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_rollback_returns_to_the_previous_champion_many(tmp_path: Path,
                                                        plan: list[Step]) -> None:
    db = tmp_path / f"r{abs(hash(tuple(plan)))}.duckdb"
    db.unlink(missing_ok=True)
    _run(db, plan)


def test_the_reported_case_names_the_champions_rolled_back(tmp_path: Path) -> None:
    # v1, v2 and v3 champions in turn, two rollbacks: the third finds v1 first, and says so
    # without claiming v1 was the only champion.
    with duckdb.connect(str(tmp_path / "r.duckdb")) as con:
        for _ in range(3):
            _train(con, True)
        assert lifecycle.rollback(con, NAME).version == 2
        assert lifecycle.rollback(con, NAME).version == 1
        with pytest.raises(LifecycleError) as refused:
            lifecycle.rollback(con, NAME)
    assert str(refused.value) == (
        "model 'churn' has no earlier champion to roll back to (v1 was its first champion; "
        "v2, v3 were champion after it and have been rolled back); `pyml promote churn "
        "--version N` picks a version by hand")


@given(st.lists(st.tuples(st.integers(1, 6), st.sampled_from(
    ["promoted", "rejected", "registered", "retired", "restored", "rolled_back", "migrated"]),
    st.sampled_from([None, "champion", "challenger", "retired"])), max_size=30))
def test_history_top_is_a_crowned_version_and_rollback_target_is_below(
        rows: list[champions.EventRow]) -> None:
    # The pure rule on any event log, even one pyml would not write: never two equal
    # neighbours, every item was crowned, and a rollback target is a different version.
    stack = champions.history(rows)
    assert all(a != b for a, b in itertools.pairwise(stack))
    assert set(stack) <= set(champions.crowned(rows))
    if stack:
        try:
            target = champions.rollback_target(NAME, stack[-1], stack, champions.crowned(rows))
        except LifecycleError as e:
            assert len(set(stack)) == 1, e
        else:
            assert target != stack[-1] and target in stack
