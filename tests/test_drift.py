"""Training snapshots and `pyml drift` on the lending project."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyml
from pyml.data.encode import Feature
from pyml.errors import DriftDetected
from pyml.modelling.drift_stats import Counter, psi, snapshot

from .conftest import FEATURES, SCHEMA_YML, Loans
from .support import error_line


def test_a_sample_compared_with_itself_has_no_drift() -> None:
    rng = np.random.default_rng(0)
    amount = np.round(rng.lognormal(9, 0.6, 5000), 2)
    amount[::40] = np.nan
    region = rng.integers(0, 3, 5000).astype(float)
    region[::25] = np.nan
    X = np.column_stack([amount, region]).astype(np.float32)
    feats = [Feature("amount", "numeric", "DOUBLE"),
             Feature("region", "categorical", "VARCHAR", ("east", "north", "south"))]
    snaps = snapshot(feats, X)
    assert len(snaps[0].bin_edges) == 9 and sum(snaps[0].bin_counts) == 5000 - 125
    same = [Counter(s) for s in snaps]
    same[0].add(pa.array(np.where(np.isnan(amount), None, amount).tolist(), pa.float64()))
    labels = np.array(["east", "north", "south"], dtype=object)
    text = [None if np.isnan(v) else labels[int(v)] for v in region]
    same[1].add(pa.array(text, pa.string()))
    got = [c.result() for c in same]
    assert got[0].psi == 0.0 and got[0].ks == 0.0  # the same float32 bins on both sides
    assert got[1].psi == 0.0 and got[1].unseen_share == 0.0
    assert got[0].null_share_now == got[0].null_share_train == 125 / 5000
    assert psi(np.array([50.0, 50.0]), np.array([10.0, 90.0])) == pytest.approx(
        0.4 * np.log(9) * 2 / 2, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.just(float("nan")),
                                 st.floats(-1e6, 1e6, allow_nan=False)), min_size=1,
                       max_size=300),
       nan_as_null=st.lists(st.booleans(), min_size=300, max_size=300),
       split=st.integers(1, 299))
def test_missing_is_missing_whether_null_or_nan(values: list[float | None],
                                                nan_as_null: list[bool], split: int) -> None:
    """The relation compared with its own training rows drifts by exactly nothing, however
    its missing values come (NULL or NaN, mixed, in any batches): the model and the snapshot
    read both as missing. (An audit found NaN dropped from the bins but kept in KS's
    denominator: PSI 0.004 for 0.054, KS 0.065 for 0.016, null share 2.8% for 9.1%.)"""
    X = np.array([[np.nan if v is None else v] for v in values], dtype=np.float32)
    [snap] = snapshot([Feature("x", "numeric", "DOUBLE")], X)
    counter = Counter(snap)
    sent = [None if v is None or (v != v and nan_as_null[i]) else v
            for i, v in enumerate(values)]
    for part in (sent[:split], sent[split:]):
        counter.add(pa.array(part, pa.float64()))
    got = counter.result()
    assert got.psi == 0.0 and got.null_share_now == got.null_share_train
    assert got.ks in (None, 0.0)


def test_snapshot_is_stored_per_feature(scored: Loans) -> None:
    rows = scored.sql("select feature, kind, n_rows, null_count, bin_edges, bin_counts, "
                      "categories from ml.training_snapshots where model_name = "
                      "'default_risk' and version = 1 order by feature")
    assert [r[0] for r in rows] == sorted(FEATURES)
    train_rows = scored.sql("select train_rows from ml.models where model_name = "
                            "'default_risk'")[0][0]
    for feature, kind, n, nulls, edges, counts, cats in rows:
        assert n == train_rows
        assert sum(json.loads(counts)) + nulls == n, feature
        if kind == "categorical":
            assert json.loads(cats) == ["east", "north", "south", "west"]
        else:
            assert len(json.loads(counts)) == len(json.loads(edges)) + 1


def test_drift_on_unchanged_data_exits_0(scored: Loans) -> None:
    out = scored.ok("drift", "default_risk").output
    assert "PSI threshold 0.2" in out and "DRIFT" not in out
    # A verdict line either way (none was printed when nothing drifted).
    assert out.splitlines()[-1] == ("default_risk: no drift: every feature's PSI is at or "
                                    "below 0.2")
    rows = scored.sql("select feature, metric, value, relation from ml.drift")
    metrics = {(f, m): v for f, m, v, _ in rows}
    assert {f for f, _ in metrics} == set(FEATURES)
    assert all(metrics[(f, "psi")] < 0.05 for f in FEATURES)
    assert metrics[("region", "unseen_share")] == 0.0
    assert ("region", "ks") not in metrics and ("amount", "ks") in metrics
    assert metrics[("income", "null_share_now")] == pytest.approx(60 / 3000)
    assert {r[3] for r in rows} == {"main.loan_features"}


def test_shifted_feature_exits_2_naming_only_it(scored: Loans) -> None:
    scored.replace_features("select * replace (amount * 3 as amount, "
                            "case when region = 'west' then 'far_west' else region end "
                            "as region)")
    result = scored.pyml("drift", "default_risk")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    drifted = [line for line in result.output.splitlines() if line.endswith("DRIFT")]
    assert sorted(line.split()[0] for line in drifted) == ["amount", "region"]
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("Drift above the threshold in default_risk: ")
    assert "amount (PSI" in summary and "region (PSI" in summary and "income" not in summary
    psi_now = dict(scored.sql("select feature, value from ml.drift where metric = 'psi'"))
    assert psi_now["amount"] > 1 and psi_now["income"] < 0.05
    unseen = scored.sql("select value from ml.drift where feature = 'region' and "
                        "metric = 'unseen_share'")[0][0]
    assert unseen == pytest.approx(scored.sql(
        "select count(*) filter (where region = 'far_west') / count(*) "
        "from main.loan_features")[0][0])
    # A higher threshold (flag or spec) accepts the shift; each check is appended.
    assert scored.pyml("drift", "default_risk", "--threshold", "100").exit_code == 0
    assert scored.sql("select count(*) from ml.drift where metric = 'psi'") == [
        (2 * len(FEATURES),)]


def test_drift_threshold_from_the_spec(scored: Loans) -> None:
    scored.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n            drift_threshold: 0.000001\n", 1))
    result = scored.pyml("drift", "default_risk")
    assert result.exit_code == 2 and "PSI threshold 1e-06" in result.output
    assert "default_risk: 4 of 4 features drifted (PSI above 1e-06): " in result.output


def test_model_without_snapshot_is_a_clear_error(scored: Loans) -> None:
    scored.sql("delete from ml.training_snapshots where model_name = 'default_risk'")
    result = scored.pyml("drift", "default_risk")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: model 'default_risk' v1 has no training snapshot (it was trained before pyml "
        "stored them): retrain it with `pyml train default_risk`, then rerun `pyml drift`")


def test_the_library_decides_drift_and_its_exit_code(scored: Loans) -> None:
    """`pyml drift`'s exit code 2 comes from the library (DriftDetected.exit_code), raised
    after the results are written; without fail_on_drift the results are just returned."""
    scored.replace_features("select * replace (amount * 3 as amount)")
    where = {"project_dir": scored.dir, "profiles_dir": scored.dir}
    [result] = pyml.drift(["default_risk"], **where)
    assert [f.feature for f in result.drifted] == ["amount"]
    with pytest.raises(DriftDetected) as caught:
        pyml.drift(["default_risk"], fail_on_drift=True, **where)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("Drift above the threshold in default_risk: amount (PSI ")
    assert [r.name for r in caught.value.results] == ["default_risk"]
    assert scored.sql("select count(*) from ml.drift where metric = 'psi'") == [
        (2 * len(FEATURES),)]


def test_values_beyond_float32_are_refused_as_pyml_score_refuses_them(scored: Loans) -> None:
    """XGBoost cannot read them, so `pyml score` refuses the relation; drift did not, and
    binned them as infinities (found by an audit). Nothing is appended to ml.drift."""
    scored.sql("update main.loan_features set amount = 1e300 where loan_id % 10 = 0")
    result = scored.pyml("drift", "default_risk")
    message = ("model 'default_risk' v1: feature 'amount' has 300 infinite or out-of-range "
               "values (|x| > 3.4e+38); clean them in the dbt model (e.g. NULL them) and retry")
    assert error_line(result.output, result.exit_code) == message
    assert scored.sql("select count(*) from ml.drift") == [(0,)]
    result = scored.pyml("score", "default_risk")
    assert error_line(result.output, result.exit_code) == message
