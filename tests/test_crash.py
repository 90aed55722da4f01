"""Crash safety: `pyml score`, `train`, `explain` and `profile` killed with SIGKILL leave a
whole database.

Kills through the harness of `make bench-crash` (bench/crash.py), on the small lending
project: real child processes, a real DuckDB file, the checks the bench makes. score,
explain and profile write through one writer (pyml.store.writer); each is killed exactly
before and after its swap commits, and score and explain at random moments too.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from bench import crash


@pytest.fixture(scope="module")
def base(built_loans: Path, tmp_path_factory: pytest.TempPathFactory) -> crash.Base:
    """The crash base state (v1 scored, then the relation changed) and its clean runs.

    Tiny batches make `pyml score`'s (and `explain`'s) write of 3,000 rows last ~0.4 s,
    hundreds of batches long as on a real table, so kills land in it.
    """
    return crash.prepare(built_loans, tmp_path_factory.mktemp("crash"),
                         score_args=("--batch-size", "10"), in_process=True)


@pytest.mark.slow  # 24 s: CI runs it (make test-all); make test stays within its budget
def test_sigkill_mid_run_leaves_the_old_or_the_new_state(base: crash.Base,
                                                         tmp_path: Path) -> None:
    runs = crash.run_all(base, crash.plan(base, 6, seed=8), tmp_path)
    assert sorted(r.command for r in runs) == ["score"] * 3 + ["train"] * 3
    assert [(r.command, r.phase, r.problems) for r in runs if not r.survived] == []
    assert sum(r.killed for r in runs) >= 4  # the kills landed while the commands ran
    assert {r.outcome for r in runs} <= {"old", "new"}


def test_the_checks_catch_a_broken_database(base: crash.Base, tmp_path: Path) -> None:
    db = tmp_path / crash.DB_NAME
    crash.copy_db(base.db, db)
    assert crash.check(db, base, "score") == ("old", [])
    con = duckdb.connect(str(db))
    try:
        con.execute(f"delete from {crash.PREDICTIONS} where loan_id <= 10")
        con.execute("create table ml.__pyml_tmp_default_risk_predictions_0 (x int)")
        con.execute("insert into ml.metrics (model_name, version, split, metric, n_rows) "
                    "values ('default_risk', 9, 'holdout', 'auc', 1)")
        con.execute("update ml.models set booster = 'not a booster'::blob")
    finally:
        con.close()
    outcome, problems = crash.check(db, base, "score")
    assert outcome == ""
    assert problems == [
        f"{crash.PREDICTIONS} has {base.rows - 10} rows; {crash.RELATION} has {base.rows}",
        f"{crash.PREDICTIONS} is neither the old nor the new table (checksum "
        + problems[1].rsplit(" ", 1)[1],
        problems[2],  # the booster's own XGBoost error text
        "ml.metrics has rows of default_risk v9, which ml.models lacks",
        "temporary table ml.__pyml_tmp_default_risk_predictions_0 left behind",
    ]
    assert problems[2].startswith("default_risk v1: booster (ubj) does not load: ")


@pytest.mark.parametrize("point", sorted(crash.INJECTED))
def test_sigkill_at_the_swap_and_the_commit(base: crash.Base, tmp_path: Path,
                                            point: str) -> None:
    # The few milliseconds around a swap or a commit, which random kills rarely hit.
    run = crash.injected_run(base, point, tmp_path)
    assert run.killed
    assert (run.outcome, run.problems) == (crash.INJECTED_OUTCOME[point], ())


def test_sigkill_mid_explain_leaves_the_old_or_the_new_explanations(
        base: crash.Base, tmp_path: Path) -> None:
    runs = crash.run_all(base, crash.plan(base, 3, seed=5, commands=("explain",)), tmp_path)
    assert [(r.phase, r.problems) for r in runs if not r.survived] == []
    assert sum(r.killed for r in runs) >= 2
    assert {r.outcome for r in runs} <= {"old", "new"}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["score", "explain", "profile"])
def test_many_sigkills_of_the_table_writers(base: crash.Base, tmp_path: Path,
                                            command: str) -> None:
    runs = crash.run_all(base, crash.plan(base, 12, seed=11, commands=(command,)), tmp_path)
    assert [(r.phase, r.problems) for r in runs if not r.survived] == []
    assert {r.outcome for r in runs} <= {"old", "new"}
