"""The bad-input catalogue: every way we know to hand pyml something wrong, and what it says.

Each case breaks one thing in its own copy of the lending project (tests/conftest.py) and runs
the real command (CliRunner, or the `pyml` executable where a signal, a permission or a file
size limit has to reach a real process). A CLI case must exit with code 1, print exactly one
`Error:` line (the last line of output) naming the thing and the fix, and show no traceback;
an HTTP case must get a 4xx with a JSON `{"detail": ...}` body. Every case then checks that
every table and view in the DuckDB file (all schemas: row count, an order-free hash of the rows
and the column types) and every project file are exactly as they were.

A few inputs look wrong but are legal (column names with spaces, quotes, unicode or SQL
keywords; NaN features; a class never seen in training): those cases assert that they work.
docs/reliability.md ("Bad inputs") summarises the catalogue.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

import pyml
from pyml.dbt.spec import ALLOWED_KEYS
from pyml.errors import SchemaMismatch
from pyml.serve.app import create_app

from .conftest import DB_ENV, SCHEMA_YML, Loans
from .support import EXCLUDE, WHERE, error_line, state

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

Setup = Callable[[Loans], object]

LOSS = "models/schema.yml: model 'loss_amount' on model.loans.loan_features"
GRADE = "models/schema.yml: model 'grade' on model.loans.loan_features"
COLUMNS = "loan_id, region, amount, income, term_months, grade, defaulted, loss"
RANGE = "infinite or out-of-range values (|x| > 3.4e+38)"
PYML = str(Path(sys.executable).parent / "pyml")
GRADE = WHERE.replace("'default_risk'", "'grade'")  # the multiclass spec's {where}


# --- the expected message ("unchanged" is tests/support.py's state) ------------------------

def same(message: str, expected: str) -> bool:
    """Equality, where each '...' in `expected` stands for any text (a checksum, a path)."""
    first, *middle, last = expected.split("...") if "..." in expected else (expected, None)
    if last is None:
        return message == expected
    if not (message.startswith(first) and message.endswith(last)):
        return False
    at = len(first)
    for piece in middle:
        at = message.find(piece, at)
        if at < 0:
            return False
        at += len(piece)
    return at <= len(message) - len(last)


# --- setups -----------------------------------------------------------------------------------

def nothing(_: Loans) -> None:
    pass


@dataclass(frozen=True)
class Schema:
    """A setup that only rewrites models/schema.yml (pyml then re-parses the project)."""

    text: str  # the whole new file

    def __call__(self, project: Loans) -> None:
        project.write_schema(self.text)


def yaml(old: str, new: str) -> Setup:
    """Replace one piece of models/schema.yml."""
    assert old in SCHEMA_YML, old
    return Schema(SCHEMA_YML.replace(old, new, 1))


def spec(*lines: str) -> Setup:
    """Add keys to the default_risk spec."""
    return yaml(EXCLUDE, EXCLUDE + "".join(f"            {line}\n" for line in lines))


def sql(*statements: str) -> Setup:
    def run(p: Loans) -> None:
        for statement in statements:
            p.sql(statement)
    return run


def features(select: str) -> Setup:
    return lambda p: p.replace_features(select)


def write(rel: str, data: bytes | None) -> Setup:
    """Overwrite (or, with None, delete) a file of the project."""
    def run(p: Loans) -> None:
        path = p.dir / rel
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
    return run


def db_folder(p: Loans) -> None:
    p.db.unlink()
    p.db.mkdir()


def new_unbuilt_model(p: Loans) -> None:
    (p.dir / "models" / "new_loans.sql").write_text("select * from {{ ref('loan_features') }}\n")
    p.write_schema(SCHEMA_YML + "  - name: new_loans\n    config:\n      meta:\n        pyml:\n"
                   "          - name: new_risk\n            task: binary\n"
                   "            target: defaulted\n            key: loan_id\n"
                   "            exclude: [loss, grade]\n")


def a_file(p: Loans) -> None:
    (p.dir / "card.json").write_text("{}")


def only_default_risk_trained(p: Loans) -> None:
    p.ok("train", "default_risk")


@dataclass(frozen=True)
class Case:
    """One bad input: how to break the project, the command, and the exact message."""

    id: str
    setup: Setup
    argv: tuple[str, ...]
    message: str  # the text after `Error: `; <DB>, <DIR> and <KEYS> are filled in
    trained: bool = True  # start from the trained and scored project (else only built)


CASES = [
    # The spec in YAML.
    Case("yaml-syntax-error", Schema(SCHEMA_YML + "  - name: [unclosed\n"),
         ("train",), "`dbt parse` failed: Parsing Error Error reading loans: schema.yml - "
                     "Runtime Error Syntax error near line 26..."),
    Case("yaml-spec-not-a-mapping",
         yaml("          - name: default_risk\n            description: Probability that a "
              "loan defaults.\n            task: binary\n            target: defaulted\n"
              "            key: loan_id\n" + EXCLUDE, "          - default_risk\n"),
         ("train",), "models/schema.yml: model.loans.loan_features meta.pyml[0]: a pyml spec "
                     "must be a mapping with keys name, task, target, key; got str"),
    Case("spec-unknown-key", yaml("target: defaulted", "targt: defaulted"), ("train",),
         f"{WHERE}: unknown key 'targt'; allowed keys are <KEYS>"),
    Case("spec-missing-key", yaml("            key: loan_id\n", ""), ("train",),
         f"{WHERE}: missing required key 'key' (id column(s) carried into the predictions)"),
    Case("spec-threshold-text", spec("threshold: high"), ("train", "default_risk"),
         f"{WHERE}: 'threshold' must be a number, got 'high'"),
    Case("predictions-of-no-model", lambda p: None, ("predictions", "nope"),
         "no pyml model named 'nope' and no ml.nope_predictions; declared models: "
         "default_risk, grade, loss_amount"),
    Case("kfold-from-disk", spec("split: {method: kfold}"),
         ("train", "default_risk", "--external-memory"),
         f"{WHERE}: split.method kfold needs the training set in memory, and "
         "--external-memory trains from disk; use method random or time, or drop "
         "--external-memory"),
    Case("spec-threshold-not-binary", yaml("task: binary", "task: regression\n            "
                                                           "threshold: 0.3"),
         ("train", "default_risk"),
         f"{WHERE}: threshold only applies to task: binary (a regression model predicts "
         "without one); remove it"),
    Case("spec-threshold-out-of-range", spec("threshold: 1.5"), ("score", "default_risk"),
         f"{WHERE}: threshold must be between 0 and 1 (exclusive), got 1.5"),
    Case("spec-features-not-a-list", yaml(EXCLUDE, "            features: {amount: 1}\n"),
         ("train",), f"{WHERE}: 'features' must be a column name or a list of column names"),
    Case("spec-features-and-exclude", spec("features: [amount]"), ("train",),
         f"{WHERE}: give either 'features' or 'exclude', not both"),
    Case("spec-task-unknown", yaml("task: binary", "task: classifier"), ("train",),
         f"{WHERE}: task 'classifier' is not one of binary, multiclass, regression"),
    Case("spec-name-not-an-identifier", yaml("name: default_risk", "name: Default Risk"),
         ("train",), "models/schema.yml: model 'Default Risk' on model.loans.loan_features: "
                     "name 'Default Risk' is not a valid model name; use lower-case letters, "
                     "digits and underscores, starting with a letter (at most 63 characters)"),
    Case("spec-params-not-a-mapping", spec("params: [1, 2]"), ("train",),
         f"{WHERE}: 'params' must be a mapping of XGBoost parameter names to values"),
    Case("spec-params-objective", spec("params: {objective: 'reg:logistic'}"), ("train",),
         f"{WHERE}: params.objective is set by pyml from 'task'; remove it from params"),
    Case("spec-params-rejected-by-xgboost", spec("params: {max_depth: -1}"),
         ("train", "default_risk"),
         f"{WHERE}: XGBoost rejected the training parameters: ...; fix `params` in the "
         "spec"),
    Case("spec-params-misspelt", spec("params: {max_depht: 3, eta: 0.1}"),
         ("train", "default_risk"),
         f"{WHERE}: XGBoost does not use the parameter 'max_depht' (misspelt, or not one of "
         "this booster's); fix `params` in the spec (parameters: "
         "https://xgboost.readthedocs.io/en/stable/parameter.html)"),
    Case("spec-tune-space-misspelt",
         spec("tune: {n_trials: 2, space: {learning_rat: {low: 0.01, high: 0.3}}}"),
         ("tune", "default_risk"),
         f"{WHERE}: XGBoost does not use the parameter 'learning_rat' (misspelt, or not one of "
         "this booster's); fix `params` or tune.space in the spec (parameters: "
         "https://xgboost.readthedocs.io/en/stable/parameter.html)"),
    Case("spec-rounds-text", spec("num_boost_round: many"), ("train",),
         f"{WHERE}: 'num_boost_round' must be an integer, got 'many'"),
    Case("spec-split-method", spec("split: {method: stratified}"), ("train",),
         f"{WHERE}: split.method 'stratified' is not one of random, time, kfold"),
    # Alphabetical order is no time order (found by a docs walk: "test_from starter").
    Case("spec-split-column-text", spec("split: {method: time, column: region}"), ("train",),
         f"{WHERE}: split.column 'region' of main.loan_features is VARCHAR; a time split "
         "orders the rows by it, so it must be a DATE, TIMESTAMP or number column (cast it in "
         "the dbt model)"),
    Case("spec-split-unknown-key", spec("split: {frac: 0.2}"), ("train",),
         f"{WHERE}: unknown key 'split.frac'; allowed: method, test_fraction, "
         "validation_fraction, seed, column, folds"),
    Case("spec-batch-size-zero", spec("score: {batch_size: 0}"), ("score", "default_risk"),
         f"{WHERE}: score.batch_size must be at least 1, got 0"),
    Case("spec-duplicate-name", yaml("name: grade", "name: default_risk"), ("train",),
         f"{WHERE}: model name 'default_risk' is already declared in {WHERE}; model names "
         "must be unique"),
    Case("spec-positive-class-not-a-label", spec("positive_class: 'yes'"),
         ("train", "default_risk"),
         f"{WHERE}: positive_class 'yes' is not a value of the target (values: [False, True])"),
    Case("cli-model-name-unknown", nothing, ("train", "Default Risk"),
         "no pyml model named 'Default Risk'; declared models: default_risk, grade, "
         "loss_amount"),
    Case("cli-model-name-unknown-among-known", nothing, ("score", "grade", "default"),
         "no pyml model named 'default'; declared models: default_risk, grade, loss_amount"),
    Case("cli-select-matches-no-spec", nothing, ("train", "--select", "raw_loans"),
         "--select raw_loans matched no dbt model that declares a pyml spec"),
    Case("spec-none-declared", Schema("version: 2\nmodels:\n  - name: loan_features\n"),
         ("train",), "no pyml models are declared in <DIR>: add a `config: meta: pyml:` spec "
                     "to a feature model's YAML (see README)"),
    # Columns the spec names.
    Case("target-column-missing", yaml("target: defaulted", "target: is_defaulted"),
         ("train", "default_risk"),
         f"{WHERE}: target column 'is_defaulted' is not in main.loan_features; columns are: "
         f"{COLUMNS}"),
    Case("key-column-missing", yaml("key: loan_id", "key: loan"), ("train", "default_risk"),
         f"{WHERE}: key column 'loan' is not in main.loan_features; columns are: {COLUMNS}"),
    Case("feature-column-missing", yaml(EXCLUDE, "            features: [amount, incme]\n"),
         ("train", "default_risk"),
         f"{WHERE}: feature 'incme' is not in main.loan_features; columns are: {COLUMNS}"),
    Case("feature-type-unsupported",
         features("select *, date '2024-01-31' as opened_date"), ("train", "default_risk"),
         f"{WHERE}: column 'opened_date' of main.loan_features has type DATE, which pyml "
         "cannot use as a feature; derive a number or a string from it in SQL, or add it to "
         "'exclude'"),
    # The rows: labels.
    Case("target-all-null", sql("update main.loan_features set loss = null"),
         ("train", "loss_amount"),
         f"{LOSS}: main.loan_features has no rows with a non-NULL 'loss'; nothing to train "
         "on (did `dbt build` run?)"),
    Case("target-one-class", sql("update main.loan_features set defaulted = true"),
         ("train", "default_risk"),
         f"{WHERE}: target 'defaulted' has only one class (True) among labelled rows; a "
         "binary model needs at least two"),
    # Loan 2 falls in the holdout of the seeded split (tests/split_reference.py: part([2], 42,
    # 0.2, 0.2) == 2): its class never reaches the booster, which would then not know it exists.
    Case("target-class-only-outside-the-training-part",
         sql("update main.loan_features set grade = 'D' where loan_id = 2"),
         ("train", "grade"),
         f"{GRADE}: the training part has only 3 of 4 classes; adjust the split or add data"),
    Case("target-nan-class-label",
         features("select * replace (case when loan_id = 5 then 'nan'::double "
                  "else defaulted::int::double end as defaulted)"), ("train", "default_risk"),
         f"{WHERE}: target 'defaulted' has NaN or infinite values; clean them in the dbt "
         "model"),
    Case("target-nan-regression",
         sql("update main.loan_features set loss = 'nan' where loan_id in (5, 9)"),
         ("train", "loss_amount"),
         f"{LOSS}: target 'loss' has 2 NaN, {RANGE}; NULL or clean them in the dbt model"),
    Case("target-infinite-regression",
         sql("update main.loan_features set loss = '-inf' where loan_id = 5"),
         ("train", "loss_amount"),
         f"{LOSS}: target 'loss' has 1 NaN, {RANGE}; NULL or clean them in the dbt model"),
    Case("target-beyond-float32", sql("update main.loan_features set loss = 1e300 "
                                      "where loan_id in (5, 9, 11)"), ("train", "loss_amount"),
         f"{LOSS}: target 'loss' has 3 NaN, {RANGE}; NULL or clean them in the dbt model"),
    # The rows: features.
    Case("feature-infinite-at-train",
         sql("update main.loan_features set income = 'inf' where loan_id in (5, 9)"),
         ("train", "default_risk"),
         f"{WHERE}: feature 'income' has 2 {RANGE}; clean them in the dbt model (e.g. NULL "
         "them) and retry"),
    Case("feature-beyond-float32-at-train",
         sql("update main.loan_features set income = -3.5e38 where loan_id = 9"),
         ("train", "default_risk"),
         f"{WHERE}: feature 'income' has 1 {RANGE}; clean them in the dbt model (e.g. NULL "
         "them) and retry"),
    Case("feature-infinite-at-score",
         sql("update main.loan_features set amount = '-inf' where loan_id = 5"),
         ("score", "default_risk"),
         f"model 'default_risk': feature 'amount' has 1 {RANGE}; clean them in the dbt model "
         "(e.g. NULL them) and retry"),
    Case("feature-huge-at-score",
         sql("update main.loan_features set income = 1e300 where loan_id in (5, 9)"),
         ("score", "default_risk"),
         f"model 'default_risk' v1: feature 'income' has 2 {RANGE}; clean them in the dbt "
         "model (e.g. NULL them) and retry"),
    Case("feature-missing-at-score", features("select * exclude (income)"),
         ("score", "default_risk"),
         "model 'default_risk' v1: feature 'income' is missing from main.loan_features; add "
         "it back to the dbt model or retrain the model without it"),
    Case("feature-number-became-text",
         features("select * replace (cast(amount as varchar) as amount)"),
         ("score", "loss_amount"),
         "model 'loss_amount' v1: feature 'amount' was DOUBLE (numeric) at training but is "
         "VARCHAR in main.loan_features; cast it back in the dbt model or retrain"),
    Case("feature-text-became-number",
         features("select * replace (length(region) as region)"), ("score", "default_risk"),
         "model 'default_risk' v1: feature 'region' was VARCHAR (categorical) at training but "
         "is BIGINT in main.loan_features; cast it back in the dbt model or retrain"),
    Case("key-missing-at-score", features("select * exclude (loan_id)"), ("score", "grade"),
         "model 'grade' v1: key column 'loan_id' is missing from main.loan_features; keys are "
         "carried into the predictions table"),
    # The relation.
    Case("relation-empty-at-train", sql("delete from main.loan_features"),
         ("train", "default_risk"),
         f"{WHERE}: main.loan_features is empty; nothing to train on (did `dbt build` run?)"),
    Case("relation-empty-at-score", sql("delete from main.loan_features"),
         ("score", "default_risk"),
         "model 'default_risk' v1: main.loan_features is empty; nothing to score (did `dbt "
         "build` run?)"),
    Case("relation-dropped", sql("drop table main.loan_features"), ("train", "grade"),
         "relation main.loan_features does not exist in the database: build it with `dbt "
         "build --select loan_features` first"),
    Case("relation-dropped-at-score", sql("drop table main.loan_features"), ("score", "grade"),
         "relation main.loan_features does not exist in the database: build it with `dbt "
         "build --select loan_features` first"),
    Case("dbt-model-not-built-yet", new_unbuilt_model, ("train", "new_risk"),
         "relation main.new_loans does not exist in the database: build it with `dbt build "
         "--select new_loans` first"),
    Case("score-relation-table-missing", spec("score: {relation: main.loans_2025}"),
         ("score", "default_risk"),
         "relation main.loans_2025 does not exist in the database: build it with `dbt build "
         "--select loans_2025` first"),
    Case("score-relation-lacks-a-feature",
         lambda p: (p.sql("create table main.loans_2025 as select * exclude (income) from "
                          "main.loan_features"),
                    p.write_schema(SCHEMA_YML.replace(EXCLUDE, EXCLUDE + "            score: "
                                                      "{relation: main.loans_2025}\n", 1))),
         ("score", "default_risk"),
         "model 'default_risk' v1: feature 'income' is missing from main.loans_2025; add it "
         "back to the dbt model (or point score.relation in models/schema.yml at one that has "
         "it) or retrain the model without it"),
    # `pyml profile` takes a relation: its message names no spec key the user never set.
    Case("profile-relation-unknown", nothing, ("profile", "loans_2025"),
         "relation 'loans_2025' is neither a dbt model in this project nor schema.table; name "
         "a model that `dbt ls` lists, or write schema.table"),
    Case("score-relation-unknown", spec("score: {relation: loans_2025}"),
         ("score", "default_risk"),
         f"{WHERE}: score.relation 'loans_2025' is neither a dbt model in this project nor "
         "schema.table; name a model that `dbt ls` lists, or write schema.table"),
    Case("duplicate-keys-at-score", sql("insert into main.loan_features select * from "
                                        "main.loan_features where loan_id <= 3"),
         ("score", "grade"),
         "model 'grade' v1: main.loan_features has 3 duplicate keys (loan_id); make the key "
         "unique in the dbt model"),
    # A feature present exactly where the label is (a second label, a later date): the model
    # leans on it and scores every unlabelled row as if it were missing (found by a docs
    # walk on the demo's second label; its univariate AUC is far from a leak's).
    Case("feature-known-only-with-the-label",
         sql("create or replace table main.loan_features as select * replace (case when "
             "loan_id % 10 = 0 then null else defaulted end as defaulted), case when loan_id "
             "% 10 = 0 then null else amount * 0.3 end as recovered from main.loan_features"),
         ("train", "default_risk"),
         f"{WHERE}: feature 'recovered' is present in 100% of the 2,700 rows with 'defaulted' "
         "but in 0% of the 300 rows without it, the rows pyml score is for; known only with "
         "the outcome (another label, a later date?), it cannot score them; add it to "
         "'exclude', or set `allow_leakage: true` in the spec if it is known for new rows "
         "elsewhere"),
    Case("duplicate-keys-at-training", sql("insert into main.loan_features select * from "
                                           "main.loan_features where loan_id <= 3"),
         ("train", "grade"),
         f"{GRADE}: main.loan_features has 3 duplicate keys (loan_id); add the columns that "
         "tell the rows apart to `key` in the spec, or make the key unique in the dbt model "
         "(pyml score writes one prediction per key)"),
    Case("null-keys-at-training",
         sql("update main.loan_features set loan_id = null where loan_id in (4, 8)"),
         ("train", "grade"),
         f"{GRADE}: main.loan_features has 2 rows with a NULL key (loan_id); filter or "
         "fill them in the dbt model (pyml score writes one prediction per key)"),
    Case("null-keys-at-score",
         sql("update main.loan_features set loan_id = null where loan_id in (4, 8)"),
         ("score", "grade"),
         "model 'grade' v1: main.loan_features has 2 rows with a NULL key (loan_id); filter or "
         "fill them in the dbt model"),
    # The database file.
    Case("database-missing", lambda p: p.db.unlink(), ("train",),
         "database file <DB> does not exist: run `dbt build` first, or check the path in your "
         "dbt profile (--profiles-dir / --target)"),
    Case("database-missing-at-a-reader", lambda p: p.db.unlink(), ("models",),
         "database file <DB> does not exist: run `dbt build` first, or check the path in your "
         "dbt profile (--profiles-dir / --target)"),
    Case("database-not-duckdb", lambda p: p.db.write_bytes(b"not a database" * 100),
         ("score",), "<DB> is not a DuckDB database file: fix the path in your dbt profile"),
    Case("database-empty-file", lambda p: p.db.write_bytes(b""), ("models",),
         "<DB> is not a DuckDB database file: fix the path in your dbt profile"),
    Case("database-corrupt", lambda p: p.db.write_bytes(b"DUCK" * 10_000), ("score",),
         "<DB> is corrupt (Corrupt database file: computed checksum ...); restore it from a "
         "backup or rebuild it with dbt"),
    Case("database-is-a-folder", db_folder, ("models",),
         "<DB> is a folder, not a DuckDB database file: fix the path in your dbt profile"),
    # The dbt project, profile and manifest.
    Case("profiles-yml-missing", write("profiles.yml", None), ("train",),
         "no profiles.yml in <DIR>: pass --profiles-dir or set DBT_PROFILES_DIR"),
    Case("profile-missing", write("profiles.yml", b"other:\n  target: dev\n  outputs: {}\n"),
         ("train",), "profile 'loans' (named in dbt_project.yml) is not in <DIR>/profiles.yml: "
                     "add it or fix `profile:` in dbt_project.yml"),
    Case("profiles-yml-invalid", write("profiles.yml", b"loans: [unclosed\n"), ("train",),
         "<DIR>/profiles.yml is not valid YAML: ..."),
    Case("target-missing", nothing, ("train", "--target", "nope"),
         "target 'nope' is not in profile 'loans' (<DIR>/profiles.yml); available targets: "
         "dev"),
    Case("target-not-duckdb",
         write("profiles.yml", b"loans:\n  target: dev\n  outputs:\n    dev:\n"
                               b"      type: postgres\n      host: localhost\n"),
         ("score",), "target 'dev' of profile 'loans' is of type 'postgres'; pyml works on "
                     "DuckDB targets (type: duckdb) and Spark targets (type: spark, method: "
                     "session)"),
    Case("dbt-project-missing", write("dbt_project.yml", None), ("models",),
         "no dbt_project.yml in <DIR>: pass --project-dir pointing at your dbt project"),
    Case("manifest-corrupt", write("target/manifest.json", b"{not json"), ("train",),
         "cannot read the dbt manifest <DIR>/target/manifest.json: Expecting property name "
         "enclosed in double quotes: line 1 column 2 (char 1); delete it and rerun (pyml runs "
         "`dbt parse` to rebuild it)"),
    Case("manifest-not-a-manifest", write("target/manifest.json", b"[]"), ("score",),
         "<DIR>/target/manifest.json is not a dbt manifest; delete it and rerun (pyml runs "
         "`dbt parse` to rebuild it)"),
    # The registry.
    Case("booster-blob-corrupt", sql("update ml.models set booster = 'not a model'::blob "
                                     "where model_name = 'default_risk'"),
         ("score", "default_risk"),
         "model 'default_risk' version 1: the stored booster is not a valid XGBoost ubj "
         "model; retrain it with `pyml train default_risk`"),
    Case("booster-format-unknown", sql("update ml.models set booster_format = 'pickle' "
                                       "where model_name = 'grade'"),
         ("score", "grade"),
         "model 'grade' version 1 has booster format 'pickle'; pyml loads only XGBoost "
         "ubj/json models: retrain it"),
    Case("registry-features-corrupt", sql("update ml.models set features = '{\"x\": 1}' "
                                          "where model_name = 'grade'"),
         ("score", "grade"),
         "model 'grade' version 1: its ml.models row is corrupt (features); retrain it with "
         "`pyml train grade`"),
    Case("score-before-any-train", nothing, ("score", "grade"),
         "no model 'grade' has been trained in this database: run `pyml train grade` first",
         trained=False),
    Case("score-a-model-not-trained-yet", only_default_risk_trained, ("score", "grade"),
         "model 'grade' has not been trained yet: run `pyml train grade` first", trained=False),
    Case("predictions-before-score", nothing, ("predictions", "grade"),
         "ml.grade_predictions does not exist: run `pyml score grade`", trained=False),
    Case("score-version-missing", nothing, ("score", "grade", "--version", "99"),
         "model 'grade' has no version 99: `pyml models` lists the versions"),
    Case("promote-version-missing", nothing, ("promote", "grade", "--version", "99"),
         "model 'grade' has no version 99: `pyml show grade` lists the versions"),
    Case("promote-the-champion", nothing, ("promote", "grade", "--version", "1"),
         "model 'grade' v1 is already the champion; `pyml show grade` lists the versions"),
    Case("rollback-nothing-to-roll-back", nothing, ("rollback", "grade"),
         "model 'grade' has no earlier champion to roll back to (v1 is the only champion it "
         "has had); `pyml promote grade --version N` picks a version by hand"),
    Case("sql-version-missing", nothing, ("sql", "grade", "--version", "99"),
         "model 'grade' has no version 99: `pyml models` lists the versions"),
    Case("sql-model-unknown", nothing, ("sql", "nope"),
         "no pyml model named 'nope' in the project or its registry; declared models: "
         "default_risk, grade, loss_amount"),
    Case("export-model-unknown", nothing, ("export", "nope", "--output", "<DIR>/export"),
         "no pyml model named 'nope' in the project or its registry; declared models: "
         "default_risk, grade, loss_amount"),
    Case("sql-dialect-unknown", nothing, ("sql", "grade", "--dialect", "oracle"),
         "unknown dialect 'oracle'; choose one of duckdb, postgres, snowflake, bigquery, "
         "sqlite, spark"),
    Case("export-version-missing", nothing,
         ("export", "grade", "--version", "99", "--output", "<DIR>/export"),
         "model 'grade' has no version 99: `pyml models` lists the versions"),
    Case("export-output-is-a-file", a_file, ("export", "grade", "--output", "<DIR>/card.json"),
         "output folder <DIR>/card.json is a file; give a folder to write the model into"),
    # Output files.
    Case("score-output-needs-one-model", nothing, ("score", "--output", "<DIR>/all.parquet"),
         "an output file holds one model's predictions: select a single model to score"),
    Case("score-output-suffix", nothing, ("score", "grade", "--output", "<DIR>/grade.xlsx"),
         "output file <DIR>/grade.xlsx: use a .parquet or .csv file name"),
    Case("score-output-folder-missing", nothing,
         ("score", "grade", "--output", "<DIR>/nowhere/grade.csv"),
         "output file <DIR>/nowhere/grade.csv: folder <DIR>/nowhere does not exist"),
]


def _fill(text: str, project: Loans) -> str:
    return (text.replace("<DB>", str(project.db)).replace("<DIR>", str(project.dir))
            .replace("<KEYS>", ", ".join(ALLOWED_KEYS)))


@pytest.fixture(scope="module")
def shared(trained_loans: Path, tmp_path_factory: pytest.TempPathFactory) -> Loans:
    """One trained copy for the cases that only rewrite the YAML or pass bad arguments.

    dbt re-parses one project incrementally in a fraction of the time a fresh copy takes to
    parse in full. Each case still proves it changed nothing, and the YAML is put back after.
    """
    root = tmp_path_factory.mktemp("shared") / "loans"
    shutil.copytree(trained_loans, root)
    return Loans(root, root / "loans.duckdb")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    if case.trained and (isinstance(case.setup, Schema) or case.setup is nothing):
        project: Loans = request.getfixturevalue("shared")
        monkeypatch.setenv(DB_ENV, str(project.db))
        request.addfinalizer(lambda: project.write_schema(SCHEMA_YML))
    else:
        project = request.getfixturevalue("scored" if case.trained else "loans")
    case.setup(project)
    before = state(project)
    result = project.pyml(*[_fill(a, project) for a in case.argv])
    message = error_line(result.output, result.exit_code)
    assert same(message, _fill(case.message, project)), message
    assert "  " not in message  # a multi-line driver or dbt error is joined into one line
    assert state(project) == before


def test_a_damaged_block_met_mid_command_is_named_like_a_damaged_file(scored: Loans) -> None:
    """Opening the file checks its headers and catalog; a damaged data block is met only when
    a query reads it (found by a docs walk: a raw traceback from score, train and explain)."""
    con = duckdb.connect(str(scored.db), read_only=True)
    try:
        [(block_size,)] = con.execute("select block_size from pragma_database_size() where "
                                      "database_name = current_database()").fetchall()
        blocks = [b for (b,) in con.execute(
            "select distinct block_id from pragma_storage_info('main.loan_features') where "
            "persistent and block_id >= 0 and column_name = 'amount'").fetchall()]
    finally:
        con.close()
    assert blocks
    with scored.db.open("r+b") as f:  # inside the first block: past its 8-byte checksum
        f.seek(3 * 4096 + blocks[0] * block_size + 64)
        f.write(b"\xff" * 4096)
    for argv in (("score", "default_risk"), ("train", "default_risk", "--force")):
        result = scored.pyml(*argv)
        assert same(error_line(result.output, result.exit_code), _fill(
            "<DB> is corrupt (Corrupt database file: computed checksum ...); restore it from "
            "a backup or rebuild it with dbt", scored)), (argv, result.output)


def test_cases_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_library_raises_the_same_error_typed(scored: Loans) -> None:
    """Through the Python API the CLI's message comes as a typed exception, nothing written."""
    scored.replace_features("select * exclude (income)")
    before = state(scored)
    with pytest.raises(SchemaMismatch) as raised:
        pyml.score(["default_risk"], project_dir=scored.dir, profiles_dir=scored.dir)
    assert str(raised.value) == (
        "model 'default_risk' v1: feature 'income' is missing from main.loan_features; add it "
        "back to the dbt model or retrain the model without it")
    assert state(scored) == before


# --- cases that need a real process, a permission or a file-system failure --------------------

def cli(project: Loans, *args: str, preexec: Callable[[], None] | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `pyml` executable on the project."""
    return subprocess.run(
        [PYML, *args, "--project-dir", str(project.dir), "--profiles-dir", str(project.dir)],
        env={**os.environ, DB_ENV: str(project.db), **(env or {})}, capture_output=True,
        text=True, preexec_fn=preexec, check=False)


def _without_root_override() -> None:
    """In the child, before exec: root loses the power to ignore file permissions.

    Dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set makes the
    exec'd program's root subject to mode bits, as any user is (prctl PR_CAPBSET_DROP).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _read_only_preexec() -> Callable[[], None] | None:
    if os.geteuid() != 0:
        return None
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_without_root_override,
                           check=False, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root without CAP_SETPCAP: cannot make a file read-only to it")
    return _without_root_override


@pytest.mark.parametrize("what", ["file", "folder"])
def test_database_read_only(scored: Loans, what: str) -> None:
    """chmod 0444 the file (or 0555 its folder, so no WAL can be created): writers fail with
    one line, readers still work."""
    preexec = _read_only_preexec()
    before = state(scored)
    target = scored.db if what == "file" else scored.dir
    mode = target.stat().st_mode
    target.chmod(0o444 if what == "file" else 0o555)
    try:
        done = cli(scored, "train" if what == "file" else "score", "grade", preexec=preexec)
        assert error_line(done.stdout + done.stderr, done.returncode) == (
            f"cannot write to {scored.db}: permission denied (the file or its folder is "
            "read-only); make both writable and retry")
        if what == "file":
            done = cli(scored, "models", preexec=preexec)
            assert done.returncode == 0 and "default_risk" in done.stdout, done.stderr
    finally:
        target.chmod(mode)
    assert state(scored) == before


HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_database_locked_by_another_writer(scored: Loans) -> None:
    before = state(scored)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(scored.db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        message = (f"database {scored.db} is locked by another process (PID {holder.pid}): "
                   "close the other DuckDB client (dbt, a notebook, a BI tool, another pyml) "
                   "and retry")
        for args in (("score", "default_risk"), ("train", "grade")):
            result = scored.pyml(*args, "--lock-timeout", "0.3")
            assert error_line(result.output, result.exit_code) == message, args
    finally:
        holder.kill()
        holder.wait()
    assert state(scored) == before


def test_disk_full_writing_the_output_file(scored: Loans, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """The file system refuses the --output file: clear line, and the predictions table is
    not replaced (the file is written before the table is swapped in)."""
    before = state(scored)
    out = scored.dir / "grade.parquet"

    def full(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(os, "replace", full)
    result = scored.pyml("score", "grade", "--output", str(out))
    monkeypatch.undo()
    assert error_line(result.output, result.exit_code) == (
        f"cannot write {out}: No space left on device")
    assert not out.exists() and state(scored) == before



@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Every file write of this process past `limit` bytes fails (EFBIG), as on a full disk.

    RLIMIT_FSIZE is the kernel's own per-process limit: DuckDB's writes fail exactly where a
    full disk would fail them, without touching DuckDB.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("args", [("score", "default_risk"), ("train", "grade", "--force")],
                         ids=["score", "train"])
def test_disk_full_writing_the_database(scored: Loans, args: tuple[str, ...]) -> None:
    before = state(scored)
    with file_size_limit(4096):
        result = scored.pyml(*args)
    assert error_line(result.output, result.exit_code) == (
        f"cannot write to {scored.db}: File too large; free disk space and retry (the failed "
        "write was rolled back)")
    assert state(scored) == before
    scored.ok(*args)  # with room again, the same command works


def interrupted(scored: Loans, verb: str, started: str, wait: float) -> str:
    """Run `pyml VERB default_risk`, send SIGINT `wait` seconds after a line containing
    `started`, and check what a Ctrl-C must give: exit 130, pyml's one last line, no
    traceback (nor a KeyboardInterrupt a library logs), the registry untouched."""
    before = state(scored)
    # A shell that starts the suite in the background makes its children ignore SIGINT (and
    # Python then installs no KeyboardInterrupt handler): give pyml the default disposition
    # a terminal's Ctrl-C meets.
    proc = subprocess.Popen(
        [PYML, verb, "default_risk", "--project-dir", str(scored.dir), "--profiles-dir",
         str(scored.dir)], env={**os.environ, DB_ENV: str(scored.db)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    try:
        seen: list[str] = []
        while not seen or started not in seen[-1]:
            line = proc.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        time.sleep(wait)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        output = "".join(seen) + rest
        code = proc.returncode
    finally:
        proc.kill()
        proc.wait()
    assert code == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert output.splitlines()[-1] == "Interrupted: nothing was written."
    assert state(scored) == before
    return output


ENDLESS = "            num_boost_round: 1000000\n            early_stopping_rounds: null\n"


def test_ctrl_c_during_training(scored: Loans) -> None:
    """SIGINT while XGBoost is boosting: exit 130, one line, the registry untouched."""
    scored.write_schema(SCHEMA_YML.replace(EXCLUDE, EXCLUDE + ENDLESS, 1))
    interrupted(scored, "train", "split (random)", 0.5)  # reading done, boosting begins


def test_ctrl_c_during_tuning(scored: Loans) -> None:
    """SIGINT in an Optuna trial: the same, and no traceback from Optuna's failed-trial log
    either."""
    scored.write_schema(SCHEMA_YML.replace(
        EXCLUDE, EXCLUDE + ENDLESS + "            tune: {n_trials: 50, timeout: null}\n", 1))
    interrupted(scored, "tune", "tuning (study", 1.0)  # the first trial starts


# --- odd but legal: these must work -------------------------------------------------------------

def test_odd_column_names_work(loans: Loans) -> None:
    """Spaces, quotes, brackets, unicode and SQL keywords in column names are just names."""
    scored = loans
    scored.replace_features(
        'select loan_id as "order", region as "région", amount as "loan amount", '
        'income as "in""come [%] <1", term_months as "select", grade, defaulted, loss')
    scored.write_schema(SCHEMA_YML.replace("key: loan_id", "key: order", 1))
    scored.ok("train", "default_risk")
    scored.ok("score", "default_risk")
    (features,), = scored.sql("select features from ml.models where model_name = "
                              "'default_risk'")
    assert [f["name"] for f in json.loads(features)] == [
        "région", "loan amount", 'in"come [%] <1', "select"]
    rows = scored.sql('select count(*), count(distinct "order"), min(probability), '
                      "max(probability) from ml.default_risk_predictions")
    assert rows[0][:2] == (3000, 3000) and 0 < rows[0][2] < rows[0][3] < 1


def test_a_missing_manifest_is_rebuilt(loans: Loans) -> None:
    """No target/manifest.json (a fresh clone, `dbt clean`): pyml runs `dbt parse` itself."""
    (loans.dir / "target" / "manifest.json").unlink()
    result = loans.ok("train", "grade")
    assert "Parsing the dbt project in" in result.output
    assert loans.sql("select model_name from ml.models") == [("grade",)]


def test_class_never_seen_in_training_is_scored(scored: Loans) -> None:
    """Scoring reads no label: rows whose (new) grade is D get one of the trained classes."""
    scored.sql("update main.loan_features set grade = 'D' where loan_id % 10 = 0")
    scored.ok("score", "grade")
    assert scored.sql("select prediction, count(*) from ml.grade_predictions group by 1 "
                      "order by 1")[-1][0] == "C"
    assert scored.sql("select count(*) from ml.grade_predictions where prediction not in "
                      "('A', 'B', 'C')") == [(0,)]
    assert scored.sql("select count(*) from ml.grade_predictions") == [(3000,)]


def test_nan_feature_is_a_missing_value(scored: Loans) -> None:
    """NaN in a DOUBLE feature is XGBoost's missing value, like NULL (both train and score)."""
    scored.sql("insert into main.loan_features select * replace (loan_id + 100000 as loan_id, "
               "null as income) from main.loan_features where loan_id = 5")
    scored.sql("update main.loan_features set income = 'nan' where loan_id = 5")
    scored.ok("train", "default_risk")
    scored.ok("score", "default_risk")
    rows = scored.sql("select probability from ml.default_risk_predictions "
                      "where loan_id in (5, 100005) order by loan_id")
    assert len(rows) == 2 and rows[0] == rows[1]


# --- HTTP: pyml serve ---------------------------------------------------------------------------

MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(trained_loans: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[TestClient, Loans]]:
    """One server (at most 3 records and 4 KiB a request) over a private trained copy."""
    root = tmp_path_factory.mktemp("served") / "loans"
    shutil.copytree(trained_loans, root)
    project = Loans(root, root / "loans.duckdb")
    app = create_app(project.db, poll_seconds=3600, max_records=3, max_body_bytes=MAX_BODY)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, project


HTTP_CASES = [
    ("not-json", "default_risk", b"[{", 422,
     "body is not valid JSON: Expecting property name enclosed in double quotes at line 1 "
     "column 3"),
    ("empty-body", "default_risk", b"", 422,
     "body is not valid JSON: Expecting value at line 1 column 1"),
    ("not-utf8", "default_risk", b"[\xff]", 422, "body is not UTF-8 encoded JSON"),
    ("not-utf8-in-a-string", "grade", b'[{"region": "\xc3\x28"}]', 422,
     "body is not UTF-8 encoded JSON"),
    ("object-not-list", "default_risk", b'{"amount": 1}', 422,
     "body must be a JSON list of records (objects), got object"),
    ("list-of-numbers", "default_risk", b"[1, 2]", 422,
     "record 1 must be a JSON object of field: value, got number"),
    ("text-for-a-number", "default_risk", b'[{}, {"amount": "12.5"}]', 422,
     'record 2: field \'amount\' must be a number or null, got string "12.5"'),
    ("number-for-a-category", "grade", b'[{"region": 3}]', 422,
     "record 1: field 'region' must be a string (a category) or null, got number 3"),
    ("nan-token", "default_risk", b'[{"income": NaN}]', 422,
     "body is not valid JSON: NaN is not a JSON number"),
    ("beyond-float32", "loss_amount", b'[{"income": -1e39}]', 422,
     "record 1: field 'income' is -1e+39, outside the float32 range the model reads"),
    ("nested-too-deep", "default_risk", b"[" * 2000 + b"]" * 2000, 422,
     "body is nested too deeply to be a list of records"),
    ("too-many-records", "default_risk", b"[{}, {}, {}, {}]", 413,
     "body has 4 records; the limit is 3 per request (pyml serve --max-records)"),
    ("too-large", "default_risk", b"[" + b" " * MAX_BODY + b"]", 413,
     f"body is {MAX_BODY + 2} bytes; the limit is {MAX_BODY} (pyml serve --max-body-bytes)"),
    ("unknown-model", "nope", b"[]", 404,
     "no model 'nope' is served; served models: default_risk, grade, loss_amount"),
]


@pytest.mark.parametrize(("model", "body", "status", "detail"),
                         [c[1:] for c in HTTP_CASES], ids=[c[0] for c in HTTP_CASES])
def test_bad_request(server: tuple[TestClient, Loans], model: str, body: bytes, status: int,
                     detail: str) -> None:
    client, project = server
    before = state(project)
    response = client.post(f"/models/{model}/predict", content=body)
    assert (response.status_code, response.json()) == (status, {"detail": detail})
    assert "Traceback" not in response.text and str(project.dir) not in response.text
    assert state(project) == before
