"""`pyml score --incremental`: only new and changed rows are rescored, rows whose key is gone
are dropped, and the table equals a full score's, row for row, column for column.

Every run is a real `pyml score` (in-process, click) on a real DuckDB file of the lending
project; a "full score" to compare with runs on a copy of the same file.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import crash

from .conftest import FEATURES, SPECS, Loans
from .support import EXCLUDE, db_state

MODEL = "default_risk"
PREDICTIONS = f"ml.{MODEL}_predictions"
FINGERPRINTS = f"ml.{MODEL}_fingerprints"
RELATION = "main.loan_features"


def run(project: Path, db: Path, *args: str) -> str:
    """`pyml ARGS` on `db`, which must succeed; returns its output."""
    code, output = crash.run_pyml(project, db, *args, in_process=True)
    assert code == 0, output
    return output


def table(db: Path, model: str = MODEL) -> tuple[Any, ...]:
    """A predictions table as a full comparison sees it: columns with types and comments,
    the table comment, every row but scored_at (ordered by key), the distinct scored_at
    values, and the fingerprints table's rows and (model_version, scored_at) values."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        name = f"{model}_predictions"
        columns = con.execute(
            "select column_name, data_type, comment from duckdb_columns() where schema_name = "
            "'ml' and table_name = ? order by column_index", [name]).fetchall()
        comment = con.execute("select comment from duckdb_tables() where schema_name = 'ml' "
                              "and table_name = ?", [name]).fetchall()
        rows = con.execute(f"select * exclude (scored_at) from ml.{name} "
                           "order by loan_id").fetchall()
        stamps = con.execute(f"select count(distinct scored_at) from ml.{name}").fetchall()
        return columns, comment, rows, stamps
    finally:
        con.close()


def fingerprints_match(db: Path, model: str = MODEL, scored: bool = True) -> None:
    """The fingerprints table describes the predictions table's rows: same keys, the same
    model_version and scored_at; and (`scored`: the relation did not change since) the keys
    are the relation's."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        (missing, extra, other), = con.execute(
            f"select (select count(*) from ml.{model}_predictions p anti join "
            f"ml.{model}_fingerprints f using (loan_id, model_version, scored_at)), "
            f"(select count(*) from ml.{model}_fingerprints f anti join "
            f"ml.{model}_predictions p using (loan_id, model_version, scored_at)), "
            f"(select count(*) from ml.{model}_fingerprints f anti join {RELATION} r "
            f"using (loan_id))").fetchall()
        assert (missing, extra, other if scored else 0) == (0, 0, 0)
    finally:
        con.close()


def full_twin(project: Path, db: Path, model: str = MODEL) -> tuple[Any, ...]:
    """What a full `pyml score` makes of the same file (on a copy)."""
    twin = db.with_name("full_" + db.name)
    crash.copy_db(db, twin)
    run(project, twin, "score", model, "--no-incremental")
    return table(twin, model)


def edit(db: Path, sql: str, params: list[Any] | None = None) -> None:
    con = duckdb.connect(str(db))
    try:
        con.execute(sql, params or [])
    finally:
        con.close()


@pytest.fixture
def ready(scored: Loans) -> Loans:
    """The scored project after one `pyml score --incremental` of every model (a full score
    that keeps fingerprints: the tables had none)."""
    output = run(scored.dir, scored.db, "score", "--incremental")
    assert ("[default_risk] full score instead of an incremental one: "
            "ml.default_risk_predictions has no row fingerprints (a pyml score without "
            "--incremental wrote it)") in output
    return scored


@pytest.mark.parametrize("model", SPECS)
def test_edits_inserts_and_deletes_rescore_only_those_rows(ready: Loans, model: str) -> None:
    fingerprints_match(ready.db, model)
    before = table(ready.db, model)
    assert before[2] and before == full_twin(ready.dir, ready.db, model)
    edit(ready.db, f"create table main.snapshot as select * from {RELATION}")
    edit(ready.db, f"update {RELATION} set amount = amount * 2 where loan_id % 50 = 0")
    edit(ready.db, f"update {RELATION} set region = null where loan_id % 97 = 1")
    edit(ready.db, f"delete from {RELATION} where loan_id % 101 = 2")
    edit(ready.db, f"insert into {RELATION} select * replace (loan_id + 100000 as loan_id) "
                   f"from {RELATION} where loan_id < 40")
    (changed,), = edit_count(ready.db)
    output = run(ready.dir, ready.db, "score", model, "--incremental")
    assert f"rescored {changed:,} new or changed of " in output
    after = table(ready.db, model)
    assert after == full_twin(ready.dir, ready.db, model)
    assert after != before
    fingerprints_match(ready.db, model)
    # Nothing changed since: nothing is rescored, and the table is still a full score's.
    output = run(ready.dir, ready.db, "score", model, "--incremental")
    assert "rescored 0 new or changed of " in output
    assert table(ready.db, model) == after


def edit_count(db: Path) -> list[tuple[Any, ...]]:
    """Rows of the relation that main.snapshot lacks (new key, or a feature not the same)."""
    same = " and ".join(f"s.{c} is not distinct from r.{c}" for c in FEATURES)
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"select count(*) from {RELATION} r where not exists (select 1 "
                           f"from main.snapshot s where s.loan_id = r.loan_id and {same})"
                           ).fetchall()
    finally:
        con.close()


def test_a_new_champion_a_full_score_or_a_retyped_key_falls_back(ready: Loans) -> None:
    edit(ready.db, "update ml.models set status = 'retired' where model_name = ?", [MODEL])
    # v1 wrote the table; a table of another version is never updated in place.
    edit(ready.db, f"update {PREDICTIONS} set model_version = 7")
    edit(ready.db, f"update {FINGERPRINTS} set model_version = 7")
    edit(ready.db, "update ml.models set status = 'champion' where model_name = ?", [MODEL])
    output = run(ready.dir, ready.db, "score", MODEL, "--incremental")
    assert "full score instead of an incremental one: v7 wrote ml.default_risk_predictions; " \
           "v1 scores now" in output
    fingerprints_match(ready.db)
    # A full score drops the fingerprints with the old table, in its transaction.
    run(ready.dir, ready.db, "score", MODEL)
    assert "default_risk_fingerprints" not in str(db_state(ready.db))
    run(ready.dir, ready.db, "score", MODEL, "--incremental")
    # The key's type changed in the dbt model: a full score writes the new type.
    ready.replace_features("select * replace (cast(loan_id as bigint) as loan_id)")
    output = run(ready.dir, ready.db, "score", MODEL, "--incremental")
    assert "full score instead of an incremental one: ml.default_risk_predictions's columns " \
           "differ from a full score's: loan_id BIGINT (was loan_id INTEGER)" in output
    assert table(ready.db) == full_twin(ready.dir, ready.db)
    fingerprints_match(ready.db)


def test_the_spec_key_turns_it_on_and_the_flag_off(ready: Loans) -> None:
    schema = (ready.dir / "models" / "schema.yml").read_text()
    ready.write_schema(schema.replace(EXCLUDE, EXCLUDE + "            score: {incremental: "
                                                        "true}\n", 1))
    edit(ready.db, f"update {RELATION} set income = income + 1 where loan_id < 11")
    output = run(ready.dir, ready.db, "score", MODEL)
    assert "rescored 10 new or changed of 3,000 rows" in output
    output = run(ready.dir, ready.db, "score", MODEL, "--no-incremental")
    assert "rescored" not in output
    assert "default_risk_fingerprints" not in str(db_state(ready.db))


@pytest.mark.parametrize(("args", "yaml", "message"), [
    (("--incremental", "--output", "x.parquet"), "",
     "pyml score --incremental updates ml.<model>_predictions in place and writes no --output "
     "file; drop --output, or score in full with --no-incremental"),
    (("--output", "x.parquet"), "            score: {incremental: true}\n",
     "pyml score --incremental updates ml.<model>_predictions in place and writes no --output "
     "file; drop --output, or score in full with --no-incremental"),
    ((), "            score: {incremental: yes please}\n",
     "score.incremental must be true or false, got 'yes please'"),
])
def test_mistakes_are_one_line_and_change_nothing(ready: Loans, args: tuple[str, ...],
                                                  yaml: str, message: str) -> None:
    if yaml:
        schema = (ready.dir / "models" / "schema.yml").read_text()
        ready.write_schema(schema.replace(EXCLUDE, EXCLUDE + yaml, 1))
    before = db_state(ready.db)
    result = ready.pyml("score", MODEL, *[str(ready.dir / a) if a.endswith(".parquet") else a
                                          for a in args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    lines = [line for line in result.output.strip().splitlines()
             if not line.startswith("Parsing the dbt project")]  # dbt's notice, on stderr
    assert len(lines) == 1
    assert "Traceback" not in result.output
    assert db_state(ready.db) == before
    assert not (ready.dir / "x.parquet").exists()


# --- the property: any edits, then incremental == full --------------------------------------

NUMBERS = st.sampled_from([None, 0.0, -0.0, math.nan, 1.0, 2.5, 1e6, -3.0, 1234.5678])
REGIONS = st.sampled_from([None, "", "north", "south", "unseen", "0"])
TERMS = st.sampled_from([None, 0, 12, 36, 60])
ROWS = st.tuples(st.integers(1, 7), st.integers(0, 6))  # loan_id % m = r
EDIT = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(["amount", "income"]), NUMBERS, ROWS),
    st.tuples(st.just("set"), st.just("region"), REGIONS, ROWS),
    st.tuples(st.just("set"), st.just("term_months"), TERMS, ROWS),
    st.tuples(st.just("delete"), st.none(), st.none(), ROWS),
    st.tuples(st.just("insert"), st.none(), st.none(), ROWS),
    st.tuples(st.just("retype"), st.sampled_from(["amount", "term_months"]),
              st.sampled_from(["float", "double", "decimal(18,3)", "bigint"]), st.none()),
)


def apply_edit(db: Path, step: tuple[Any, ...], round_: int) -> None:
    kind, column, value, rows = step
    where = f"loan_id % {rows[0]} = {rows[1] % rows[0]}" if rows else ""
    if kind == "set":
        edit(db, f"update {RELATION} set {column} = ? where {where}", [value])
    elif kind == "delete":
        edit(db, f"delete from {RELATION} where {where} and loan_id % 5 = 0")
    elif kind == "insert":
        edit(db, f"insert into {RELATION} select * replace (loan_id + ? as loan_id) "
                 f"from {RELATION} where {where} and loan_id < 3000 and loan_id % 9 = 0",
             [(round_ + 1) * 10_000])
    else:  # a dbt model that now casts the column otherwise (values that fit the type)
        cast = (f"try_cast(case when isnan({column}::double) then null else {column} end "
                f"as {value})")
        edit(db, f"create or replace table {RELATION} as select * replace ({cast} as "
                 f"{column}) from {RELATION}")


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(model=st.sampled_from(SPECS), rounds=st.lists(st.lists(EDIT, max_size=4),
                                                     min_size=1, max_size=2))
def test_incremental_equals_full_after_any_edits(ready: Loans, tmp_path: Path, model: str,
                                                 rounds: list[list[tuple[Any, ...]]]) -> None:
    db = tmp_path / "work" / crash.DB_NAME
    crash.copy_db(ready.db, db)
    for i, steps in enumerate(rounds):
        for step in steps:
            apply_edit(db, step, i)
        run(ready.dir, db, "score", model, "--incremental")
        fingerprints_match(db, model)
    assert table(db, model) == full_twin(ready.dir, db, model)


# --- SIGKILL ----------------------------------------------------------------------------------

_CHILD = """\
import os, signal, sys
import {module} as module
real = module.{func}

def die(*args, **kwargs):
    if {before!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return result

module.{func} = die
from pyml.cli import cli
cli({args!r}, prog_name="pyml")
"""


@pytest.mark.parametrize(("module", "func", "before", "outcome"), [
    ("pyml.store.fingerprints", "merge", False, "old"),  # half-merged, not committed
    ("pyml.store.writer", "_swap", True, "old"),  # the commit not reached
    ("pyml.store.writer", "_swap", False, "new"),  # just committed
])
def test_sigkill_around_the_merge_leaves_the_old_or_the_new_table(
        ready: Loans, tmp_path: Path, module: str, func: str, before: bool,
        outcome: str) -> None:
    edit(ready.db, f"update {RELATION} set amount = amount * 3 where loan_id % 7 = 0")
    edit(ready.db, f"delete from {RELATION} where loan_id % 11 = 0")
    old = table(ready.db)
    clean = tmp_path / "clean" / crash.DB_NAME
    crash.copy_db(ready.db, clean)
    run(ready.dir, clean, "score", MODEL, "--incremental", "--batch-size", "10")
    new = table(clean)
    assert new != old
    db = tmp_path / "killed" / crash.DB_NAME
    crash.copy_db(ready.db, db)
    code = _CHILD.format(module=module, func=func, before=before,
                         args=crash.pyml_argv(ready.dir, "score", MODEL, "--incremental",
                                              "--batch-size", "10")[1:])
    env = {**crash.env_for(db), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert table(db) == {"old": old, "new": new}[outcome]
    fingerprints_match(db, scored=outcome == "new")
    problems: list[str] = []
    con = duckdb.connect(str(db))
    try:
        crash.check_no_temp_tables(con, problems)
    finally:
        con.close()
    assert problems == []
    # The next incremental score finishes the job: a full score's table.
    run(ready.dir, db, "score", MODEL, "--incremental")
    assert table(db) == new

