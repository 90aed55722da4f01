"""`pyml profile` and the leakage / sanity checks (`pyml train` refuses a label leak)."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from pyml.data.encode import Feature
from pyml.engines.duckdb import quote
from pyml.modelling.checks import presence_sql

from .conftest import SCHEMA_YML, Loans

WHERE = "models/schema.yml: model 'default_risk' on model.loans.loan_features"


def test_profile_of_a_pyml_model(loans: Loans) -> None:
    out = loans.ok("profile", "default_risk").output
    assert out.splitlines()[0] == ("main.loan_features: 3,000 rows, 8 columns against "
                                   "'defaulted' (binary) -> ml.profile_loan_features")
    assert "No warnings." in out
    rows = {r[0]: r[1:] for r in loans.sql(
        "select column_name, data_type, role, null_rate, distinct_count, mean, outlier_share, "
        "top_categories, target_auc, mutual_info, target from ml.profile_loan_features")}
    assert set(rows) == {"loan_id", "region", "amount", "income", "term_months", "grade",
                         "defaulted", "loss"}
    assert [rows[c][1] for c in ("loan_id", "region", "loss", "defaulted")] == [
        "key", "feature", "excluded", "target"]
    assert rows["income"][2] == pytest.approx(60 / 3000)  # the generator blanks n // 50
    truth = loans.sql("select count(*) filter (where region is null) / count(*), "
                      "count(distinct region), avg(amount) from main.loan_features")[0]
    assert rows["region"][2] == pytest.approx(truth[0]) and rows["region"][3] == truth[1]
    assert rows["amount"][4] == pytest.approx(truth[2])
    assert rows["region"][6].startswith("north (30%), south (")
    assert 0 <= rows["amount"][5] < 0.2 and rows["term_months"][5] == 0.0
    frame = loans.df("select amount, term_months, defaulted from main.loan_features")
    assert rows["amount"][7] == pytest.approx(roc_auc_score(frame.defaulted, frame.amount))
    assert rows["term_months"][7] == pytest.approx(
        roc_auc_score(frame.defaulted, frame.term_months))
    assert rows["amount"][8] > 0 and rows["defaulted"][7] is None
    assert {r[9] for r in rows.values()} == {"defaulted"}


def test_several_targets_need_a_choice(loans: Loans) -> None:
    result = loans.pyml("profile", "loan_features")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: main.loan_features declares pyml models with different targets "
        "(default_risk: defaulted, loss_amount: loss, grade: grade); give a target column, "
        "or name one pyml model (e.g. `pyml profile default_risk`)")
    out = loans.ok("profile", "loan_features", "--target-column", "loss").output
    assert "against 'loss' (regression)" in out and "spearman" in out.splitlines()[2]
    rho = loans.sql("select target_spearman from ml.profile_loan_features where "
                    "column_name = 'amount'")[0][0]
    frame = loans.df("select amount, loss from main.loan_features")
    assert rho == pytest.approx(spearmanr(frame.amount, frame.loss).statistic, abs=1e-9)


def test_warnings_name_the_column_and_train_refuses_a_leak(loans: Loans) -> None:
    loans.replace_features(
        "select *, 7 as constant_flag, null::double as empty_score, "
        "loan_id * 2 + 1 as loan_ref, 'L-' || loan_id as loan_code, "
        "case when loan_id % 200 = 0 then not defaulted else defaulted end::int as "
        "charged_off_flag")
    loans.sql("insert into main.loan_features select * from main.loan_features "
              "where loan_id <= 5")
    out = loans.ok("profile", "default_risk").output
    warnings = [line.strip()[2:] for line in out.splitlines() if line.startswith("  - ")]
    flagged = {w.split(":")[0] for w in warnings}
    assert flagged == {"constant_flag", "empty_score", "loan_ref", "loan_code",
                       "charged_off_flag", "loan_id"}, warnings
    assert any(w.startswith("charged_off_flag: alone predicts 'defaulted' almost perfectly "
                            "(univariate AUC 0.99") for w in warnings)
    assert "loan_id: 5 rows repeat a key already seen" in out
    stored = dict(loans.sql("select column_name, warnings from ml.profile_loan_features "
                            "where warnings is not null"))
    assert "near-linear function of key column 'loan_id'" in stored["loan_ref"]

    # Training refuses the repeated keys first (pyml score could not write them): drop them.
    result = loans.pyml("train", "default_risk")
    assert result.exit_code == 1 and "has 5 duplicate keys (loan_id)" in result.output
    loans.sql("create or replace table main.loan_features as select distinct * from "
              "main.loan_features")
    result = loans.pyml("train", "default_risk")
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith(f"Error: {WHERE}: feature 'charged_off_flag' alone predicts "
                              "'defaulted' almost perfectly (univariate AUC 0.99")
    assert message.endswith(
        "): refusing to train on a probable label leak; add it to 'exclude', or set "
        "`allow_leakage: true` in the spec if the column is legitimately known before the "
        "outcome")
    assert loans.sql("select count(*) from information_schema.tables where table_schema = "
                     "'ml' and table_name = 'models'") == [(0,)]

    loans.write_schema(SCHEMA_YML.replace("            exclude: [loss, grade]\n",
                                          "            exclude: [loss, grade]\n"
                                          "            allow_leakage: true\n", 1))
    out = loans.ok("train", "default_risk").output
    assert "warning (allow_leakage: true): charged_off_flag: alone predicts" in out
    assert "warning: constant_flag: has a single value in every row" in out


def test_minority_target_is_flagged(loans: Loans) -> None:
    loans.replace_features("select *, loan_id <= 20 as is_fraud")
    out = loans.ok("profile", "loan_features", "--target-column", "is_fraud").output
    assert "against 'is_fraud' (binary)" in out
    assert "is_fraud: minority class true is 0.67% of labelled rows (20)" in out


KNOWN_LATER = ("select * replace (case when loan_id % 10 = 0 then null else defaulted end as "
               "defaulted), case when loan_id % 10 = 0 then null else amount * 0.3 end as "
               "recovered")


def test_a_feature_known_only_with_the_label_trains_with_allow_leakage(scored: Loans) -> None:
    """The refusal (tests/test_bad_inputs.py) gives way to `allow_leakage: true`, with the
    finding as a warning."""
    scored.replace_features(KNOWN_LATER)
    scored.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n            allow_leakage: true\n", 1))
    out = scored.ok("train", "default_risk").output
    assert ("[default_risk] warning (allow_leakage: true): recovered: is present in 100% of "
            "the 2,700 rows with 'defaulted' but in 0% of the 300 rows without it") in out


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from([None, float("nan"), 0.0, -1.5]),
                               st.sampled_from([None, "", "a"]), st.booleans()),
                     min_size=1, max_size=60))
def test_presence_counts_take_null_and_nan_as_missing(
        rows: list[tuple[float | None, str | None, bool]]) -> None:
    """presence_sql, run by DuckDB, counts what the model reads as present: a number that
    is neither NULL nor NaN, a category that is not NULL ('' is a category)."""
    con = duckdb.connect()
    con.execute("create table t (x double, c varchar, labelled boolean)")
    con.executemany("insert into t values (?, ?, ?)", rows)
    features = [Feature("x", "numeric", "DOUBLE"), Feature("c", "categorical", "VARCHAR")]
    got = con.execute(f"select {', '.join(presence_sql(features, quote, 'labelled'))} "
                      "from t").fetchall()[0]
    con.close()
    assert got == (sum(1 for x, _, ok in rows if ok and x is not None and x == x),
                   sum(1 for _, c, ok in rows if ok and c is not None))


def test_one_value_or_null_is_no_constant() -> None:
    """A column of 'complained' or NULL predicted the target with AUC 0.82, and the profile
    said it "has a single value in every row ... exclude it" (an audit)."""
    from pyml.modelling.checks import column_findings

    found = column_findings(["flag", "same", "empty"], [40, 0, 100], [1, 1, 0], 100)
    assert [(f.check, f.column) for f in found] == [("constant", "same"), ("all_null", "empty")]
