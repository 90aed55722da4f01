"""`pyml monitor` end to end on the lending project: windows, the one gate, spec errors and
reruns that replace their windows (the statistics themselves: tests/test_monitor_stats.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyml
from pyml.dbt.spec_monitor import WINDOWS, parse_monitor
from pyml.errors import DriftDetected, SpecError
from pyml.verbs.monitor import window_sql

from .conftest import FEATURES, SCHEMA_YML, Loans
from .support import error_line

QUARTERLY = "select *, (date '2024-01-01' + to_months(3 * (loan_id % 4)))::date as as_of"


def _monitor_spec(loans: Loans, block: str) -> None:
    """default_risk's spec with a `monitor:` block (YAML flow mapping)."""
    loans.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        f"            exclude: [loss, grade, as_of]\n            monitor: {block}\n", 1))


def _metrics(loans: Loans) -> dict[tuple[str, str, str], float | None]:
    return {(w, f, m): v for w, f, m, v in loans.sql(
        "select window_label, feature, metric, value from ml.monitoring")}


def test_quarterly_windows_without_shift_exit_0(scored: Loans) -> None:
    scored.replace_features(QUARTERLY)
    _monitor_spec(scored, "{time_column: as_of, window: quarter}")
    result = scored.pyml("monitor", "default_risk")
    assert result.exit_code == 0, result.output
    assert "ALERT" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "default_risk v1: no alert in 4 window(s) x 4 feature(s) of main.loan_features "
        "(ml.monitoring)")
    windows = scored.sql("select window_label, min(window_start)::date, min(window_end)::date, "
                         "min(rows), max(rows) from ml.monitoring group by all order by 1")
    assert [w[0] for w in windows] == ["2024-Q1", "2024-Q2", "2024-Q3", "2024-Q4"]
    assert [str(w[1]) for w in windows] == ["2024-01-01", "2024-04-01", "2024-07-01",
                                           "2024-10-01"]
    assert str(windows[0][2]) == "2024-04-01" and all(w[3] == w[4] == 750 for w in windows)
    got = _metrics(scored)
    numeric = {"psi", "ks", "wasserstein", "jensen_shannon", "hellinger", "null_share",
               "null_share_change"}
    categorical = {"psi", "chi2", "chi2_p", "jensen_shannon", "hellinger", "linf",
                   "unseen_share", "null_share", "null_share_change"}
    for feature in FEATURES:
        have = {m for (w, f, m) in got if w == "2024-Q3" and f == feature}
        assert have == (categorical if feature == "region" else numeric), feature
    assert {m for (w, f, m) in got if f == "__prediction__" and w == "2024-Q1"} == {
        "psi", "ks", "wasserstein", "jensen_shannon", "hellinger"}
    model = {m: v for (w, f, m), v in got.items() if f == "__model__" and w == "2024-Q2"}
    assert model["labelled_rows"] == 750
    # Every row here trained the refit that scores, so its realised AUC is in-sample
    # (optimistic, ~0.82); the estimate speaks for unseen rows, like the holdout's AUC.
    # Tracking the realised AUC of unseen rows: tests/test_cbpe.py.
    ((holdout,),) = scored.sql("select value from ml.metrics where model_name = "
                               "'default_risk' and split = 'holdout' and metric = 'auc'")
    assert abs(model["estimated_roc_auc"] - holdout) < 0.05
    # A rerun replaces its windows' rows: none duplicated.
    before = scored.sql("select count(*), max(computed_at) from ml.monitoring")[0]
    assert scored.pyml("monitor", "default_risk").exit_code == 0
    assert scored.sql("select count(*) from ml.monitoring")[0][0] == before[0]


def test_a_shifted_quarter_alerts_and_exits_2(scored: Loans, tmp_path: Path) -> None:
    scored.replace_features(QUARTERLY.replace(
        "select *,", "select * replace (case when loan_id % 4 = 3 then amount * 3 "
                     "else amount end as amount),", 1))
    _monitor_spec(scored, "{time_column: as_of, window: quarter}")
    result = scored.pyml("monitor", "default_risk")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    alerts = [line for line in result.output.splitlines() if line.startswith("ALERT")]
    assert alerts and all(" 2024-Q4 " in line for line in alerts), alerts
    assert "ALERT default_risk v1 2024-Q4 feature amount psi " in alerts[0]
    assert {line.split()[4] for line in alerts} <= {"feature", "prediction"}
    assert not any("feature income" in line or "feature region" in line for line in alerts)
    flagged = scored.sql("select distinct window_label, feature from ml.monitoring where alert")
    assert ("2024-Q4", "amount") in flagged
    assert {w for w, _ in flagged} == {"2024-Q4"}
    # The report's monitoring section: the per-window panels, estimated vs realised, alerts.
    page = tmp_path / "report.html"
    scored.ok("report", "default_risk", "-o", str(page))
    section = page.read_text().split("<h2>Monitoring</h2>")[1].split("<h2>")[0]
    assert section.count("<img") == 4  # panels + roc_auc, accuracy, f1
    assert "<td>2024-Q4</td><td>amount</td><td>psi</td>" in section
    # The library: results returned, or DriftDetected (exit code 2) with fail_on_alert.
    where = {"project_dir": scored.dir, "profiles_dir": scored.dir}
    [found] = pyml.monitor(["default_risk"], **where)
    assert found.alerts and {r.window for r in found.alerts} == {"2024-Q4"}
    with pytest.raises(DriftDetected) as caught:
        pyml.monitor(["default_risk"], fail_on_alert=True, **where)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("Monitoring alerts: default_risk v1 (")
    # The spec's thresholds decide: raised above every value, nothing fires.
    _monitor_spec(scored, "{time_column: as_of, window: quarter, thresholds: {psi: 100, "
                          "wasserstein: 100, jensen_shannon: 100}}")
    assert scored.pyml("monitor", "default_risk").exit_code == 0
    assert scored.sql("select count(*) from ml.monitoring where alert") == [(0,)]
    assert scored.sql("select distinct threshold from ml.monitoring where metric = 'psi'") \
        == [(100.0,)]


def test_a_window_with_fewer_rows_than_min_rows_is_recorded_without_alerts(scored: Loans
                                                                         ) -> None:
    """One far-off row in a window of its own (found by an audit: a single row alerted on
    every feature): its statistics are stored with no rule, the run exits 0 and says why;
    monitor.min_rows decides how few is too few."""
    scored.replace_features(QUARTERLY)
    scored.sql("insert into main.loan_features select * replace (amount * 100 as amount, "
               "date '2030-01-01' as as_of) from main.loan_features where loan_id = 7")
    _monitor_spec(scored, "{time_column: as_of, window: quarter}")
    result = scored.pyml("monitor", "default_risk")
    assert result.exit_code == 0, result.output
    assert "[default_risk] fewer rows than monitor.min_rows (200) in 2030-Q1 (1): statistics " \
           "recorded, no alert (too few rows to tell drift from noise)" in result.output
    lone = scored.sql("select count(*), count(threshold), max(value) filter (where feature = "
                      "'amount' and metric = 'psi') from ml.monitoring where window_label = "
                      "'2030-Q1'")
    assert lone[0][0] > 0 and lone[0][1] == 0 and lone[0][2] > 0.2
    # At min_rows 1 the same window alerts (the other quarters, 750 rows each, do not).
    _monitor_spec(scored, "{time_column: as_of, window: quarter, min_rows: 1}")
    result = scored.pyml("monitor", "default_risk")
    assert result.exit_code == 2, result.output
    assert scored.sql("select distinct window_label from ml.monitoring where alert") == [
        ("2030-Q1",)]


def test_without_a_monitor_block_the_whole_relation_is_one_window(scored: Loans) -> None:
    result = scored.pyml("monitor")  # every model: binary, regression and multiclass
    assert result.exit_code == 0, result.output
    assert scored.sql("select distinct window_label, window_start, rows from ml.monitoring") == [
        ("all", None, 3000)]
    kinds = scored.sql("select model_name, list(distinct kind order by kind) from ml.monitoring "
                       "group by all order by all")
    assert kinds == [("default_risk", ["categorical", "model", "numeric", "prediction"]),
                     ("grade", ["categorical", "numeric", "prediction"]),
                     ("loss_amount", ["categorical", "numeric", "prediction"])]
    # The relation it was trained on: every drift statistic small, the prediction's too.
    [(worst,)] = scored.sql("select max(value) from ml.monitoring where metric = 'psi'")
    assert worst < 0.05


@pytest.mark.parametrize(("block", "message"), [
    ("{time_column: nope}", "monitor.time_column 'nope' is not a column of "
                            "main.loan_features; name its DATE or TIMESTAMP column "
                            "(e.g. the as-of date)"),
    ("{time_column: amount}", "monitor.time_column 'amount' of main.loan_features is DOUBLE; "
                              "it must be a DATE or TIMESTAMP column (cast it in the dbt "
                              "model)"),
    ("{thresholds: {psy: 0.3}}", "unknown metric 'monitor.thresholds.psy'; allowed: psi, "
                                 "unseen_share, null_share_change, wasserstein, "
                                 "jensen_shannon, ks, hellinger, linf, chi2"),
])
def test_spec_mistakes_are_one_line_and_write_nothing(scored: Loans, block: str,
                                                      message: str) -> None:
    scored.replace_features(QUARTERLY)
    _monitor_spec(scored, block)
    result = scored.pyml("monitor", "default_risk")
    assert error_line(result.output, result.exit_code).endswith(message)
    assert scored.sql("select count(*) from ml.monitoring") == [(0,)]  # created by train


@pytest.mark.parametrize(("change", "message"), [
    ("update main.loan_features set amount = 1e300 where loan_id = 1",
     "model 'default_risk' v1: feature 'amount' has 1 infinite or out-of-range values "
     "(|x| > 3.4e+38); clean them in the dbt model (e.g. NULL them) and retry"),
    ("delete from main.loan_features",
     "model 'default_risk' v1: main.loan_features has no rows to monitor (did `dbt build` "
     "run?)"),
])
def test_data_mistakes_are_one_line_and_write_nothing(scored: Loans, change: str,
                                                      message: str) -> None:
    scored.sql(change)
    result = scored.pyml("monitor", "default_risk")
    assert error_line(result.output, result.exit_code) == message
    assert scored.sql("select count(*) from ml.monitoring") == [(0,)]  # created by train


@pytest.mark.parametrize(("raw", "message"), [
    ({"time_column": "as_of", "window": "fortnight"},
     "monitor.window must be one of day, week, month, quarter, year, got 'fortnight'"),
    ({"window": "week"}, "monitor.window needs monitor.time_column (the DATE or TIMESTAMP "
                         "column the windows come from)"),
    ({"thresholds": {"psi": -1}}, "monitor.thresholds.psi must be a number >= 0 (or null for "
                                  "no alert), got -1"),
    ({"timecolumn": "as_of"}, "unknown key 'monitor.timecolumn'; allowed: time_column, "
                              "window, thresholds, min_rows"),
    ("quarterly", "'monitor' must be a mapping with keys time_column, window, thresholds, "
                  "min_rows"),
    ({"min_rows": 0}, "monitor.min_rows must be an integer of at least 1 (the fewest rows a "
                      "window alerts on), got 0"),
])
def test_monitor_key_mistakes_name_the_key(raw: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_monitor(raw, "schema.yml: model 'm'")
    assert str(caught.value) == f"schema.yml: model 'm': {message}"


def test_thresholds_override_the_defaults_and_null_removes_a_rule() -> None:
    spec = parse_monitor({"thresholds": {"psi": 0.3, "wasserstein": None, "ks": 0.05}}, "w")
    assert (spec.threshold("psi"), spec.threshold("wasserstein"), spec.threshold("ks"),
            spec.threshold("jensen_shannon"), spec.threshold("chi2_p")) == (0.3, None, 0.05,
                                                                            None, None)
    spec = parse_monitor({"thresholds": {"wasserstein": 0.1}}, "w")
    assert (spec.threshold("psi"), spec.threshold("wasserstein")) == (0.2, 0.1)


@settings(max_examples=40, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31)),
       window=st.sampled_from(WINDOWS))
def test_every_moment_falls_in_the_window_its_label_names(moment: datetime,
                                                          window: str) -> None:
    """A row's window (label, start, end) from DuckDB agrees with Python's calendar: start <=
    moment < end, and the label is the start's day, ISO week, month, quarter or year."""
    label_sql, start_sql, end_sql = window_sql(window, "t")
    label, start, end = duckdb.execute(f"select {label_sql}, {start_sql}, {end_sql} from "
                                       "(select ?::timestamp as t)", [moment]).fetchall()[0]
    assert start <= moment < end
    year, week, _ = start.isocalendar()
    assert label == {"day": start.strftime("%Y-%m-%d"), "week": f"{year}-W{week:02d}",
                     "month": start.strftime("%Y-%m"),
                     "quarter": f"{start.year}-Q{(start.month - 1) // 3 + 1}",
                     "year": str(start.year)}[window]
    assert (start.weekday() == 0 if window == "week" else start.day == 1 or window == "day")
