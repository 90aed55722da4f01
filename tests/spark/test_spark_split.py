"""The train / validation / holdout split is the same on Spark as on DuckDB, row for row.

pyml.data.split renders one definition (md5 of the key's text) for both engines; here the
Spark rendering meets the Python reference (tests/split_reference.py) on every portable key
type, and the lending data, loaded into both engines, gets the same part on every row.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from pyml.data.split import HASH_KIND, bucket_sql, record_part_sql

from ..split_reference import bucket, part
from .conftest import SCHEMA, SPARK, SparkLoans

pytestmark = SPARK

RECORDS = [
    {"method": "random", "test_fraction": 0.2, "validation_fraction": 0.2, "seed": 42,
     "hash": HASH_KIND},
    {"method": "random", "test_fraction": 0.25, "validation_fraction": 0.2, "seed": 3,
     "hash": HASH_KIND},
    {"method": "kfold", "test_fraction": 0.3, "validation_fraction": 0.0, "seed": 7,
     "hash": HASH_KIND, "folds": 5},
]


def test_spark_buckets_equal_the_python_reference_on_every_portable_key_type(
        spark: Any) -> None:
    rows = [
        (1, "north", True, datetime.date(2024, 2, 29), Decimal("12.50")),
        (-7, "naïve 'quoted' \\ text", False, datetime.date(1, 1, 1), Decimal("-0.01")),
        (2**62, "", None, datetime.date(9999, 12, 31), None),
        (None, None, True, None, Decimal("0.00")),
    ]
    frame = spark.createDataFrame(
        rows, "k_int bigint, k_str string, k_bool boolean, k_date date, k_dec decimal(10,2)")
    frame.createOrReplaceTempView("split_keys")
    keys = [["k_int"], ["k_str"], ["k_bool"], ["k_date"], ["k_dec"],
            ["k_int", "k_str", "k_bool", "k_date", "k_dec"]]
    for key in keys:
        got = [r[0] for r in spark.sql(
            f"select {bucket_sql(key, 42, 'spark')} from split_keys").collect()]
        positions = [["k_int", "k_str", "k_bool", "k_date", "k_dec"].index(k) for k in key]
        want = [bucket(42, [row[i] for i in positions]) for row in rows]
        assert got == want, key


def test_the_lending_data_gets_the_same_part_on_spark_and_duckdb(
        spark_loans: SparkLoans, built_loans: Path) -> None:
    con = duckdb.connect(str(built_loans / "loans.duckdb"), read_only=True)
    try:
        for record in RECORDS:
            text, params = record_part_sql(record, ["loan_id"], "duckdb")
            duck = con.execute(f"select loan_id, {text} from main.loan_features "
                               "order by loan_id", params).fetchall()
            text, params = record_part_sql(record, ["loan_id"], "spark")
            sparked = [tuple(r) for r in spark_loans.spark.sql(
                f"select loan_id, {text} from {SCHEMA}.loan_features order by loan_id",
                args=params).collect()]
            assert len(duck) == 3000 and sparked == duck, record
            reference = [part([k], int(record["seed"]), record["test_fraction"],
                              record["validation_fraction"]) for k, _ in duck]
            assert [p for _, p in duck] == reference, record
    finally:
        con.close()
