"""dbt on the Spark target: the suite's session, the Hive catalog, sources, models, tests."""

from __future__ import annotations

from typing import Any

from .conftest import SCHEMA, SPARK, SparkLoans

pytestmark = SPARK


def test_dbt_build_writes_the_feature_model_into_the_suites_catalog(
        spark: Any, spark_loans: SparkLoans) -> None:
    # dbt got this session (not one with an in-memory catalog of its own): its tables are in
    # the Hive catalog the fixture created, next to the raw source.
    tables = {t.name for t in spark.catalog.listTables(SCHEMA)}
    assert {"stg_raw__loans", "loan_features"} <= tables
    assert spark_loans.rows(f"select count(*), count(distinct loan_id), count(income), "
                            f"count(region) from {SCHEMA}.loan_features") == [
        (3000, 3000, 2940, spark_loans.rows(
            "select count(*) from raw.loans where region <> ''")[0][0])]
    assert dict(spark.table(f"{SCHEMA}.loan_features").dtypes) == {
        "loan_id": "int", "region": "string", "amount": "double", "income": "double",
        "term_months": "int", "grade": "string", "defaulted": "boolean", "loss": "double"}
    # dbt-spark turns ANSI mode off on the session it shares.
    assert spark.conf.get("spark.sql.ansi.enabled") == "false"
