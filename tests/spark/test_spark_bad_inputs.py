"""Mistakes on a Spark target end in one `Error:` line that names the fix, and change nothing.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyml.cli import cli
from pyml.session import SPARK_VERBS

from ..support import error_line
from .conftest import SCHEMA, SPARK, SparkLoans

pytestmark = SPARK

# pyml's CLI in a child process that cannot import pyspark (as without the Spark extra).
# A None in sys.modules makes `import pyspark` raise ImportError and find_spec return None.
NO_PYSPARK = ("import sys; sys.modules['pyspark'] = None; from pyml.cli import main; "
              "sys.argv = ['pyml', *sys.argv[1:]]; main()")


def test_a_spark_target_without_pyspark_names_the_extra(spark_loans: SparkLoans) -> None:
    # The child stops before any Spark or dbt work, so it never opens the suite's metastore.
    done = subprocess.run(
        [sys.executable, "-c", NO_PYSPARK, "train", "--project-dir", str(spark_loans.dir),
         "--profiles-dir", str(spark_loans.dir)],
        capture_output=True, text=True, timeout=120, check=False)
    assert error_line(done.stdout + done.stderr, done.returncode) == (
        "the dbt target 'dev' is type spark: install pyml's Spark extra: "
        "pip install '<pyml checkout>[spark]'")


def _versions(project: SparkLoans) -> list[tuple[object, ...]]:
    if not project.spark.catalog.tableExists("ml.models"):
        return []
    return project.rows("select model_name, version from ml.models order by 1, 2")


def test_a_feature_relation_that_does_not_exist_is_named(spark_loans: SparkLoans) -> None:
    before = _versions(spark_loans)
    spark_loans.spark.sql(f"alter table {SCHEMA}.loan_features rename to "
                          f"{SCHEMA}.loan_features_away")
    try:
        result = spark_loans.pyml("train", "default_risk")
    finally:
        spark_loans.spark.sql(f"alter table {SCHEMA}.loan_features_away rename to "
                              f"{SCHEMA}.loan_features")
    assert error_line(result.output, result.exit_code) == (
        f"relation {SCHEMA}.loan_features does not exist in the Spark catalog: build it with "
        "`dbt build --select loan_features` first")
    assert _versions(spark_loans) == before


def test_a_feature_known_only_with_the_label_is_refused(spark_loans: SparkLoans) -> None:
    """As on DuckDB (tests/test_bad_inputs.py): `amount` present exactly where `defaulted`
    is, from the same one pass over the relation."""
    relation = f"{SCHEMA}.loan_features"
    before = _versions(spark_loans)
    columns = [r[0] for r in spark_loans.rows(f"describe {relation}")]
    later = ", ".join(f"case when pmod(hash(loan_id), 10) = 0 then null else `{c}` end"
                      if c in ("amount", "defaulted") else f"`{c}`" for c in columns)
    spark_loans.spark.sql(f"create table {relation}_copy as select * from {relation}")
    try:
        spark_loans.spark.sql(f"insert overwrite table {relation} select {later} "
                              f"from {relation}_copy")
        result = spark_loans.pyml("train", "default_risk", "--force")
    finally:
        spark_loans.spark.sql(f"insert overwrite table {relation} select * from "
                              f"{relation}_copy")
        spark_loans.spark.sql(f"drop table {relation}_copy")
    message = error_line(result.output, result.exit_code)
    assert message.startswith(
        "models/features/_features__models.yml: model 'default_risk' on "), message
    assert (": feature 'amount' is present in 100% of the ") in message
    assert ("rows with 'defaulted' but in 0% of the ") in message
    assert _versions(spark_loans) == before


# The commands that refuse a Spark target, and `init`, which needs no target.
DUCKDB_ONLY = {"drift": ("drift",), "profile": ("profile", "loan_features"),
               "report": ("report", "default_risk"), "tune": ("tune", "default_risk"),
               "scaffold": ("scaffold", "loan_features"), "publish": ("publish",),
               "monitor": ("monitor", "default_risk"), "sources": ("sources",)}


def test_the_spark_list_names_every_other_command() -> None:
    assert set(SPARK_VERBS) == set(cli.commands) - set(DUCKDB_ONLY) - {"init"}


@pytest.mark.parametrize("command", sorted(DUCKDB_ONLY))
def test_a_duckdb_only_command_names_what_runs_on_spark(spark_loans: SparkLoans,
                                                        command: str) -> None:
    before = _versions(spark_loans)
    result = spark_loans.pyml(*DUCKDB_ONLY[command])
    assert error_line(result.output, result.exit_code) == (
        f"pyml {command} runs on DuckDB targets only for now: target 'dev' is type spark "
        "(train, score, explain, show, export, serve, sql, models, predictions, promote and "
        "rollback run on Spark)")
    assert _versions(spark_loans) == before
