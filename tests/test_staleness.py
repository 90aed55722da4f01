"""Never silently stale (issue 16, part 1): `pyml models`, `show`, `predictions`, `promote`,
`rollback` and `tune` say when ml.<name>_predictions / _explanations were written by a
version that is not the champion, with the command that fixes it; `--score` and the spec's
`promote.score` rescore at once.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyml.dbt.spec import parse_specs
from pyml.errors import SpecError
from pyml.store import lifecycle, staleness

from .conftest import SCHEMA_YML, Loans
from .test_champion_history import NAME, _train

HINT = ("stale: ml.default_risk_predictions was written by v{by}; the champion is v{champ}: "
        "run `pyml score default_risk`")


def _spec(promote: str) -> str:
    # A second version that differs (manual policy: it waits for `pyml promote`).
    return SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n"
        "            params: {max_depth: 2}\n"
        f"            promote: {promote}\n", 1)


@pytest.fixture
def challenged(scored: Loans) -> Loans:
    """default_risk v1 champion (its predictions scored by v1) and v2 a challenger."""
    scored.write_schema(_spec("{policy: manual}"))
    scored.ok("train", "default_risk")
    assert scored.sql("select version, status from ml.models where model_name = "
                      "'default_risk' order by 1") == [(1, "champion"), (2, "challenger")]
    return scored


def _versions(loans: Loans) -> list[tuple[int]]:
    return loans.sql("select distinct model_version from ml.default_risk_predictions")


def test_every_command_says_the_predictions_are_stale_until_rescored(challenged: Loans
                                                                     ) -> None:
    out = challenged.ok("promote", "default_risk").output
    assert out == f"default_risk: v2 is now the champion (was v1)\n{HINT.format(by=1, champ=2)}\n"
    hint = HINT.format(by=1, champ=2)
    assert challenged.ok("models").output.splitlines()[-1] == hint
    assert challenged.ok("models", "grade").output.splitlines()[-1].startswith("grade")
    assert challenged.ok("predictions", "default_risk").output.splitlines()[-1] == hint
    assert challenged.ok("show", "default_risk").output.splitlines()[-1] == hint
    challenged.ok("score", "default_risk")
    for args in (("models",), ("predictions", "default_risk"), ("show", "default_risk")):
        assert "stale:" not in challenged.ok(*args).output, args
    out = challenged.ok("rollback", "default_risk").output
    assert out.splitlines() == ["default_risk: rolled back from v2 to v1",
                                HINT.format(by=2, champ=1)]


def test_score_flag_rescores_right_away(challenged: Loans) -> None:
    challenged.ok("explain", "default_risk")
    out = challenged.ok("promote", "default_risk", "--score").output
    assert "[default_risk] rescored ml.default_risk_predictions with v2 (" in out
    assert _versions(challenged) == [(2,)]
    # Explanations are not rewritten by a score: they are named, with their own command.
    assert out.splitlines()[-1] == (
        "stale: ml.default_risk_explanations was written by v1; the champion is v2: run "
        "`pyml explain default_risk`")
    out = challenged.ok("rollback", "default_risk", "--score").output
    assert "rescored ml.default_risk_predictions with v1 (" in out
    assert _versions(challenged) == [(1,)]
    assert "stale: ml.default_risk_predictions" not in out


def test_spec_promote_score_rescores_and_no_score_overrides(challenged: Loans) -> None:
    challenged.write_schema(_spec("{policy: manual, score: true}"))
    out = challenged.ok("promote", "default_risk").output
    assert "rescored ml.default_risk_predictions with v2" in out and "stale:" not in out
    assert _versions(challenged) == [(2,)]
    out = challenged.ok("rollback", "default_risk", "--no-score").output
    assert out.splitlines() == ["default_risk: rolled back from v2 to v1",
                                HINT.format(by=2, champ=1)]
    assert _versions(challenged) == [(2,)]


def test_a_failed_rescore_says_the_promotion_happened(challenged: Loans) -> None:
    challenged.sql("drop table main.loan_features")  # nothing to score any more
    result = challenged.pyml("promote", "default_risk", "--score")
    assert result.exit_code == 1
    assert result.output.startswith("Error: default_risk: v2 is now the champion (was v1), "
                                    "but rescoring failed: ")
    assert challenged.sql("select status from ml.models where model_name = 'default_risk' "
                          "and version = 2") == [("champion",)]
    assert _versions(challenged) == [(1,)]


def test_tune_that_promotes_says_so_or_rescores(scored: Loans) -> None:
    out = scored.ok("tune", "grade", "--n-trials", "2").output
    promoted = "grade v2 (multiclass) champion" in out
    stale = ("stale: ml.grade_predictions was written by v1; the champion is v2: run "
             "`pyml score grade`")
    assert (stale in out) == promoted
    out = scored.ok("tune", "grade", "--n-trials", "2", "--score").output
    (champion,), = scored.sql("select version from ml.models where model_name = 'grade' "
                              "and status = 'champion'")
    if "grade v3 (multiclass) champion" in out:
        assert f"[grade] rescored ml.grade_predictions with v{champion}" in out
        assert scored.sql("select distinct model_version from ml.grade_predictions") == [
            (champion,)]
    assert "rescored" in out or "grade v3 (multiclass) challenger" in out


def test_train_that_promotes_says_so_or_rescores(scored: Loans) -> None:
    scored.write_schema(_spec("{policy: auto}"))
    out = scored.ok("train", "default_risk").output
    promoted = "\n  -> champion: " in out
    assert (HINT.format(by=1, champ=2) in out) == promoted, out
    scored.write_schema(_spec("{policy: auto}").replace("max_depth: 2", "max_depth: 3"))
    out = scored.ok("train", "default_risk", "--score").output
    if "\n  -> champion: " in out:
        assert "[default_risk] rescored ml.default_risk_predictions with v3" in out
        assert _versions(scored) == [(3,)]
    else:
        assert "rescored" not in out


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_promote_score_must_be_a_boolean(value: object) -> None:
    with pytest.raises(SpecError) as e:
        parse_specs({"name": "m", "task": "binary", "target": "y", "key": "id",
                     "promote": {"score": value}},
                    feature_model="model.p.f", schema="main", relation="f", source_file="s.yml")
    assert str(e.value) == (f"s.yml: model 'm' on model.p.f: promote.score must be true or "
                            f"false, got {value!r}")


# The rule on a real registry: hypothesis-generated promotions, rollbacks and scorings (by
# the champion, by another version, or an incremental score mixing two), checked against
# the versions the table holds.
ops = st.lists(st.one_of(
    st.tuples(st.just("promote"), st.integers(0, 3)),
    st.tuples(st.just("rollback"), st.just(0)),
    st.tuples(st.just("score"), st.integers(-1, 3)),  # -1: the champion
    st.tuples(st.just("mix"), st.integers(0, 3))), max_size=10)


def _write(con: duckdb.DuckDBPyConnection, version: int, replace: bool) -> None:
    # The rows' model_version is all the rule reads; pyml score writes it the same way.
    if replace:
        con.execute(f"create or replace table ml.{NAME}_predictions as select range as id, "
                    f"0.5 as prediction, {version} as model_version from range(5)")
    else:
        con.execute(f"insert into ml.{NAME}_predictions select 100 + range, 0.5, {version} "
                    "from range(2)")


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=ops)
def test_stale_exactly_when_a_row_is_not_the_champions(tmp_path: Path,
                                                       plan: list[tuple[str, int]]) -> None:
    db = tmp_path / f"s{abs(hash(tuple(plan)))}.duckdb"
    db.unlink(missing_ok=True)
    with duckdb.connect(str(db)) as con:
        for promote in (True, False, False, False):
            _train(con, promote)  # v1 champion, v2..v4 challengers
        written: set[int] = set()
        for verb, arg in plan:
            champion = lifecycle.champion_version(con, NAME)
            assert champion is not None
            if verb == "promote" and arg + 1 != champion:
                lifecycle.promote(con, NAME, arg + 1)
            elif verb == "rollback" and len(lifecycle.champion_history(con, NAME)) > 1:
                lifecycle.rollback(con, NAME)
            elif verb == "score":
                v = champion if arg < 0 else arg + 1
                _write(con, v, True)
                written = {v}
            elif verb == "mix" and written:
                _write(con, arg + 1, False)
                written.add(arg + 1)
            champion = lifecycle.champion_version(con, NAME)
            hints = staleness.stale_hints(con, [NAME])
            if written and written != {champion}:
                by = " and ".join(", ".join(f"v{v}" for v in sorted(written)).rsplit(", ", 1))
                assert hints == [f"ml.{NAME}_predictions was written by {by}; the champion "
                                 f"is v{champion}: run `pyml score {NAME}`"]
            else:
                assert hints == []
