"""BI tools beside pyml: `pyml publish` and a real BI client (SQLAlchemy + duckdb-engine).

A BI tool keeps a pool of connections open. On the main file that would lock dbt and pyml
out (tests/test_concurrency.py); on the BI file that `pyml publish` writes it never does:
each table is a Parquet file replaced by a rename, and the BI file (views over them) is
itself written new and renamed. These tests hold such a pool open and read while dbt and
pyml write, and check what docs/reliability.md promises: no failed query, no failed
command, every read one whole published table, the new rows on an open connection's next
query, and SQLAlchemy's introspection on every published table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import DB_ENV, N_LOANS, Loans, dbt
from .support import error_line

sa = pytest.importorskip("sqlalchemy")
pytest.importorskip("duckdb_engine")

PYML = str(Path(sys.executable).parent / "pyml")
PREDICTIONS = ("default_risk_predictions", "loss_amount_predictions", "grade_predictions")
PUBLISH_VARS = "\nvars:\n  pyml:\n    publish:\n      relations: [loan_features]\n"


def bi_path(project: Loans) -> Path:
    return project.db.with_name("loans_bi.duckdb")


def configure(project: Loans, text: str = PUBLISH_VARS) -> None:
    """Turn publishing on in dbt_project.yml (a newer file: pyml re-parses)."""
    path = project.dir / "dbt_project.yml"
    path.write_text(path.read_text() + text)


def engine(path: Path, **pool: Any) -> Any:
    """What Superset or a notebook builds: duckdb-engine, read-only, a connection pool."""
    return sa.create_engine(f"duckdb:///{path}", connect_args={"read_only": True}, **pool)


def bi_sql(path: Path, query: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_publish_copies_predictions_and_relations_whole_with_comments(scored: Loans) -> None:
    result = scored.ok("publish", "--relation", "loan_features")
    bi = bi_path(scored)
    assert result.output.startswith(f"published 4 tables ({4 * N_LOANS:,} rows) to {bi}")
    views = bi_sql(bi, "select schema_name, view_name, comment from duckdb_views() "
                       "where not internal order by all")
    assert [(s, v) for s, v, _ in views] == sorted(
        [("main", "loan_features")] + [("ml", t) for t in PREDICTIONS])
    for schema, view, comment in views:
        main = scored.sql(f"select * from {schema}.{view} order by all")
        assert bi_sql(bi, f"select * from {schema}.{view} order by all") == main
        if schema == "ml":  # pyml's comments travel with the table
            assert comment
            assert scored.sql("select comment from duckdb_columns() where schema_name = 'ml' "
                              f"and table_name = '{view}' and column_name = 'model_version'"
                              ) == bi_sql(bi, "select comment from duckdb_columns() where "
                                              f"table_name = '{view}' and column_name = "
                                              "'model_version'")
    # A BI client's introspection works on every published table.
    import pandas as pd

    with engine(bi).connect() as con:
        inspector = sa.inspect(con)
        for schema, view, _ in views:
            columns = [c["name"] for c in inspector.get_columns(view, schema=schema)]
            frame = pd.read_sql_table(view, con, schema=schema)
            assert list(frame.columns) == columns and len(frame) == N_LOANS


def test_publish_mistakes_say_what_and_change_nothing(scored: Loans) -> None:
    scored.ok("publish")
    bi = bi_path(scored)
    before = (bi.read_bytes(), sorted(p.name for p in bi.with_name("loans_bi_tables").iterdir()))
    cases = [
        (("publish", "--relation", "no_such_model"),
         "cannot publish 'no_such_model': it is neither a dbt model of this project "
         "nor schema.table; name a model that `dbt ls` lists, or write schema.table"),
        (("publish", "--relation", "main.nothing_here"),
         f"cannot publish main.nothing_here: no such table or view in {scored.db}; "
         "run dbt build (models) or pyml score (predictions) first, or fix the name"),
        (("publish", "nope"), "no pyml model named 'nope'; declared models: "
                              "default_risk, grade, loss_amount"),
        (("publish", "--path", str(scored.dir / "models")),
         f"Invalid value for '--path': File '{scored.dir / 'models'}' is a directory."),
        (("publish", "--path", str(scored.db)),
         f"cannot publish to {scored.db}: it is the target's own DuckDB file; choose another "
         "path (default: loans_bi.duckdb)"),
        (("publish", "--path", str(scored.dir / "profiles.yml")),
         f"cannot publish to {scored.dir / 'profiles.yml'}: the file exists and pyml did not "
         "write it (no profiles_tables/ beside it); choose another path or remove the file"),
        (("publish", "--path", str(scored.dir / "dbt_project.yml" / "bi.duckdb")),
         f"cannot create {scored.dir / 'dbt_project.yml' / 'bi_tables'}: Not a directory; "
         "choose another publish path"),
    ]
    for args, message in cases:
        result = scored.pyml(*args)
        assert error_line(result.output, result.exit_code) == message
    scored.sql("drop table ml.grade_predictions")
    result = scored.pyml("publish", "grade")
    assert error_line(result.output, result.exit_code) == (
        "grade has no predictions to publish (ml.grade_predictions is missing); run "
        "`pyml score grade` first")
    configure(scored, "\nvars:\n  pyml:\n    publish:\n      relatons: [x]\n")
    result = scored.pyml("publish")
    assert error_line(result.output, result.exit_code) == (
        f"{scored.dir / 'dbt_project.yml'}: vars: pyml: publish has unknown key "
        "relatons; the keys are path, relations")
    after = (bi.read_bytes(), sorted(p.name for p in bi.with_name("loans_bi_tables").iterdir()))
    assert after == before


def test_score_republishes_and_an_open_connection_reads_the_new_rows(scored: Loans) -> None:
    configure(scored, PUBLISH_VARS.replace("[loan_features]", "[loan_features, main.later]"))
    scored.ok("publish", "--relation", "loan_features")
    bi = bi_path(scored)
    pool = engine(bi, pool_size=2)
    query = sa.text("select count(*), min(scored_at), count(distinct scored_at) "
                    "from ml.default_risk_predictions")
    with pool.connect() as held:  # open across the score, as a BI tool's pool keeps it
        first = held.execute(query).one()
        result = scored.ok("score", "default_risk")
        assert f"published 4 tables ({4 * N_LOANS:,} rows) to {bi}" in result.output
        # A listed mart not built yet is skipped with a line, not a failed score.
        assert ("not published: main.later does not exist yet (build it, then `pyml "
                "publish`)") in result.output
        second = held.execute(query).one()
    assert first[0] == second[0] == N_LOANS and first[2] == second[2] == 1
    assert second[1] > first[1]  # the new table, read through the connection held open
    assert second[1] == scored.sql("select min(scored_at) from ml.default_risk_predictions"
                                   )[0][0]
    pool.dispose()


# --- a BI client's pool open while dbt and pyml write ------------------------------------

@dataclass
class Reader:
    """A BI dashboard: a pool of read-only connections on the BI file, kept open, querying
    every published table in a thread; records every answer and every failure."""

    path: Path
    tables: tuple[str, ...]
    reads: list[tuple[str, int, int, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    introspected: int = 0  # get_columns calls that answered

    def run(self) -> None:
        pool = engine(self.path, pool_size=3, max_overflow=0)
        held = [pool.connect() for _ in range(2)]  # idle pooled connections, never closed
        try:
            while not self.stop.is_set():
                for table in self.tables:
                    try:
                        with pool.connect() as con:
                            rows, versions, version = con.execute(sa.text(
                                f"select count(*), count(distinct model_version), "
                                f"max(model_version) from {table}")).one()
                            self.reads.append((table, rows, versions, version))
                            if len(self.reads) % 20 == 0:  # what a BI tool's schema browser does
                                schema, name = table.split(".")
                                assert sa.inspect(con).get_columns(name, schema=schema)
                                self.introspected += 1
                    except Exception as e:  # a BI tool would show this to its user
                        self.failures.append(f"{table}: {type(e).__name__}: {e}")
                time.sleep(0.01)
        finally:
            for con in held:
                con.close()
            pool.dispose()


def run(project: Loans, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, DB_ENV: str(project.db)}
    return subprocess.run([PYML, *args, "--project-dir", str(project.dir), "--profiles-dir",
                           str(project.dir), "--lock-timeout", "120"], env=env,
                          capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_a_bi_pool_reads_throughout_dbt_build_train_score_and_promote(scored: Loans) -> None:
    configure(scored)
    scored.ok("publish")
    tables = tuple(f"ml.{t}" for t in PREDICTIONS)
    reader = Reader(bi_path(scored), tables)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    outputs = []
    try:
        dbt(scored.dir, "build")
        # --force retrains v1's twin as v2, which stays challenger; promote makes it the
        # champion and rescores; rollback brings v1 back and rescores.
        for args in (("train", "default_risk", "--force"), ("score",),
                     ("promote", "default_risk", "--version", "2", "--score"),
                     ("rollback", "default_risk", "--score")):
            done = run(scored, *args)
            assert done.returncode == 0, done.stdout + done.stderr
            outputs.append(done.stderr)
        time.sleep(0.2)  # a few more reads of the final tables
    finally:
        reader.stop.set()
        thread.join(60)
    assert reader.failures == []
    assert len(reader.reads) > 3 * len(tables) and reader.introspected > 0
    # Every read saw one whole table written by one model version.
    assert {(rows, versions) for _, rows, versions, _ in reader.reads} == {(N_LOANS, 1)}
    # The pool's connections read the last publish: default_risk scored by v1 again.
    last = [v for t, _, _, v in reader.reads if t == "ml.default_risk_predictions"][-1]
    assert last == 1
    assert any(v == 2 for t, _, _, v in reader.reads if t == "ml.default_risk_predictions")
    assert all("published 4 tables" in out for out in outputs), outputs


# --- pyml train lets go of the main file while XGBoost fits ------------------------------

SLOW_FIT = """\
            num_boost_round: 300
            early_stopping_rounds: null
"""


def test_train_lets_go_of_the_file_while_it_fits(scored: Loans) -> None:
    """Another process opens the main file read-write while `pyml train` fits: the version
    is not stored yet when it gets in (before this, the file was free only after the write)."""
    from .test_concurrency import start_pyml

    schema = (scored.dir / "models" / "schema.yml").read_text()
    entry = "            exclude: [loss, grade]\n"
    scored.write_schema(schema.replace(entry, entry + SLOW_FIT, 1))
    count = "select count(*) from ml.models where model_name = 'default_risk'"
    before = scored.sql(count)[0][0]
    train = start_pyml(scored, "train", "default_risk", "--lock-timeout", "120")
    deadline = time.monotonic() + 120
    while not any("labelled rows" in line for _, line in train.lines):  # it has the file
        assert train.popen.poll() is None and time.monotonic() < deadline, train.text()
        time.sleep(0.01)
    while True:  # poll until the file is free: train is fitting (or done, before this fix)
        try:
            con = duckdb.connect(str(scored.db))
            break
        except duckdb.IOException:
            assert time.monotonic() < deadline, train.text()
            time.sleep(0.005)
    try:
        assert con.execute(count).fetchone() == (before,), train.text()
        con.execute("create table main.written_during_the_fit as select 1 as x")
    finally:
        con.close()
    assert train.wait() == 0, train.text()
    assert scored.sql(count)[0][0] == before + 1
    assert "stored version" in train.text()


# --- the BI file equals what was published, whatever the names ---------------------------

NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
               min_size=1, max_size=12)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.dictionaries(
    st.tuples(st.sampled_from(["ml", "main", "Marts x"]), NAME),
    st.integers(min_value=0, max_value=40), min_size=1, max_size=3), min_size=1, max_size=3))
def test_the_bi_file_reads_exactly_the_last_publish(tmp_path: Path,
                                                    rounds: list[dict[tuple[str, str], int]]
                                                    ) -> None:
    """Any table names (quotes, dots, slashes, other scripts), any sequence of publishes:
    the BI file lists exactly the last publish's tables, each with its rows and comment,
    and no Parquet file of an earlier one is left."""
    from pyml.engines.duckdb import qualified, quote
    from pyml.store.publish import publish, tables_folder

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    db, bi = folder / "main.duckdb", folder / "main_bi.duckdb"
    con = duckdb.connect(str(db))
    try:
        for number, tables in enumerate(rounds):
            for (schema, name), rows in tables.items():
                target = qualified(schema, name)
                con.execute(f"create schema if not exists {quote(schema)}")
                con.execute(f"create or replace table {target} as select range as k, "
                            f"{number} as round from range({rows})")
                text = f"{name} 'round' {number}".replace("'", "''")
                con.execute(f"comment on table {target} is '{text}'")
            publish(con, list(tables), bi)
            views = bi_sql(bi, "select schema_name, view_name, comment from duckdb_views() "
                               "where not internal")
            assert sorted((s, v) for s, v, _ in views) == sorted(tables)
            for schema, name, comment in views:
                rows = bi_sql(bi, f"select k, round from {qualified(schema, name)} order by k")
                assert rows == [(k, number) for k in range(tables[(schema, name)])]
                assert comment == f"{name} 'round' {number}"
            assert len(list(tables_folder(bi).iterdir())) == len(tables)
    finally:
        con.close()


def test_a_failed_publish_after_score_says_the_scores_are_written(scored: Loans) -> None:
    scored.ok("publish")
    bi = bi_path(scored)
    before = bi.read_bytes()
    configure(scored, "\nvars:\n  pyml:\n    publish:\n      relations: [lone_features]\n")
    scored_at = "select min(scored_at) from ml.default_risk_predictions"
    old = scored.sql(scored_at)
    result = scored.pyml("score", "default_risk")
    assert error_line(result.output, result.exit_code) == (
        "scored default_risk, but publishing failed (the BI file is unchanged; `pyml "
        "publish` retries): cannot publish 'lone_features': it is neither a dbt model of "
        "this project nor schema.table; name a model that `dbt ls` lists, or write "
        "schema.table")
    assert scored.sql(scored_at) > old  # the scores are written
    assert bi.read_bytes() == before


def test_publish_keeps_128_bit_integers_exact(scored: Loans) -> None:
    """Parquet has no 128-bit integer: DuckDB wrote a HUGEINT (what sum() of integers gives)
    as DOUBLE, so 26,733,000,000,000,001 read back as 2.6733e16 (an audit). Such columns
    go as DECIMAL(38, 0), every digit kept."""
    scored.sql("create table main.totals as select 26733000000000001::hugeint as big_sum, "
               "-12345678901234567890123456789::hugeint as low, 'a' as k")
    scored.ok("publish", "--relation", "main.totals")
    bi = bi_path(scored)
    got = bi_sql(bi, "select big_sum::varchar, low::varchar from main.totals")
    assert got == [("26733000000000001", "-12345678901234567890123456789")]


def test_a_narrower_publish_names_the_tables_it_drops(scored: Loans) -> None:
    """The BI file lists exactly the relations of the last publish: `pyml publish
    default_risk` after a publish of every model dropped the others without a word (an
    audit). The line now names them."""
    scored.ok("publish", "--relation", "main.loan_features")
    out = scored.ok("publish", "default_risk").output
    assert out.strip().endswith("; no longer in it: main.loan_features, ml.grade_predictions, "
                                "ml.loss_amount_predictions"), out
