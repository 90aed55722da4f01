"""The `ml` schema documents itself (a comment on every table and column pyml creates), and
`pyml report` only reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb

from pyml.store.schema import headline_sql
from pyml.store.trials import trials

from .conftest import Loans
from .support import db_state


def _uncommented(loans: Loans) -> tuple[list[Any], list[Any]]:
    """(ml tables without a comment, ml columns without a comment)."""
    tables = loans.sql("select table_name from duckdb_tables() where schema_name = 'ml' "
                       "and (comment is null or comment = '') order by 1")
    columns = loans.sql("select table_name, column_name from duckdb_columns() "
                        "where schema_name = 'ml' and (comment is null or comment = '') "
                        "order by 1, 2")
    return tables, columns


def test_every_ml_table_and_column_has_a_comment(scored: Loans) -> None:
    # scored: all three tasks trained and scored; then every other verb that writes to ml.
    scored.ok("explain", "default_risk")
    scored.ok("explain", "grade")
    scored.ok("drift", "default_risk")
    scored.ok("profile", "default_risk")
    scored.ok("tune", "loss_amount", "--n-trials", "2")
    tables = {t for (t,) in scored.sql("select table_name from duckdb_tables() "
                                       "where schema_name = 'ml'")}
    assert tables >= {"models", "metrics", "feature_importance", "model_events", "calibration",
                      "lift", "curves", "training_snapshots", "drift", "trials",
                      "default_risk_predictions", "grade_predictions",
                      "loss_amount_predictions", "default_risk_explanations",
                      "grade_explanations", "profile_loan_features"}
    assert _uncommented(scored) == ([], [])


def test_a_registry_from_before_comments_gains_them(scored: Loans) -> None:
    scored.sql("comment on table ml.models is null")
    scored.sql("comment on column ml.metrics.ci_low is null")
    scored.sql("alter table ml.metrics drop column std")  # as before intervals existed
    assert _uncommented(scored)[0] == [("models",)]
    scored.ok("train", "grade", "--force")
    assert _uncommented(scored) == ([], [])
    assert scored.sql("select count(*) from duckdb_columns() where schema_name = 'ml' and "
                      "table_name = 'metrics' and column_name = 'std'") == [(1,)]


def test_report_changes_nothing_in_the_database(scored: Loans, tmp_path: Path) -> None:
    # No drift check and no profile stored yet: the report computes both for the page and
    # still writes nothing (before, it ran DDL and stored them).
    before = db_state(scored.db)
    out = tmp_path / "r.html"
    scored.ok("report", "default_risk", "--output", str(out))
    assert "PSI per feature" in out.read_text() and "Data profile" in out.read_text()
    assert db_state(scored.db) == before
    # A stored drift check and profile are read, not recomputed.
    scored.ok("drift", "default_risk")
    scored.ok("profile", "default_risk")
    before = db_state(scored.db)
    scored.ok("report", "default_risk", "--output", str(out))
    assert db_state(scored.db) == before


def test_report_runs_while_another_process_reads_the_database(scored: Loans, tmp_path: Path
                                                               ) -> None:
    # Read-only openers share a file: a reader in another process (a BI tool, a notebook)
    # no longer blocks `pyml report`, which used to open the file for writing.
    code = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=True); "
            "print('ready', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(scored.db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        scored.ok("report", "grade", "--output", str(tmp_path / "g.html"))
    finally:
        holder.kill()
        holder.wait()


def test_headline_metric_sql_and_trials_of_a_model_never_tuned(scored: Loans) -> None:
    con = duckdb.connect(str(scored.db), read_only=True)
    try:
        assert con.execute(f"select {headline_sql('t')} from (values ('binary'), "
                           "('multiclass'), ('regression')) v(t)").fetchall() == [
            ("auc",), ("log_loss",), ("rmse",)]
        assert trials(con, "default_risk") == []
    finally:
        con.close()
    # A registry from before tuning existed: no ml.trials at all (before: a Catalog Error).
    scored.sql("drop table ml.trials")
    con = duckdb.connect(str(scored.db), read_only=True)
    try:
        assert trials(con, "default_risk") == []
    finally:
        con.close()
