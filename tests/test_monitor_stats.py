"""`pyml monitor`'s statistics (computed in DuckDB SQL) against scipy on the same inputs.

The reference is what training stores (pyml.modelling.drift_stats.snapshot: decile bins or
category counts, and a seeded sample of values); the window's values go through the same
float32 reading. scipy then gets exactly those numbers: ks_2samp and wasserstein_distance the
sample and the window's values, jensenshannon and chi2_contingency the bin counts; PSI and
Hellinger come from their definitions on the same bins. Every statistic agrees within 1e-6.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

from pyml.data.encode import Feature
from pyml.modelling.drift_stats import snapshot
from pyml.modelling.monitor_stats import (
    PSI_FLOOR,
    WINDOW,
    feature_stats,
    prediction_reference,
    prediction_stats,
)

TOL = 1e-6


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.maximum(p, PSI_FLOOR), np.maximum(q, PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def _hellinger(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2) / 2))


def _by_window(stats: list) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for s in stats:
        out.setdefault(s.window, {})[s.metric] = s.value
    return out


def _numeric_case(ref: np.ndarray, windows: dict[str, np.ndarray]) -> None:
    """feature_stats of a numeric feature == scipy, window by window."""
    feature = Feature("x", "numeric", "DOUBLE")
    snap = snapshot([feature], ref.astype(np.float32).reshape(-1, 1))[0]
    con = duckdb.connect()
    labels = [w for w, v in windows.items() for _ in v]
    values = [None if np.isnan(x) else float(x) for v in windows.values() for x in v]
    con.register("src", pa.table({WINDOW: pa.array(labels, pa.string()),
                                  "x": pa.array(values, pa.float64())}))
    got = _by_window(feature_stats(con, "src", "x", snap))
    sample = np.asarray([v for v in snap.sample if v is not None], dtype=np.float64)
    edges = np.asarray(snap.bin_edges, dtype=np.float32)
    bins = snap.bin_counts or (0,) * (len(snap.bin_edges) + 1)  # all NULL in training
    p = np.asarray([snap.null_count, *bins], dtype=np.float64)
    p = p / p.sum()
    for w, raw in windows.items():
        cur = raw.astype(np.float32)
        known = cur[~np.isnan(cur)].astype(np.float64)
        counts = np.bincount(np.searchsorted(edges, known, side="left"),
                             minlength=len(edges) + 1)
        q = np.asarray([np.isnan(cur).sum(), *counts], dtype=np.float64) / len(cur)
        stats = got[w]
        assert stats["psi"] == pytest.approx(_psi(p, q), abs=TOL)
        assert stats["jensen_shannon"] == pytest.approx(jensenshannon(p, q), abs=TOL)
        assert stats["hellinger"] == pytest.approx(_hellinger(p, q), abs=TOL)
        assert stats["null_share"] == pytest.approx(np.isnan(cur).mean(), abs=TOL)
        if len(known) and len(sample):
            assert stats["ks"] == pytest.approx(ks_2samp(sample, known).statistic, abs=TOL)
            wd = wasserstein_distance(sample, known) / max(float(np.std(sample)), 0.001)
            assert stats["wasserstein"] == pytest.approx(wd, abs=TOL)
        else:
            assert "ks" not in stats


def _categorical_case(ref: list[str | None], windows: dict[str, list[str | None]]) -> None:
    cats = tuple(sorted({c for c in ref if c is not None}))
    feature = Feature("c", "categorical", "VARCHAR", cats)
    codes = np.asarray([np.nan if c is None else cats.index(c) for c in ref], dtype=np.float32)
    snap = snapshot([feature], codes.reshape(-1, 1))[0]
    con = duckdb.connect()
    con.register("src", pa.table({WINDOW: pa.array([w for w, v in windows.items() for _ in v]),
                                  "c": pa.array([c for v in windows.values() for c in v],
                                                pa.string())}))
    got = _by_window(feature_stats(con, "src", "c", snap))
    ref_counts = np.asarray([snap.null_count, *snap.bin_counts, 0], dtype=np.float64)
    for w, vals in windows.items():
        cur = np.asarray([sum(v is None for v in vals), *(vals.count(c) for c in cats),
                          sum(v is not None and v not in cats for v in vals)], dtype=np.float64)
        p, q = ref_counts / ref_counts.sum(), cur / cur.sum()
        stats = got[w]
        assert stats["psi"] == pytest.approx(_psi(p, q), abs=TOL)
        assert stats["jensen_shannon"] == pytest.approx(jensenshannon(p, q), abs=TOL)
        assert stats["hellinger"] == pytest.approx(_hellinger(p, q), abs=TOL)
        assert stats["linf"] == pytest.approx(float(np.max(np.abs(p - q))), abs=TOL)
        assert stats["unseen_share"] == pytest.approx(q[-1], abs=TOL)
        table = np.vstack([ref_counts, cur])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] > 1:
            chi = chi2_contingency(table, correction=False)
            assert stats["chi2"] == pytest.approx(chi.statistic, rel=TOL, abs=TOL)
            assert stats["chi2_p"] == pytest.approx(chi.pvalue, abs=TOL)
        else:
            assert stats["chi2"] == pytest.approx(0.0, abs=TOL)
            assert stats["chi2_p"] == 1.0


def test_numeric_fixture_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    ref = rng.normal(50, 10, 3000)
    ref[::37] = np.nan
    shifted = rng.normal(58, 12, 800)
    shifted[::11] = np.nan
    _numeric_case(ref, {"2024-Q1": rng.normal(50, 10, 500), "2024-Q2": shifted,
                        "2024-Q3": np.full(20, np.nan)})


def test_numeric_sample_is_capped_and_seeded() -> None:
    """A reference of 30,000 rows keeps a 10,000-row sample, the same on every run."""
    rng = np.random.default_rng(3)
    ref = rng.exponential(3.0, 30_000)
    _numeric_case(ref, {"all": rng.exponential(3.5, 4000)})
    feature = Feature("x", "numeric", "DOUBLE")
    X = ref.astype(np.float32).reshape(-1, 1)
    first, again = snapshot([feature], X)[0], snapshot([feature], X)[0]
    assert len(first.sample) == 10_000 and first.sample == again.sample


def test_categorical_fixture_matches_scipy() -> None:
    ref = ["a"] * 500 + ["b"] * 300 + ["c"] * 150 + [None] * 50
    _categorical_case(ref, {
        "w1": ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + [None] * 5,
        "w2": ["a"] * 10 + ["b"] * 60 + ["zz"] * 25 + [None] * 5,
        "w3": ["b"] * 4,
    })


def test_prediction_stats_match_scipy() -> None:
    """The prediction pseudo-feature compares float64 values with its reference sample."""
    rng = np.random.default_rng(11)
    ref_pred = rng.beta(2, 5, 2000)
    snap = prediction_reference(ref_pred, 2000)
    now = rng.beta(3, 4, 700)
    con = duckdb.connect()
    con.register("src", pa.table({WINDOW: pa.array(["all"] * len(now)), "p": now}))
    got = _by_window(prediction_stats(con, "src", "p", snap))["all"]
    assert got["ks"] == pytest.approx(ks_2samp(ref_pred, now).statistic, abs=TOL)
    wd = wasserstein_distance(ref_pred, now) / max(float(np.std(ref_pred)), 0.001)
    assert got["wasserstein"] == pytest.approx(wd, abs=TOL)
    edges = np.asarray(snap.bin_edges)
    p = np.asarray([0, *snap.bin_counts], dtype=np.float64) / len(ref_pred)
    q = np.asarray([0, *np.bincount(np.searchsorted(edges, now, side="left"),
                                    minlength=len(edges) + 1)], dtype=np.float64) / len(now)
    assert got["psi"] == pytest.approx(_psi(p, q), abs=TOL)
    assert got["jensen_shannon"] == pytest.approx(jensenshannon(p, q), abs=TOL)


_floats = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=st.lists(st.one_of(_floats, st.just(float("nan"))), min_size=1, max_size=200),
       now=st.lists(st.one_of(_floats, st.just(float("nan"))), min_size=1, max_size=200),
       later=st.lists(_floats, min_size=1, max_size=50))
def test_numeric_property_sql_equals_scipy(ref: list[float], now: list[float],
                                           later: list[float]) -> None:
    """Random samples (ties, NULLs, one value, all NULL): pyml's SQL == scipy within 1e-6."""
    _numeric_case(np.asarray(ref), {"a": np.asarray(now), "b": np.asarray(later)})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=200),
       now=st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=1, max_size=200))
def test_categorical_property_sql_equals_scipy(ref: list[str | None],
                                               now: list[str | None]) -> None:
    _categorical_case(ref, {"w": now})
