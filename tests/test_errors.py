"""Bad inputs through the CLI: exit code 1, one exact line, no traceback, nothing changed.

Each test breaks one thing in its own copy of the lending project and checks the message
names what is wrong and what to do, and that the registry and the predictions tables are
exactly as they were.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import pyml
from pyml.cli import cli
from pyml.errors import SchemaMismatch

from .conftest import SCHEMA_YML, Loans

WHERE = "models/schema.yml: model 'default_risk' on model.loans.loan_features"
ML_TABLES = ("models", "metrics", "feature_importance", "default_risk_predictions",
             "grade_predictions", "loss_amount_predictions")


def fails(loans: Loans, args: list[str], message: str) -> Result:
    """Run pyml, expect exit 1 with exactly `Error: message` on one line and no traceback."""
    result = loans.pyml(*args)
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: {message}"], result.output
    return result


def snapshot(loans: Loans) -> dict[str, tuple[int, int]]:
    """(row count, order-free hash of all rows) of every table in the ml schema."""
    tables = [t for (t,) in loans.sql("select table_name from information_schema.tables "
                                      "where table_schema = 'ml' order by 1")]
    return {t: tuple(loans.sql(f'select count(*), coalesce(sum(hash(t)), 0) from ml."{t}" t'
                               )[0])
            for t in tables}


# --- selection and specs ------------------------------------------------------------------

def test_unknown_model_name(scored: Loans) -> None:
    before = snapshot(scored)
    message = "no pyml model named 'default'; declared models: default_risk, grade, loss_amount"
    fails(scored, ["train", "default"], message)
    fails(scored, ["score", "grade", "default"], message)
    assert snapshot(scored) == before


def test_select_matching_no_spec(loans: Loans) -> None:
    fails(loans, ["train", "--select", "raw_loans"],
          "--select raw_loans matched no dbt model that declares a pyml spec")


def test_spec_with_unknown_key(scored: Loans) -> None:
    before = snapshot(scored)
    scored.write_schema(SCHEMA_YML.replace("target: defaulted", "targt: defaulted"))
    fails(scored, ["train"],
          f"{WHERE}: unknown key 'targt'; allowed keys are name, description, task, target, "
          "key, features, exclude, split, params, num_boost_round, early_stopping_rounds, "
          "threshold, positive_class, score, tune, promote, allow_leakage, drift_threshold, "
          "max_memory")
    assert snapshot(scored) == before


def test_spec_missing_required_key(loans: Loans) -> None:
    loans.write_schema(SCHEMA_YML.replace("            key: loan_id\n", "", 1))
    fails(loans, ["score", "grade"],
          f"{WHERE}: missing required key 'key' (id column(s) carried into the predictions)")


def test_duplicate_model_name(loans: Loans) -> None:
    loans.write_schema(SCHEMA_YML.replace("name: grade", "name: default_risk"))
    fails(loans, ["train"],
          f"{WHERE}: model name 'default_risk' is already declared in {WHERE}; model names "
          "must be unique")


def test_invalid_yaml_is_reported_by_dbt(loans: Loans) -> None:
    loans.write_schema(SCHEMA_YML + "  - name: [unclosed\n")
    result = loans.pyml("train")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("Error: ")]
    assert line.startswith("Error: `dbt parse` failed: Parsing Error Error reading loans: "
                           "schema.yml - Runtime Error Syntax error near line 26")
    assert "  " not in line


def test_xgboost_rejects_params(scored: Loans) -> None:
    before = snapshot(scored)
    scored.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n            params: {max_depth: -1}\n", 1))
    result = scored.pyml("train", "default_risk")
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("Error: ")]
    assert line.startswith(f"Error: {WHERE}: XGBoost rejected the training parameters: ")
    assert line.endswith("; fix `params` in the spec")
    assert snapshot(scored) == before


def test_positive_class_not_a_target_value(loans: Loans) -> None:
    loans.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n            positive_class: 'yes'\n", 1))
    fails(loans, ["train", "default_risk"],
          f"{WHERE}: positive_class 'yes' is not a value of the target (values: [False, True])")
    assert snapshot(loans) == {}


def test_no_specs_declared(loans: Loans) -> None:
    loans.write_schema("version: 2\nmodels:\n  - name: loan_features\n")
    fails(loans, ["train"],
          f"no pyml models are declared in {loans.dir}: add a `config: meta: pyml:` spec to a "
          "feature model's YAML (see README)")


def test_score_relation_unknown(scored: Loans) -> None:
    before = snapshot(scored)
    scored.write_schema(SCHEMA_YML.replace(
        "            exclude: [defaulted, loss]\n",
        "            exclude: [defaulted, loss]\n            score: {relation: loans_2025}\n"))
    fails(scored, ["score", "grade"],
          f"{WHERE.replace('default_risk', 'grade')}: score.relation 'loans_2025' is neither a "
          "dbt model in this project nor schema.table; name a model that `dbt ls` lists, or "
          "write schema.table")
    assert snapshot(scored) == before


# --- the relation and its rows ------------------------------------------------------------

def test_target_column_missing(scored: Loans) -> None:
    before = snapshot(scored)
    scored.write_schema(SCHEMA_YML.replace("target: defaulted", "target: is_defaulted"))
    fails(scored, ["train", "default_risk"],
          f"{WHERE}: target column 'is_defaulted' is not in main.loan_features; columns are: "
          "loan_id, region, amount, income, term_months, grade, defaulted, loss")
    assert snapshot(scored) == before


def test_feature_missing_at_score_time(scored: Loans) -> None:
    before = snapshot(scored)
    scored.replace_features("select * exclude (income)")
    fails(scored, ["score", "default_risk"],
          "model 'default_risk' v1: feature 'income' is missing from main.loan_features; add it "
          "back to the dbt model or retrain the model without it")
    assert snapshot(scored) == before
    with pytest.raises(SchemaMismatch):
        pyml.score(["default_risk"], project_dir=scored.dir, profiles_dir=scored.dir)


def test_feature_type_changed(scored: Loans) -> None:
    before = snapshot(scored)
    scored.replace_features("select * replace (cast(amount as varchar) as amount)")
    fails(scored, ["score", "loss_amount"],
          "model 'loss_amount' v1: feature 'amount' was DOUBLE (numeric) at training but is "
          "VARCHAR in main.loan_features; cast it back in the dbt model or retrain")
    assert snapshot(scored) == before


def test_relation_not_built(scored: Loans) -> None:
    before = snapshot(scored)
    scored.sql("drop table main.loan_features")
    message = ("relation main.loan_features does not exist in the database: build it with "
               "`dbt build --select loan_features` first")
    fails(scored, ["train", "grade"], message)
    fails(scored, ["score", "grade"], message)
    assert snapshot(scored) == before


def test_empty_relation(scored: Loans) -> None:
    before = snapshot(scored)
    scored.sql("delete from main.loan_features")
    fails(scored, ["train", "default_risk"],
          f"{WHERE}: main.loan_features is empty; nothing to train on (did `dbt build` run?)")
    fails(scored, ["score", "default_risk"],
          "model 'default_risk' v1: main.loan_features is empty; nothing to score "
          "(did `dbt build` run?)")
    assert snapshot(scored) == before


def test_target_all_null(loans: Loans) -> None:
    loans.sql("update main.loan_features set loss = null")
    fails(loans, ["train", "loss_amount"],
          "models/schema.yml: model 'loss_amount' on model.loans.loan_features: "
          "main.loan_features has no rows with a non-NULL 'loss'; nothing to train on "
          "(did `dbt build` run?)")


def test_target_with_one_class(scored: Loans) -> None:
    before = snapshot(scored)
    scored.sql("update main.loan_features set defaulted = true")
    fails(scored, ["train", "default_risk"],
          f"{WHERE}: target 'defaulted' has only one class (True) among labelled rows; "
          "a binary model needs at least two")
    assert snapshot(scored) == before


def test_infinite_feature_value(scored: Loans) -> None:
    before = snapshot(scored)
    scored.sql("update main.loan_features set income = 'inf'::double where loan_id in (5, 9)")
    fails(scored, ["train", "default_risk"],
          f"{WHERE}: feature 'income' has 2 infinite or out-of-range values (|x| > 3.4e+38); "
          "clean them in the dbt model (e.g. NULL them) and retry")
    fails(scored, ["score", "default_risk"],
          "model 'default_risk': feature 'income' has 2 infinite or out-of-range values "
          "(|x| > 3.4e+38); clean them in the dbt model (e.g. NULL them) and retry")
    assert snapshot(scored) == before


def test_null_key_in_scored_relation(scored: Loans) -> None:
    before = snapshot(scored)
    scored.sql("update main.loan_features set loan_id = null where loan_id in (4, 8)")
    fails(scored, ["score", "grade"],
          "model 'grade' v1: main.loan_features has 2 rows with a NULL key (loan_id); filter "
          "or fill them in the dbt model")
    assert snapshot(scored) == before


def test_duplicate_keys_in_scored_relation(scored: Loans) -> None:
    before = snapshot(scored)
    scored.sql("insert into main.loan_features select * from main.loan_features "
               "where loan_id <= 3")
    fails(scored, ["score", "grade"],
          "model 'grade' v1: main.loan_features has 3 duplicate keys (loan_id); make the key "
          "unique in the dbt model")
    assert snapshot(scored) == before


# --- the database -------------------------------------------------------------------------

def test_database_file_missing(loans: Loans) -> None:
    loans.db.unlink()
    message = (f"database file {loans.db} does not exist: run `dbt build` first, or check the "
               "path in your dbt profile (--profiles-dir / --target)")
    fails(loans, ["train"], message)
    fails(loans, ["models"], message)
    assert not loans.db.exists()


def test_database_file_not_duckdb(loans: Loans) -> None:
    loans.db.write_bytes(b"this is not a database" * 100)
    fails(loans, ["score"],
          f"{loans.db} is not a DuckDB database file: fix the path in your dbt profile")


HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("create table if not exists main.held (x integer)")
print("locked", flush=True)
time.sleep(60)
"""


def test_database_locked_by_another_process(scored: Loans) -> None:
    before = snapshot(scored)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(scored.db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        message = (f"database {scored.db} is locked by another process (PID {holder.pid}): "
                   "close the other DuckDB client (dbt, a notebook, a BI tool, another pyml) "
                   "and retry")
        fails(scored, ["score", "default_risk", "--lock-timeout", "0.5"], message)
        fails(scored, ["train", "grade", "--lock-timeout", "0.2"], message)
    finally:
        holder.kill()
        holder.wait()
    assert {k: v for k, v in snapshot(scored).items() if k != "held"} == before


# --- dbt project, profile and manifest ----------------------------------------------------

def test_profile_target_missing(loans: Loans) -> None:
    fails(loans, ["train", "--target", "nope"],
          f"target 'nope' is not in profile 'loans' ({loans.dir / 'profiles.yml'}); available "
          "targets: dev")


def test_no_dbt_project(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "--project-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == (f"Error: no dbt_project.yml in {tmp_path}: pass --project-dir "
                             "pointing at your dbt project\n")


def test_corrupt_manifest(loans: Loans) -> None:
    manifest = loans.dir / "target" / "manifest.json"
    manifest.write_text("{not json")
    fails(loans, ["train"],
          f"cannot read the dbt manifest {manifest}: Expecting property name enclosed in double "
          "quotes: line 1 column 2 (char 1); delete it and rerun (pyml runs `dbt parse` to "
          "rebuild it)")
    manifest.write_text("[]")
    fails(loans, ["train"],
          f"{manifest} is not a dbt manifest; delete it and rerun (pyml runs `dbt parse` to "
          "rebuild it)")


def test_stale_manifest_is_rebuilt(loans: Loans) -> None:
    (loans.dir / "target" / "manifest.json").unlink()
    result = loans.ok("train", "grade")
    assert "Parsing the dbt project in" in result.output
    assert loans.sql("select model_name from ml.models") == [("grade",)]


# --- the registry -------------------------------------------------------------------------

def test_corrupt_booster_blob(scored: Loans) -> None:
    scored.sql("update ml.models set booster = 'not a model'::blob "
               "where model_name = 'default_risk'")
    before = snapshot(scored)
    fails(scored, ["score", "default_risk"],
          "model 'default_risk' version 1: the stored booster is not a valid XGBoost ubj "
          "model; retrain it with `pyml train default_risk`")
    assert snapshot(scored) == before


def test_unknown_booster_format(scored: Loans) -> None:
    scored.sql("update ml.models set booster_format = 'pickle' where model_name = 'grade'")
    before = snapshot(scored)
    fails(scored, ["score", "grade"],
          "model 'grade' version 1 has booster format 'pickle'; pyml loads only XGBoost "
          "ubj/json models: retrain it")
    assert snapshot(scored) == before


def test_score_before_any_train(loans: Loans) -> None:
    fails(loans, ["score", "grade"],
          "no model 'grade' has been trained in this database: run `pyml train grade` first")
    fails(loans, ["predictions", "grade"],
          "ml.grade_predictions does not exist: run `pyml score grade`")


def test_score_a_model_not_trained_yet(loans: Loans) -> None:
    loans.ok("train", "default_risk")
    before = snapshot(loans)
    fails(loans, ["score", "grade"],
          "model 'grade' has not been trained yet: run `pyml train grade` first")
    assert snapshot(loans) == before


def test_score_a_missing_version(scored: Loans) -> None:
    before = snapshot(scored)
    fails(scored, ["score", "grade", "--version", "7"],
          "model 'grade' has no version 7: `pyml models` lists the versions")
    assert snapshot(scored) == before


# --- output files -------------------------------------------------------------------------

def test_output_needs_one_model_and_a_known_suffix(scored: Loans, tmp_path: Path) -> None:
    before = snapshot(scored)
    fails(scored, ["score", "--output", str(tmp_path / "all.parquet")],
          "an output file holds one model's predictions: select a single model to score")
    fails(scored, ["score", "grade", "--output", str(tmp_path / "grade.xlsx")],
          f"output file {tmp_path / 'grade.xlsx'}: use a .parquet or .csv file name")
    missing = tmp_path / "nowhere" / "grade.csv"
    fails(scored, ["score", "grade", "--output", str(missing)],
          f"output file {missing}: folder {missing.parent} does not exist")
    # The folder is checked before scoring: the predictions table was not replaced.
    assert snapshot(scored) == before
