"""The Spark suite's fixtures: one SparkSession, and the lending project on a Spark target.

One `local[2]` SparkSession with Hive support serves the whole suite; its metastore (Derby)
and warehouse live in a temp folder. The profile's `server_side_parameters` repeat the
session's settings, so dbt-spark (`method: session`, which calls
`SparkSession.builder.enableHiveSupport().getOrCreate()`) and pyml both get this very session
and its catalog. dbt runs in-process: Derby's embedded metastore admits one process at a time,
so no child process may touch the catalog while the session holds it.

The raw table is the DuckDB suite's loan book (conftest.write_loans_csv, same seed and size),
every column text as a raw source would be, written by Spark and declared as a dbt source;
`dbt build` makes a staging and a feature model and runs their tests.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from click.testing import CliRunner, Result

from pyml.cli import cli

from ..conftest import LOAN_SPECS, write_loans_csv
from ..support import system_package_missing, write_dbt_project

DBT_PROJECT_YML = """\
name: loans_spark
version: "1.0.0"
config-version: 2
profile: loans_spark
model-paths: ["models"]
target-path: "target"
models:
  loans_spark:
    +materialized: table
    +file_format: parquet
"""

SOURCES_YML = """\
version: 2
sources:
  - name: raw
    schema: raw
    tables:
      - name: loans
        description: The loan book as it arrives, every column text.
"""

STG_LOANS_SQL = """\
with loans as (
    select * from {{ source('raw', 'loans') }}
),

final as (
    select
        cast(loan_id as int) as loan_id,
        nullif(trim(region), '') as region,
        cast(amount as double) as amount,
        cast(nullif(income, '') as double) as income,
        cast(term_months as int) as term_months,
        grade,
        cast(defaulted as int) = 1 as defaulted,
        cast(loss as double) as loss
    from loans
)

select * from final
"""

STAGING_YML = """\
version: 2
models:
  - name: stg_raw__loans
    description: One row per loan, typed; empty strings as NULL.
    columns:
      - name: loan_id
        data_tests: [unique, not_null]
      - name: region
        data_tests:
          - accepted_values:
              arguments:
                values: [north, south, east, west]
"""

LOAN_FEATURES_SQL = """\
with loans as (
    select * from {{ ref('stg_raw__loans') }}
),

final as (
    select
        loan_id,
        region,
        amount,
        income,
        term_months,
        grade,
        defaulted,
        loss
    from loans
)

select * from final
"""

FEATURES_YML = """\
version: 2
models:
  - name: loan_features
    description: One row per loan, ready to train on.
    columns:
      - name: loan_id
        data_tests: [unique, not_null]
    config:
      meta:
        pyml:
""" + LOAN_SPECS["default_risk"] + LOAN_SPECS["loss_amount"]  # the DuckDB suite's specs

SCHEMA = "loans"  # the target's schema (a Spark database)
# Every Spark test module's marks: the marker `make test` leaves out, and pyspark's warnings
# about pandas 3 (its Arrow conversion works; it has not declared support yet).
SPARK = [pytest.mark.spark,
         pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
         pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


def spark_conf(home: Path) -> dict[str, str]:
    """The suite's Spark settings: session and profile alike (offline, in `home`)."""
    return {
        "spark.master": "local[2]",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        # derby.log lands here, not in the working directory.
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={home}",
    }


def profiles_yml(home: Path) -> str:
    """A dbt-spark `method: session` profile carrying the session's settings."""
    params = "".join(f'        {k}: "{v}"\n' for k, v in spark_conf(home).items())
    return ("loans_spark:\n  target: dev\n  outputs:\n    dev:\n      type: spark\n"
            "      method: session\n      host: \"local[2]\"\n"
            f"      schema: {SCHEMA}\n      threads: 1\n"
            f"      server_side_parameters:\n{params}")


def write_spark_project(root: Path, home: Path) -> None:
    """The lending project's files for a Spark target (no build)."""
    write_dbt_project(root, {
        "dbt_project.yml": DBT_PROJECT_YML, "profiles.yml": profiles_yml(home),
        "models/staging/_raw__sources.yml": SOURCES_YML,
        "models/staging/stg_raw__loans.sql": STG_LOANS_SQL,
        "models/staging/_staging__models.yml": STAGING_YML,
        "models/features/loan_features.sql": LOAN_FEATURES_SQL,
        "models/features/_features__models.yml": FEATURES_YML})


def dbt_in_process(root: Path, *args: str) -> None:
    """Run dbt on the project in this process (dbt-spark then uses the suite's session)."""
    from dbt.cli.main import dbtRunner

    done = dbtRunner().invoke([*args, "--project-dir", str(root), "--profiles-dir", str(root)])
    assert done.success, f"dbt {' '.join(args)} failed: {done.exception!r}\n{done.result}"


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the suite's metastore and warehouse."""
    return tmp_path_factory.mktemp("spark_home")


@pytest.fixture(scope="session")
def spark(spark_home: Path) -> Iterator[Any]:
    """The suite's one SparkSession: local[2], Hive catalog in `spark_home`."""
    if not shutil.which("java"):
        system_package_missing("Java is not on PATH (Debian: apt-get install "
                               "openjdk-17-jre-headless)")
    try:
        import dbt.adapters.spark  # noqa: F401
        from pyspark.sql import SparkSession
    except ImportError as e:
        system_package_missing(f"pyml's Spark extra is not installed ({e}): "
                               "pip install '<pyml checkout>[spark]'")
    # Python workers must run this interpreter; nothing may leave the machine.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = SparkSession.builder.appName("pyml-tests").enableHiveSupport()
    for key, value in spark_conf(spark_home).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    # Without Hive support dbt would silently get an in-memory catalog of its own.
    assert session.conf.get("spark.sql.catalogImplementation") == "hive"
    yield session
    session.stop()


@dataclass
class SparkLoans:
    """The lending project on the suite's Spark target, with helpers to drive and inspect it."""

    dir: Path  # project folder (also holds profiles.yml)
    spark: Any  # the suite's SparkSession

    def pyml(self, *args: str) -> Result:
        """Run `pyml ARGS --project-dir ... --profiles-dir ...` in-process."""
        return CliRunner().invoke(cli, [*args, "--project-dir", str(self.dir),
                                        "--profiles-dir", str(self.dir)])

    def ok(self, *args: str) -> Result:
        """Run pyml and assert it succeeded."""
        result = self.pyml(*args)
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        """A Spark SQL query's rows as tuples."""
        return [tuple(r) for r in self.spark.sql(query).collect()]

    def df(self, query: str) -> Any:
        """A Spark SQL query's result as a pandas DataFrame."""
        return self.spark.sql(query).toPandas()

    def dbt(self, *args: str) -> None:
        """Run dbt on the project in-process."""
        dbt_in_process(self.dir, *args)


def write_raw_loans(spark: Any, folder: Path) -> None:
    """raw.loans: the DuckDB suite's loan book, every column text, written by Spark."""
    csv_path = folder / "raw_loans.csv"
    write_loans_csv(csv_path)
    names = ["loan_id", "region", "amount", "income", "term_months", "grade", "defaulted",
             "loss"]
    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names}, strings_can_be_null=False))
    spark.sql("create database if not exists raw")
    spark.createDataFrame(table).write.mode("overwrite").format("parquet").saveAsTable(
        "raw.loans")


@pytest.fixture(scope="session")
def spark_loans(spark: Any, spark_home: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> SparkLoans:
    """The lending project after one in-process `dbt build` on the Spark target."""
    root = tmp_path_factory.mktemp("loans_spark") / "loans"
    write_spark_project(root, spark_home)
    write_raw_loans(spark, root.parent)
    project = SparkLoans(root, spark)
    project.dbt("build")
    return project


@pytest.fixture(scope="session")
def spark_trained(spark_loans: SparkLoans) -> SparkLoans:
    """The Spark project after one `pyml train` and `pyml score` of both specs (v1 of each;
    test_spark_flow's last tests add versions of loss_amount)."""
    spark_loans.ok("train")
    spark_loans.ok("score")
    return spark_loans
