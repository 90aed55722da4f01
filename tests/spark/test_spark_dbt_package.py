"""pyml's dbt package on the Spark target: the macros' spark__ / default__ implementations
on dirty literals, and predictions_current_champion on the Spark registry (ml.models is a
view there) and on a relation scored by a version that does not serve."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from pyml.dbt.package import init_project

from .conftest import SCHEMA, SPARK, SparkLoans, dbt_in_process

pytestmark = SPARK

CHECKS_SQL = """\
with

inputs as (

    select * from values
        (' Ann@Example.COM ', '2025-03-14', '$1,234.50', 'Yes', timestamp '2024-03-31 23:59:59'),
        ('x@y.z', '2025-02-30', 'abc', 'maybe', timestamp '2024-04-01 00:00:00'),
        ('  ', '1899-12-31', '-5', ' n ', timestamp '2024-01-01 23:59:59')
    as t (raw_text, raw_date, raw_amount, raw_flag, event_at)

)

select
    raw_text,
    {{ pyml.clean_email('raw_text') }} as email,
    {{ pyml.is_invalid_flag('raw_text', pyml.clean_email('raw_text')) }} as is_email_invalid,
    {{ pyml.parse_date('raw_date') }} as parsed_date,
    {{ pyml.clean_amount('raw_amount') }} as amount,
    {{ pyml.clean_boolean('raw_flag') }} as flag,
    {{ pyml.as_of_window('event_at', "date '2024-04-01'", 90) }} as in_features,
    {{ pyml.label_window('event_at', "date '2024-04-01'", 90) }} as in_labels,
    (select count(*) from {{ pyml.date_spine("'2024-04-01'", "'2025-01-01'", 3) }} as s) as n_spine
from inputs
"""

ML_YML = """\
version: 2
sources:
  - name: ml
    schema: ml
    tables:
      - name: default_risk_predictions
        data_tests:
          - pyml.predictions_current_champion
models:
  - name: scored_by_v9
    data_tests:
      - pyml.predictions_current_champion:
          arguments:
            model_name: default_risk
          config: {error_if: "!=1", warn_if: "!=1"}
"""


def test_the_dbt_package_runs_on_spark(spark_trained: SparkLoans, tmp_path: Path) -> None:
    root = tmp_path / "loans"
    shutil.copytree(spark_trained.dir, root, ignore=shutil.ignore_patterns("target", "logs"))
    init_project(root)
    checks = root / "models" / "package"
    checks.mkdir()
    (checks / "package_checks.sql").write_text(CHECKS_SQL)
    (checks / "scored_by_v9.sql").write_text("select 1 as loan_id, 9 as model_version")
    (checks / "_package__models.yml").write_text(ML_YML)
    dbt_in_process(root, "deps")
    # The champion test passes on the real predictions and finds exactly one stale version
    # (v9) in the other relation; a failure would fail the build.
    dbt_in_process(root, "build", "--select", "path:models/package", "source:ml")
    rows: list[Any] = sorted(
        (tuple(r) for r in spark_trained.spark.sql(
            f"select * from {SCHEMA}.package_checks").collect()), key=lambda r: r[0])
    assert rows == [
        ("  ", None, False, None, None, False, False, False, 4),
        (" Ann@Example.COM ", "ann@example.com", False, dt.date(2025, 3, 14), 1234.5, True,
         True, False, 4),
        ("x@y.z", None, True, None, None, None, False, True, 4),
    ]
