"""Label-free performance estimates (CBPE, pyml.modelling.cbpe) and ml.calibrators.

The promise of issue 18: under covariate shift, the estimated ROC AUC of a window tracks the
realised one within 0.02. Besides that: the expected confusion matrix and expected AUC are
the quantities NannyML defines (computed here again, independently, by their definitions),
the stored calibrator is exactly scikit-learn's isotonic regression, perfectly calibrated
probabilities give an unbiased accuracy estimate, and `pyml train` stores a calibrator for a
binary version only.
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

from pyml.modelling.cbpe import (
    Calibrator,
    expected_roc_auc,
    fit_calibrator,
    window_performance,
)
from pyml.store.calibrators import load_calibrator
from pyml.store.final_fit import evaluated_booster
from pyml.store.registry import load_version
from pyml.store.schema import ensure_schema
from tests.conftest import Loans
from tests.support import hand_matrix

IDENTITY = (0.0, 1.0)  # x = y: probabilities taken as calibrated


def _shifted(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows with x1 ~ N(shift, 1), x2 ~ N(0, 1) and the same P(y | x) whatever the shift."""
    x1, x2 = rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)
    logit = -0.5 + 1.2 * x1 - 0.6 * x1 ** 2 + 0.8 * x2
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    return np.column_stack([x1, x2]), y


def test_estimated_auc_tracks_realised_auc_under_covariate_shift() -> None:
    """For the evaluated booster, and for a refit on train + holdout (final_fit: refit,
    10/6 times the rounds) estimated through the evaluated booster's calibrated
    probabilities (`evaluated_prob`)."""
    rng = np.random.default_rng(0)
    X, y = _shifted(rng, 6000, 0.0)
    X_hold, y_hold = _shifted(rng, 4000, 0.0)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(X, y), num_boost_round=100)
    refit = xgb.train(params, xgb.DMatrix(np.vstack([X, X_hold]), np.r_[y, y_hold]),
                      num_boost_round=167)
    cal = fit_calibrator(booster.inplace_predict(X_hold).astype(np.float64), y_hold, 0.5)
    realised = []
    for shift in (0.0, 0.5, 1.0, 1.5):
        W, y_w = _shifted(rng, 20000, shift)
        evaluated = booster.inplace_predict(W).astype(np.float64)
        for prob, bridge in ((evaluated, None),
                             (refit.inplace_predict(W).astype(np.float64), evaluated)):
            # The estimate sees no label; the realised metric sees them all.
            est = window_performance(prob, None, cal, 0.5, evaluated_prob=bridge)
            real = window_performance(prob, y_w, None, 0.5)
            assert "realised_roc_auc" not in est and "estimated_roc_auc" not in real
            realised.append(real["realised_roc_auc"])
            assert abs(est["estimated_roc_auc"] - real["realised_roc_auc"]) <= 0.02, shift
            assert abs(est["estimated_accuracy"] - real["realised_accuracy"]) <= 0.02, shift
    # The shift moves the AUC by more than the tolerance: tracking it is not trivial.
    assert max(realised) - min(realised) > 0.04


def _nannyml_roc_auc(calibrated: np.ndarray, prob: np.ndarray) -> float:
    """NannyML's estimate_roc_auc (nannyml/performance_estimation/confidence_based/
    metrics.py), transcribed: rows by descending model score, cumulative expected TP and FP
    from (0, 0), scikit-learn's trapezoid `auc` (NannyML also rounds the cumulative counts
    to 5 decimals; left out here, so the two agree to 1e-9, not 1e-5)."""
    order = np.argsort(prob)[::-1]
    c = calibrated[order]
    tps = np.r_[0, np.cumsum(c)]
    fps = np.r_[0, 1 + np.arange(len(c)) - np.cumsum(c)]
    return float(skm.auc(fps / fps[-1], tps / tps[-1]))


def _pairwise_auc(c: np.ndarray, score: np.ndarray) -> float:
    """Expected concordant pairs (ties in the score, and i = j, at half weight) over
    expected positive-negative pairs."""
    n = len(c)
    num = sum(c[i] * (1 - c[j]) * (1.0 if score[i] > score[j] else
                                   0.5 if score[i] == score[j] else 0.0)
              for i in range(n) for j in range(n))
    return float(num / (c.sum() * (1 - c).sum()))


def test_expected_quantities_match_their_definitions() -> None:
    rng = np.random.default_rng(3)
    prob = np.round(rng.uniform(size=60), 1)  # ties on purpose
    label = (rng.uniform(size=60) < prob).astype(np.float64)
    cal = fit_calibrator(prob, label, 0.4)
    c = cal.apply(prob)
    out = window_performance(prob, None, cal, 0.4)
    tp = sum(ci for ci, pi in zip(c, prob, strict=True) if pi >= 0.4)
    fp = sum(1 - ci for ci, pi in zip(c, prob, strict=True) if pi >= 0.4)
    fn = sum(ci for ci, pi in zip(c, prob, strict=True) if pi < 0.4)
    tn = sum(1 - ci for ci, pi in zip(c, prob, strict=True) if pi < 0.4)
    for key, want in (("expected_tp", tp), ("expected_fp", fp), ("expected_fn", fn),
                      ("expected_tn", tn), ("estimated_accuracy", (tp + tn) / 60),
                      ("estimated_precision", tp / (tp + fp)),
                      ("estimated_recall", tp / (tp + fn)),
                      ("estimated_f1", tp / (tp + 0.5 * (fp + fn)))):
        assert out[key] == pytest.approx(want, abs=1e-9), key
    # AUC: expected concordant pairs (ties and i = j at half weight) over expected pairs.
    assert out["estimated_roc_auc"] == pytest.approx(_pairwise_auc(c, prob), abs=1e-9)
    assert out["estimated_roc_auc"] == pytest.approx(_nannyml_roc_auc(c, prob), abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 40), threshold=st.floats(0.05, 0.95))
def test_a_refit_is_estimated_through_the_evaluated_fits_chances(seed: int, n: int,
                                                                threshold: float) -> None:
    """With evaluated_prob, each row's chance is the calibrated evaluated probability, while
    the serving probability decides the class and the ranking (its own ties too)."""
    rng = np.random.default_rng(seed)
    prob = np.round(rng.uniform(size=n), 1)  # the refit's, with ties
    evaluated = rng.uniform(size=n)
    cal = Calibrator((0.2, 0.8), (0.1, 0.7), threshold, 0)
    out = window_performance(prob, None, cal, threshold, evaluated_prob=evaluated)
    c = np.interp(evaluated, (0.2, 0.8), (0.1, 0.7))
    hit = prob >= threshold
    assert out["expected_tp"] == pytest.approx(c[hit].sum(), abs=1e-9)
    assert out["expected_tn"] == pytest.approx((1 - c[~hit]).sum(), abs=1e-9)
    assert out["estimated_roc_auc"] == pytest.approx(_pairwise_auc(c, prob), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(2, 300), decimals=st.integers(1, 6))
def test_stored_calibrator_is_sklearn_isotonic(seed: int, n: int, decimals: int) -> None:
    """The breakpoints, interpolated, are IsotonicRegression.predict exactly, in and out of
    the fitted range; on the fitted rows, expected positives = observed positives (PAV)."""
    rng = np.random.default_rng(seed)
    prob = np.round(rng.uniform(size=n), decimals)
    label = (rng.uniform(size=n) < prob).astype(np.float64)
    label[:2] = (0.0, 1.0)
    cal = fit_calibrator(prob, label)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(prob, label)
    query = np.concatenate([prob, rng.uniform(size=50), [0.0, 1.0]])
    assert np.abs(cal.apply(query) - iso.predict(query)).max() <= 1e-12
    assert all(a <= b for a, b in zip(cal.y, cal.y[1:], strict=False))
    out = window_performance(prob, label, cal, 0.5)
    assert out["expected_tp"] + out["expected_fn"] == pytest.approx(label.sum(), abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(20, 400),
       threshold=st.floats(0.05, 0.95))
def test_calibrated_estimate_is_the_mean_of_realised_metrics(seed: int, n: int,
                                                            threshold: float) -> None:
    """Perfectly calibrated probabilities, labels drawn Bernoulli(p) many times: the
    estimated accuracy and expected TP are the means of the realised ones (5 standard
    errors)."""
    rng = np.random.default_rng(seed)
    prob = rng.beta(0.7, 0.7, size=n)
    cal = Calibrator(IDENTITY, IDENTITY, threshold, 0)
    est = window_performance(prob, None, cal, threshold)
    draws = 400
    labels = rng.uniform(size=(draws, n)) < prob
    hit = prob >= threshold
    accuracy = (labels == hit).mean(axis=1)
    tp = (labels & hit).sum(axis=1)
    q = np.where(hit, prob, 1 - prob)  # chance each row is right
    se_acc = math.sqrt((q * (1 - q)).sum() / n ** 2 / draws)
    se_tp = math.sqrt((prob * (1 - prob))[hit].sum() / draws)
    assert abs(accuracy.mean() - est["estimated_accuracy"]) <= 5 * se_acc + 1e-12
    assert abs(tp.mean() - est["expected_tp"]) <= 5 * se_tp + 1e-12


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 200),
       threshold=st.floats(0.01, 0.99), unknown=st.floats(0.0, 1.0))
def test_realised_metrics_are_sklearns_on_the_labelled_rows(seed: int, n: int,
                                                            threshold: float,
                                                            unknown: float) -> None:
    rng = np.random.default_rng(seed)
    prob = np.round(rng.uniform(size=n), 2)
    label = (rng.uniform(size=n) < prob).astype(np.float64)
    label[rng.uniform(size=n) < unknown] = np.nan
    out = window_performance(prob, label, None, threshold)
    known = ~np.isnan(label)
    y, hit = label[known].astype(int), prob[known] >= threshold
    assert out["labelled_rows"] == known.sum()
    if len(np.unique(y)) < 2:
        assert not any(k.startswith("realised") for k in out)
        return
    want = {"realised_roc_auc": skm.roc_auc_score(y, prob[known]),
            "realised_accuracy": skm.accuracy_score(y, hit),
            "realised_recall": skm.recall_score(y, hit),
            "realised_f1": skm.f1_score(y, hit)}
    if hit.any():
        want["realised_precision"] = skm.precision_score(y, hit)
    assert {k: v for k, v in out.items() if k.startswith("realised")} == pytest.approx(
        want, abs=1e-12)


def test_window_edge_cases() -> None:
    prob = np.array([0.1, 0.4, 0.6, 0.9])
    cal = Calibrator(IDENTITY, IDENTITY, 0.5, 0)
    # Labels partly known, both classes: realised on the 2 labelled rows only.
    out = window_performance(prob, np.array([0.0, np.nan, np.nan, 1.0]), cal, 0.5)
    assert out["labelled_rows"] == 2 and out["realised_roc_auc"] == 1.0
    assert out["realised_accuracy"] == 1.0
    # One class among the labels: no realised metric at all.
    out = window_performance(prob, np.array([1.0, np.nan, 1.0, 1.0]), cal, 0.5)
    assert out["labelled_rows"] == 3 and not any(k.startswith("realised") for k in out)
    # No calibrator (a version trained before ml.calibrators): no estimate.
    out = window_performance(prob, np.array([0.0, 1.0, 0.0, 1.0]), None, 0.5)
    assert not any(k.startswith(("estimated", "expected")) for k in out)
    assert "realised_precision" in out
    # Nothing predicted positive: precision is undefined, left out (never 0).
    out = window_performance(prob, np.array([0.0, 1.0, 0.0, 1.0]), cal, 0.95)
    assert "estimated_precision" not in out and "realised_precision" not in out
    assert out["estimated_recall"] == 0.0
    # An empty window: only the count.
    assert window_performance(np.array([]), np.array([]), cal, 0.5) == {"labelled_rows": 0.0}
    assert math.isnan(expected_roc_auc(np.array([1.0, 1.0])))
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator(prob, np.ones(4))
    with pytest.raises(ValueError, match="probabilities"):
        window_performance(np.array([0.5, np.nan]), None, cal, 0.5)


def test_training_stores_a_calibrator_for_binary_versions_only(scored: Loans) -> None:
    rows = scored.sql("select c.model_name, c.version, c.threshold, c.fitted_rows, "
                      "m.test_rows, len(c.x), len(c.y) from ml.calibrators c "
                      "join ml.models m using (model_name, version)")
    assert len(rows) == 1
    name, version, threshold, fitted, test_rows, nx, ny = rows[0]
    assert (name, version, threshold, fitted) == ("default_risk", 1, 0.5, test_rows)
    assert nx == ny >= 2
    con = duckdb.connect(str(scored.db), read_only=True)
    try:
        cal = load_calibrator(con, "default_risk", 1)
        assert cal is not None and list(cal.x) == sorted(cal.x)
        assert min(cal.y) >= 0.0 and max(cal.y) <= 1.0
        # Multiclass, regression: none.
        assert load_calibrator(con, "grade", 1) is None
        assert load_calibrator(con, "loss_amount", 1) is None
    finally:
        con.close()


def test_old_registry_without_calibrators(scored: Loans) -> None:
    """A registry from before ml.calibrators: no calibrator (so no estimate), and the
    table is created by the next schema check without touching the versions."""
    scored.sql("drop table ml.calibrators")
    con = duckdb.connect(str(scored.db))
    try:
        assert load_calibrator(con, "default_risk", 1) is None
        ensure_schema(con)
        assert load_calibrator(con, "default_risk", 1) is None
        assert con.execute("select count(*) from ml.models").fetchone() == (3,)
    finally:
        con.close()


def test_pyml_monitor_writes_estimated_and_realised_performance(scored: Loans) -> None:
    """End to end: two quarters, the second the high-income half (a covariate shift) whose
    labels are not known yet. ml.monitoring's __model__ rows are window_performance of the
    champion's probabilities (as `pyml score` wrote them), the labels where known, the
    stored calibrator and, the champion being a refit, the evaluated fit's probabilities
    (computed here from a hand-built matrix): estimates in both windows, realised metrics
    only where labelled."""
    scored.replace_features(
        "select *, case when income <= (select median(income) from main.old_features) "
        "then date '2024-01-15' else date '2024-04-15' end as as_of_date")
    scored.sql("update main.loan_features set defaulted = null "
               "where as_of_date >= date '2024-04-01'")
    text = (scored.dir / "models" / "schema.yml").read_text()
    entry = "            exclude: [loss, grade]\n"
    assert text.count(entry) == 1
    scored.write_schema(text.replace(entry, "            exclude: [loss, grade, as_of_date]\n"
                                     "            monitor: {time_column: as_of_date, "
                                     "window: quarter}\n"))
    result = scored.pyml("monitor", "default_risk", "grade", "loss_amount")
    assert result.exit_code in (0, 2), result.output + repr(result.exception)
    # Multiclass and regression: monitored, but no performance estimate (no calibrator).
    assert scored.sql("select distinct model_name from ml.monitoring where feature = "
                      "'__model__'") == [("default_risk",)]
    assert {m for (m,) in scored.sql("select distinct model_name from ml.monitoring")} == {
        "default_risk", "grade", "loss_amount"}
    got: dict[str, dict[str, float]] = {}
    for window, metric, value in scored.sql(
            "select window_label, metric, value from ml.monitoring where model_name = "
            "'default_risk' and feature = '__model__'"):
        got.setdefault(window, {})[metric] = value
    assert sorted(got) == ["2024-Q1", "2024-Q2"]
    frame = scored.df("select f.*, p.probability from ml.default_risk_predictions p "
                      "join main.loan_features f using (loan_id) order by loan_id")
    con = duckdb.connect(str(scored.db), read_only=True)
    try:
        cal = load_calibrator(con, "default_risk", 1)
        stored = load_version(con, "default_risk", 1)
        evaluated = evaluated_booster(con, "default_risk", 1)
    finally:
        con.close()
    assert cal is not None and evaluated is not None  # the champion is a refit
    dm = xgb.DMatrix(hand_matrix(stored.features, frame), feature_names=evaluated.feature_names,
                     feature_types=evaluated.feature_types, enable_categorical=True)
    frame["evaluated"] = evaluated.predict(dm).astype(np.float64)
    for window, month in (("2024-Q1", 1), ("2024-Q2", 4)):
        part = frame[frame.as_of_date.dt.month == month]
        prob = part.probability.to_numpy(np.float64)
        label = part.defaulted.astype("float64").to_numpy()
        want = window_performance(prob, label, cal, 0.5,
                                  evaluated_prob=part.evaluated.to_numpy())
        assert got[window] == pytest.approx(want, rel=1e-6, abs=1e-6), window
        # Calibrating the refit's own probabilities would be another (optimistic) answer.
        other = window_performance(prob, label, cal, 0.5)
        assert abs(other["expected_tp"] - want["expected_tp"]) > 1e-3
    assert got["2024-Q1"]["labelled_rows"] > 0 and "realised_roc_auc" in got["2024-Q1"]
    assert got["2024-Q2"]["labelled_rows"] == 0
    assert not any(m.startswith("realised") for m in got["2024-Q2"])
    assert "estimated_roc_auc" in got["2024-Q2"]
