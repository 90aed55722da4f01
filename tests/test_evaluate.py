"""Evaluation stored by `pyml train`: metrics with bootstrap intervals, cross-validation,
calibration, lift, curves and mean |SHAP| importance, on the lending project."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from pyml.modelling import bootstrap
from pyml.modelling.evaluate import calibration, canonical_order, lift
from pyml.modelling.metrics import evaluate, label_base

from .conftest import FEATURES, SCHEMA_YML, Loans

BINARY = {"auc", "pr_auc", "log_loss", "brier", "accuracy", "precision", "recall", "f1",
          "best_f1", "best_f1_threshold", "positive_rate"}


# --- the bootstrap is the metric of the resampled rows ------------------------------------

def _data(n: int = 400) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(3)
    y = (rng.random(n) < 0.3).astype(float)
    p = np.round(np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1), 2)  # ties
    yr = rng.normal(5, 2, n)
    ym = rng.integers(0, 3, n).astype(float)
    pm = rng.dirichlet([1, 1, 1], n)
    return y, p, yr, yr + rng.normal(0, 1, n), ym, pm


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_metrics_equal_sklearn_on_the_resampled_rows(seed: int) -> None:
    y, p, yr, pr, ym, pm = _data()
    rows = np.random.default_rng(seed).integers(0, len(y), len(y))
    w = np.bincount(rows, minlength=len(y)).astype(float)
    for task, yy, pp in (("binary", y, p), ("regression", yr, pr), ("multiclass", ym, pm)):
        expected = {m.name: m.value for m in evaluate(task, yy[rows], pp[rows],
                                                         label_base(task, yy, 3), 0.4)}
        got = bootstrap.metric_function(task, yy, pp, 0.4)(w)
        assert set(expected) <= set(got)
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-12), (task, name)


def test_intervals_are_seeded_and_cover_the_estimate() -> None:
    y, p, *_ = _data()
    fn = bootstrap.binary_metrics(y, p, 0.5)
    first = bootstrap.intervals(fn, len(y))
    assert first == bootstrap.intervals(fn, len(y))
    auc = skm.roc_auc_score(y, p)
    assert first["auc"][0] < auc < first["auc"][1]
    assert 0.02 < first["auc"][1] - first["auc"][0] < 0.2


def test_calibration_and_lift_tables() -> None:
    y, p, *_ = _data()
    bins = calibration(y, p)
    assert sum(b[5] for b in bins) == len(y)
    assert all(lo <= mean <= hi for _, lo, hi, mean, _, _ in bins)
    deciles = lift(y, p)
    assert [d[0] for d in deciles] == list(range(1, 11))
    assert deciles[-1][3] == pytest.approx(1.0) and deciles[-1][4] == pytest.approx(1.0)
    captures = [d[3] for d in deciles]
    assert captures == sorted(captures)


# --- what `pyml train` stores ---------------------------------------------------------------

def test_holdout_metrics_have_intervals_and_baselines(scored: Loans) -> None:
    rows = scored.sql("select metric, value, baseline, ci_low, ci_high, n_rows from ml.metrics "
                      "where model_name = 'default_risk' and split = 'holdout'")
    by = {r[0]: r[1:] for r in rows}
    assert set(by) == BINARY
    for name, (value, _, lo, hi, _) in by.items():
        assert lo is not None and hi is not None, name
        assert lo <= value + 1e-12 and value <= hi + 1e-12, name
    assert by["auc"][1] == 0.5 and by["auc"][0] > 0.6
    assert by["brier"][0] < by["brier"][1]  # beats the prior
    assert 0 < by["best_f1_threshold"][0] < 1
    holdout = scored.sql("select test_rows from ml.models where model_name = 'default_risk'")
    assert {r[5] for r in rows} == {holdout[0][0]}
    reg = {r[0] for r in scored.sql("select metric from ml.metrics where model_name = "
                                    "'loss_amount' and ci_low is not null")}
    assert {"rmse", "mae", "r2"} <= reg


def test_calibration_lift_curves_and_shap_importance(scored: Loans) -> None:
    n = scored.sql("select test_rows from ml.models where model_name = 'default_risk'")[0][0]
    cal = scored.sql("select sum(count), min(observed_rate), max(observed_rate) from "
                     "ml.calibration where model_name = 'default_risk' and version = 1")[0]
    assert cal[0] == n and 0 <= cal[1] <= cal[2] <= 1
    top = scored.sql("select decile, cumulative_capture, lift from ml.lift where model_name = "
                     "'default_risk' order by decile")
    assert len(top) == 10 and top[0][2] > 1.2 and top[-1][1] == pytest.approx(1.0)
    curves = dict(scored.sql("select curve, count(*) from ml.curves where model_name = "
                             "'default_risk' group by 1"))
    assert curves.keys() == {"roc", "pr"} and min(curves.values()) > 10
    assert scored.sql("select count(*) from ml.calibration where model_name <> "
                      "'default_risk'") == [(0,)]
    for name in ("default_risk", "loss_amount", "grade"):
        shap = dict(scored.sql("select feature, value from ml.feature_importance where "
                               "model_name = ? and importance_type = 'mean_abs_shap'", [name]))
        assert set(shap) == set(FEATURES) and min(shap.values()) >= 0
        assert max(shap.values()) > 0


def test_kfold_reports_mean_and_std_over_folds(loans: Loans) -> None:
    loans.write_schema(SCHEMA_YML.replace(
        "            exclude: [loss, grade]\n",
        "            exclude: [loss, grade]\n"
        "            split: {method: kfold, folds: 3, test_fraction: 0.2}\n", 1))
    out = loans.ok("train", "default_risk").output
    assert "cv auc" in out and "over folds" in out
    cv = {r[0]: r[1:] for r in loans.sql(
        "select metric, value, std, n_rows from ml.metrics where split = 'cv'")}
    assert {"auc", "log_loss", "f1"} <= set(cv)
    auc, std, n = cv["auc"]
    assert 0.6 < auc < 0.9 and 0 < std < 0.1
    rows = loans.sql("select train_rows + validation_rows, test_rows, split->>'folds' "
                     "from ml.models")[0]
    assert n == rows[0] and rows[2] == "3"
    holdout = loans.sql("select count(*) from ml.metrics where split = 'holdout' and "
                        "metric = 'auc' and ci_low is not null")
    assert holdout == [(1,)]  # the final model is still judged on the holdout


def test_old_registry_gains_the_interval_columns(loans: Loans) -> None:
    # A registry written before intervals existed: ml.metrics without ci_low/ci_high/std.
    loans.ok("train", "loss_amount")
    for column in ("ci_low", "ci_high", "std"):
        loans.sql(f"alter table ml.metrics drop column {column}")
    loans.ok("train", "loss_amount", "--force")
    assert loans.sql("select distinct ci_low, ci_high from ml.metrics where "
                     "model_name = 'loss_amount' and version = 1") == [(None, None)]
    inside = loans.sql("select count(*) from ml.metrics where model_name = 'loss_amount' "
                       "and version = 2 and ci_low <= value and value <= ci_high")[0][0]
    assert inside >= 3  # rmse, mae, r2 (and mape where defined)


def test_large_holdout_interval_is_a_rescaled_sample_bootstrap() -> None:
    """Above max_rows the interval comes from a sample and is rescaled by sqrt(m/n): it stays
    centred on the full estimate and about as wide as the full bootstrap's."""
    import numpy as np

    from pyml.modelling.evaluate import with_intervals
    from pyml.modelling.metrics import evaluate

    rng = np.random.default_rng(5)
    n = 40_000
    y = (rng.random(n) < 0.3).astype(float)
    p = np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(0, 0.2, n), 0.001, 0.999)
    metrics = evaluate("binary", y, p, label_base("binary", y, 2), 0.5)
    full = {m.name: m for m in with_intervals(metrics, "binary", y, p, 0.5, max_rows=n)}
    fast = {m.name: m for m in with_intervals(metrics, "binary", y, p, 0.5, max_rows=10_000)}
    for name in ("auc", "log_loss", "brier"):
        f, s = full[name], fast[name]
        assert s.ci_low is not None and s.ci_high is not None
        assert f.ci_low is not None and f.ci_high is not None
        assert s.ci_low < s.value < s.ci_high
        width_full, width_fast = f.ci_high - f.ci_low, s.ci_high - s.ci_low
        assert 0.7 < width_fast / width_full < 1.4, (name, width_full, width_fast)


def test_comparison_text_has_no_negative_zero_and_names_a_class_reorder() -> None:
    from pyml.modelling.compare import _signed
    from pyml.modelling.policy import classes_differ

    assert [_signed(v) for v in (-1e-17, -0.00004, -0.00006, 0.01234)] == [
        "+0.0000", "+0.0000", "-0.0001", "+0.0123"]
    assert classes_differ([False, True], [True, False]) == (
        "its classes [False, True] are in another order than [True, False] (positive_class "
        "changed)")
    assert classes_differ(["A", "B"], ["A", "B", "C"]) == (
        "its classes ['A', 'B'] differ from ['A', 'B', 'C']")


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from([np.nan, 0.0, 1.5, -2.0, 1e6]),
                               st.sampled_from([np.nan, 3.0, -0.25]),
                               st.integers(0, 1)), min_size=1, max_size=40),
       seed=st.integers(0, 2**32 - 1))
def test_canonical_order_depends_on_the_rows_not_their_read_order(
        rows: list[tuple[float, float, int]], seed: int) -> None:
    """The bootstrap, folds and samples see the same sequence of rows however they were
    read. (A NaN stand-in of -1e30 drowned the row's other values, so rows with the same NULL
    pattern kept their read order.)"""
    X = np.array([[a, b] for a, b, _ in rows], dtype=np.float32)
    y = np.array([c for *_, c in rows], dtype=np.float64)
    shuffle = np.random.default_rng(seed).permutation(len(rows))
    first = np.column_stack([X, y])[canonical_order(X, y)]
    again = np.column_stack([X[shuffle], y[shuffle]])[canonical_order(X[shuffle], y[shuffle])]
    np.testing.assert_array_equal(first, again)  # NaN equal to NaN


@settings(max_examples=60, deadline=None)
@given(y_train=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=30),
       y=st.lists(st.floats(-1e3, 1e3).filter(lambda v: abs(v) > 1e-3), min_size=2,
                  max_size=30))
def test_every_regression_baseline_is_the_training_mean_scored_like_the_model(
        y_train: list[float], y: list[float]) -> None:
    """Each baseline is the metric of the constant training-mean prediction on the same rows,
    computed as the model's is (r2's was stored as 0 whatever the rows: found by a docs
    walk)."""
    truth = np.array(y)
    base = label_base("regression", np.array(y_train), 0)
    constant = np.full(len(truth), base[0])
    got = {m.name: m.baseline for m in evaluate("regression", truth, truth * 0.5, base)}
    want = {"rmse": float(np.sqrt(skm.mean_squared_error(truth, constant))),
            "mae": skm.mean_absolute_error(truth, constant),
            # undefined (NULL) on a constant target, not scikit-learn's stand-in 0 or 1
            "r2": skm.r2_score(truth, constant) if np.ptp(truth) > 0 else None,
            "mape": skm.mean_absolute_percentage_error(truth, constant)}
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == (None if value is None
                             else pytest.approx(value, rel=1e-9, abs=1e-12)), name
    values = {m.name: m.value for m in evaluate("regression", truth, truth * 0.5, base)}
    assert math.isnan(values["r2"]) == (np.ptp(truth) == 0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(8, 60), seed=st.integers(0, 2**32 - 1),
       task=st.sampled_from(["binary", "regression", "multiclass"]))
def test_a_comparison_does_not_depend_on_the_order_of_its_rows(n: int, seed: int,
                                                                task: str) -> None:
    """The same two predictions on the same rows, in any order, give the same gain and the
    same interval (the promotion line and the tuning note showed two intervals for one
    comparison: a docs walk)."""
    from pyml.modelling.compare import compare

    rng = np.random.default_rng(seed)
    if task == "multiclass":
        y = rng.integers(0, 3, n).astype(float)
        a, b = rng.dirichlet(np.ones(3), n), rng.dirichlet(np.ones(3), n)
        metric = "log_loss"
    elif task == "binary":
        y = rng.integers(0, 2, n).astype(float)
        y[:2] = [0.0, 1.0]  # both classes: AUC of one class is undefined (MetricUndefined)
        a, b = rng.random(n), rng.random(n)
        metric = "auc"
    else:
        y = rng.normal(size=n)
        a, b = y + rng.normal(size=n), y + rng.normal(size=n)
        metric = "rmse"
    shuffle = rng.permutation(n)
    first = compare(task, metric, y, a, b, n_boot=50)
    again = compare(task, metric, y[shuffle], a[shuffle], b[shuffle], n_boot=50)
    assert (again.gain, again.ci_low, again.ci_high) == pytest.approx(
        (first.gain, first.ci_low, first.ci_high), rel=1e-12, abs=1e-15, nan_ok=True)


# --- found by an evaluation audit ------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(labels=st.lists(st.booleans(), min_size=10, max_size=80),
       scores=st.lists(st.sampled_from([0.1, 0.2, 0.5, 0.9]), min_size=10, max_size=80),
       seed=st.integers(0, 2**32 - 1))
def test_lift_depends_on_scores_and_labels_not_on_the_order_of_tied_rows(
        labels: list[bool], scores: list[float], seed: int) -> None:
    """Tied rows used to stay in read order, which put a constant model's positives first in
    memory (top-decile lift 4.7) and last from disk (0.0). A cut tie group now counts pro
    rata: any order of the rows gives one table, and a constant score gives lift 1."""
    n = min(len(labels), len(scores))
    y, p = np.array(labels[:n], dtype=float), np.array(scores[:n])
    if y.sum() == 0:
        return
    perm = np.random.default_rng(seed).permutation(n)
    first, again = lift(y, p), lift(y[perm], p[perm])
    assert [d[:2] for d in first] == [d[:2] for d in again]
    np.testing.assert_allclose([d[2:] for d in first], [d[2:] for d in again], rtol=1e-12)
    constant = lift(y, np.full(n, 0.3))
    np.testing.assert_allclose([d[4] for d in constant], 1.0, rtol=1e-12)
    np.testing.assert_allclose([d[2] for d in constant], y.mean(), rtol=1e-12)
    assert sum(d[1] for d in first) == n and first[-1][3] == pytest.approx(1.0)


def test_lift_without_ties_is_the_sorted_deciles() -> None:
    y, _, *_ = _data()
    p = np.random.default_rng(3).permutation(len(y)) / len(y)  # every score distinct
    parts = np.array_split(y[np.argsort(-p)], 10)
    want = [np.concatenate(parts[:d]).mean() / y.mean() for d in range(1, 11)]
    np.testing.assert_allclose([d[4] for d in lift(y, p)], want, rtol=1e-12)


@pytest.mark.parametrize("positives", [9, 60, 400])
def test_a_rare_class_keeps_its_interval_on_a_large_holdout(positives: int) -> None:
    """A 20,000-row sample of a 50,000-row holdout with 9 positives held three or four: the
    rescaled AUC interval was [0.539, 0.545] where every row gives [0.37, 0.71]. The sample
    now grows to hold about 500 of the rarest class (here: every row), so its interval is
    about as wide as the full bootstrap's, and no bound leaves the metric's range."""
    from pyml.modelling.evaluate import with_intervals

    rng = np.random.default_rng(positives)
    n = 50_000
    y = np.zeros(n)
    y[rng.choice(n, positives, replace=False)] = 1.0
    p = np.clip(rng.normal(0.3, 0.15, n) + 0.05 * y, 0.001, 0.999)
    metrics = evaluate("binary", y, p, label_base("binary", y, 2), 0.5)
    full = {m.name: m for m in with_intervals(metrics, "binary", y, p, 0.5, max_rows=n)}
    fast = {m.name: m for m in with_intervals(metrics, "binary", y, p, 0.5)}
    for name in ("auc", "pr_auc", "best_f1_threshold"):
        f, s = full[name], fast[name]
        assert f.ci_low is not None and f.ci_high is not None
        assert s.ci_low is not None and s.ci_high is not None
        assert 0.0 <= s.ci_low <= s.ci_high <= 1.0
        assert 0.8 < (s.ci_high - s.ci_low) / (f.ci_high - f.ci_low) < 1.25, name


def test_f1_macro_averages_over_the_classes_of_the_holdout() -> None:
    """One row predicted as a class the holdout does not hold cost a 99.8%-accurate model a
    quarter of its f1_macro (scikit-learn's default adds predicted-only classes)."""
    y = np.repeat([0, 1, 2], 200).astype(float)
    prob = np.full((600, 4), 0.01)
    prob[np.arange(600), y.astype(int)] = 0.97
    stray, miss = prob.copy(), prob.copy()
    stray[-1] = [0.01, 0.01, 0.01, 0.97]  # into class 3, absent from the holdout
    miss[-1] = [0.01, 0.97, 0.01, 0.01]  # into class 1, present
    base = label_base("multiclass", y, 4)
    f1 = {name: {m.name: m.value for m in evaluate("multiclass", y, pr, base)}["f1_macro"]
          for name, pr in (("stray", stray), ("miss", miss))}
    assert f1["stray"] == pytest.approx(skm.f1_score(y, stray.argmax(1), labels=[0, 1, 2],
                                                     average="macro"))
    assert f1["stray"] > 0.99 and f1["miss"] > 0.99
    weighted = bootstrap.metric_function("multiclass", y, stray)(np.ones(600))
    assert weighted["f1_macro"] == pytest.approx(f1["stray"], abs=1e-12)


def test_an_undefined_metric_is_no_comparison() -> None:
    """promote.metric mape and a zero target in the compared rows: `pyml train` died with a
    KeyError traceback and the models after it were not trained. Now the challenger stays
    challenger with one line naming the metric and the fix."""
    from pyml.modelling.compare import MetricUndefined, compare

    y = np.array([0.0, 1.0, 2.0, 3.0])
    with pytest.raises(MetricUndefined, match=r"holdout mape is undefined on these 4 rows "
                                              r"\(a target is 0\)"):
        compare("regression", "mape", y, y + 0.1, y + 0.2)
    with pytest.raises(MetricUndefined, match=r"r2 is undefined .* \(the target is constant\)"):
        compare("regression", "r2", np.ones(4), np.zeros(4), np.full(4, 0.5))


def test_a_mape_champion_comparison_keeps_the_challenger() -> None:
    from pyml.dbt.spec import ModelSpec, SplitSpec
    from pyml.dbt.spec_tune import PromoteSpec
    from pyml.modelling.compare import compare
    from pyml.modelling.policy import decide

    spec = ModelSpec(name="m", task="regression", target="y", key=("id",),
                     feature_model="f", schema="main", relation="f", source_file="x.yml",
                     split=SplitSpec(), promote=PromoteSpec(metric="mape"))
    y = np.array([0.0, 1.0, 2.0])
    logged: list[str] = []
    decision = decide(spec, 2, 1, logged.append,
                      lambda metric: (compare("regression", metric, y, y, y + 1), []),
                      identical=lambda: False)
    assert not decision.promote and decision.event == "registered"
    assert decision.reason == (
        "v2 was not compared with champion v1: holdout mape is undefined on these 3 rows (a "
        "target is 0); choose another promote.metric, or `pyml promote m` promotes v2 by hand")


def test_a_skipped_fold_is_said_and_left_out_of_n_rows() -> None:
    """A fold whose fit part lacks a class (the rare class's only row is in its held part)
    was skipped without a word while n_rows counted its rows: cv showed accuracy 1.0000."""
    from pyml.data.encode import Feature
    from pyml.dbt.spec import ModelSpec, SplitSpec
    from pyml.modelling.evaluate import cross_validate, fold_ids

    rng = np.random.default_rng(0)
    n = 300
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(float)
    y[17] = 2.0  # one row of a third class
    spec = ModelSpec(name="m", task="multiclass", target="y", key=("id",), feature_model="f",
                     schema="main", relation="f", source_file="x.yml",
                     split=SplitSpec(method="kfold", folds=3))
    rows = np.arange(n)
    logged: list[str] = []
    params = {"objective": "multi:softprob", "num_class": 3, "nthread": 1}
    cv = cross_validate(spec, params, [Feature("a", "numeric", "DOUBLE"),
                                       Feature("b", "numeric", "DOUBLE")],
                        X, y, rows, 5, logged.append)
    skipped = int(fold_ids(n, 3, spec.split.seed)[list(rows).index(17)])
    held = int((fold_ids(n, 3, spec.split.seed) == skipped).sum())
    assert [line for line in logged if "skipped" in line] == [
        f"[m] cv fold {skipped + 1}/3 skipped: its fit part lacks a class that the other folds "
        f"hold (too few rows of it for 3 folds); the cv figures leave out its {held:,} rows"]
    assert {m.n_rows for m in cv} == {n - held}
