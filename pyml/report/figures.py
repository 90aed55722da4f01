"""The report's figures: matplotlib (object API, Agg canvas, no global pyplot state) -> PNG.

Each function takes plain arrays / rows and returns PNG bytes; `pyml.report` embeds them as
base64 in one HTML file. One look for all of them: white background, light grid, the model
in one colour and its baseline dashed grey.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

MODEL = "#2563eb"  # the model
ACCENT = "#dc2626"  # thresholds, drifted features
BASE = "#6b7280"  # baselines
SIZE = (6.4, 4.2)  # inches; at 150 dpi about 960 x 630 px, shown at half that
DPI = 150


F = TypeVar("F", bound=Callable[..., bytes])


def _plain_text(draw: F) -> F:
    """Draw every text of the figure as plain text, never as mathtext.

    Labels carry column names and class labels from the user's data: a name such as
    `fee_$_per_$_k` would otherwise be parsed as TeX between the dollars and crash the report.
    An rc_context rather than escaping: tick labels are made only when the figure is drawn,
    and it leaves the process-wide rcParams (a notebook's) alone.
    """
    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> bytes:
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _figure(size: tuple[float, float] = SIZE) -> tuple[Figure, Axes]:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


@_plain_text
def roc(points: Sequence[tuple[float, float]], auc: float | None) -> bytes:
    """ROC curve (false vs true positive rate) beside the random-guess diagonal."""
    fig, ax = _figure()
    x, y = zip(*points, strict=True)
    label = "model" + (f" (AUC {auc:.3f})" if auc is not None else "")
    ax.plot(x, y, color=MODEL, linewidth=2, label=label)
    ax.plot([0, 1], [0, 1], color=BASE, linestyle="--", linewidth=1.2,
            label="baseline: random (AUC 0.5)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate",
           ylabel="True positive rate (recall)", title="ROC curve (holdout)")
    ax.legend(loc="lower right", frameon=False)
    return png(fig)


@_plain_text
def pr(points: Sequence[tuple[float, float]], ap: float | None, prevalence: float) -> bytes:
    """Precision-recall curve beside the constant-score baseline (the positive rate)."""
    fig, ax = _figure()
    x, y = zip(*points, strict=True)
    label = "model" + (f" (AP {ap:.3f})" if ap is not None else "")
    ax.plot(x, y, color=MODEL, linewidth=2, label=label)
    ax.axhline(prevalence, color=BASE, linestyle="--", linewidth=1.2,
               label=f"baseline: positive rate {prevalence:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall", ylabel="Precision",
           title="Precision-recall curve (holdout)")
    ax.legend(loc="upper right", frameon=False)
    return png(fig)


@_plain_text
def calibration(rows: Sequence[tuple[float, float, int]]) -> bytes:
    """Mean predicted probability vs observed rate per bin; the bins' row counts below."""
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for a in (ax, hist):
        a.grid(True, color="#e5e7eb", linewidth=0.8)
        a.set_axisbelow(True)
        for side in ("top", "right"):
            a.spines[side].set_visible(False)
    pred, obs, count = (np.asarray(v, dtype=float) for v in zip(*rows, strict=True))
    ax.plot([0, 1], [0, 1], color=BASE, linestyle="--", linewidth=1.2,
            label="perfectly calibrated")
    ax.plot(pred, obs, color=MODEL, marker="o", linewidth=2, label="model")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="Observed positive rate",
           title="Calibration (holdout, 10 bins)")
    ax.legend(loc="upper left", frameon=False)
    hist.bar(pred, count, width=0.05, color=MODEL, alpha=0.6)
    hist.set(xlabel="Mean predicted probability (bin)", ylabel="Rows")
    return png(fig)


@_plain_text
def gains(rows: Sequence[tuple[int, float, float]]) -> bytes:
    """Cumulative gains by decile (share of positives captured) with the lift on top."""
    fig, ax = _figure()
    decile, capture, lift = (np.asarray(v, dtype=float) for v in zip(*rows, strict=True))
    share = decile / len(decile)
    ax.plot(np.r_[0, share], np.r_[0, capture], color=MODEL, marker="o", linewidth=2,
            label="model")
    ax.plot([0, 1], [0, 1], color=BASE, linestyle="--", linewidth=1.2,
            label="baseline: random order")
    for s, c, lf in zip(share, capture, lift, strict=True):
        if s <= 0.5:
            ax.annotate(f"lift {lf:.1f}", (s, c), textcoords="offset points", xytext=(6, -12),
                        fontsize=8, color=BASE)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Share of rows, highest scores first",
           ylabel="Share of positives captured", title="Cumulative gains and lift (holdout)")
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.yaxis.set_major_formatter("{x:.0%}")
    ax.legend(loc="lower right", frameon=False)
    return png(fig)


@_plain_text
def confusion(tn: int, fp: int, fn: int, tp: int, labels: Sequence[str],
              threshold: float) -> bytes:
    """2x2 confusion matrix at the spec's threshold, counts and row shares."""
    fig, ax = _figure()
    ax.grid(False)
    m = np.array([[tn, fp], [fn, tp]], dtype=float)
    ax.imshow(m / max(m.sum(), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            share = m[i, j] / max(m[i].sum(), 1)
            ax.text(j, i, f"{int(m[i, j]):,}\n{share:.0%} of actual", ha="center",
                    va="center", fontsize=11,
                    color="white" if m[i, j] / max(m.sum(), 1) > 0.5 else "#111827")
    ax.set_xticks([0, 1], [f"predicted {labels[0]}", f"predicted {labels[1]}"])
    ax.set_yticks([0, 1], [f"actual {labels[0]}", f"actual {labels[1]}"])
    ax.set_title(f"Confusion matrix at threshold {threshold:g} (holdout)")
    return png(fig)


@_plain_text
def residuals(pred: np.ndarray, resid: np.ndarray) -> bytes:
    """Residual (actual - predicted) against predicted value."""
    fig, ax = _figure()
    ax.scatter(pred, resid, s=8, alpha=0.35, color=MODEL, edgecolors="none",
               label="holdout rows")
    ax.axhline(0, color=BASE, linestyle="--", linewidth=1.2, label="zero error")
    ax.set(xlabel="Predicted value", ylabel="Residual (actual - predicted)",
           title="Residuals vs predicted (holdout)")
    ax.legend(loc="upper right", frameon=False)
    return png(fig)


@_plain_text
def predicted_vs_actual(pred: np.ndarray, actual: np.ndarray) -> bytes:
    """Actual against predicted value, with the line of perfect predictions."""
    fig, ax = _figure()
    ax.scatter(pred, actual, s=8, alpha=0.35, color=MODEL, edgecolors="none",
               label="holdout rows")
    lo = float(min(pred.min(), actual.min()))
    hi = float(max(pred.max(), actual.max()))
    ax.plot([lo, hi], [lo, hi], color=BASE, linestyle="--", linewidth=1.2,
            label="perfect prediction")
    ax.set(xlabel="Predicted value", ylabel="Actual value",
           title="Actual vs predicted (holdout)")
    ax.legend(loc="upper left", frameon=False)
    return png(fig)


@_plain_text
def importance_bar(names: Sequence[str], values: Sequence[float], title: str,
                   xlabel: str) -> bytes:
    """Horizontal bars, largest on top."""
    height = max(2.6, 0.34 * len(names) + 1.2)
    fig, ax = _figure((6.4, height))
    order = np.argsort(values)
    ax.barh([names[i] for i in order], [values[i] for i in order], color=MODEL)
    ax.set(xlabel=xlabel, title=title)
    ax.grid(axis="y", visible=False)
    return png(fig)


def _colour_values(values: np.ndarray) -> np.ndarray:
    """Feature values -> [0, 1] by rank (NaN stays NaN), robust to outliers."""
    out = np.full(len(values), np.nan)
    ok = ~np.isnan(values)
    if ok.sum() > 1:
        ranks = np.argsort(np.argsort(values[ok]))
        out[ok] = ranks / (ok.sum() - 1)
    return out


@_plain_text
def beeswarm(names: Sequence[str], shap: np.ndarray, values: np.ndarray,
             categorical: Sequence[bool]) -> bytes:
    """Per feature (rows, most important on top): each dot a row's SHAP value, coloured by
    the feature's value (numeric) or grey (categorical)."""
    k = len(names)
    fig, ax = _figure((6.4, max(3.0, 0.42 * k + 1.4)))
    rng = np.random.default_rng(0)
    scatter: Any = None
    for pos, j in enumerate(range(k)):
        y = np.asarray(k - 1 - pos + rng.uniform(-0.3, 0.3, shap.shape[0]))
        if categorical[j]:
            ax.scatter(shap[:, j], y, s=7, color=BASE, alpha=0.5, edgecolors="none")
            continue
        c = _colour_values(values[:, j])
        missing = np.isnan(c)
        ax.scatter(shap[missing, j], y[missing], s=7, color="#d1d5db", edgecolors="none")
        scatter = ax.scatter(shap[~missing, j], y[~missing], s=7, c=c[~missing],
                             cmap="coolwarm", vmin=0, vmax=1, edgecolors="none", alpha=0.8)
    ax.axvline(0, color=BASE, linewidth=0.8)
    ax.set_yticks(range(k), list(reversed(names)))
    ax.grid(axis="y", visible=False)
    ax.set(xlabel="SHAP value (contribution to the margin)",
           title="SHAP summary (sample of scored rows)")
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=ax, pad=0.01, aspect=30, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value (grey: categorical / NULL)")
    return png(fig)


@_plain_text
def dependence(name: str, shap: np.ndarray, values: np.ndarray,
               categories: Sequence[str]) -> bytes:
    """One feature's SHAP value against its value (categories on the x axis if text)."""
    fig, ax = _figure((6.4, 3.8))
    if categories:
        codes = values
        ok = ~np.isnan(codes)
        counts = np.bincount(codes[ok].astype(int), minlength=len(categories))
        shown = np.argsort(-counts)[:12]
        pos = {int(c): i for i, c in enumerate(shown)}
        keep = np.array([ok[i] and int(codes[i]) in pos for i in range(len(codes))])
        x = np.array([pos[int(codes[i])] for i in np.flatnonzero(keep)], dtype=float)
        jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(x))
        ax.scatter(x + jitter, shap[keep], s=9, alpha=0.5, color=MODEL, edgecolors="none")
        ax.set_xticks(range(len(shown)), [str(categories[c])[:14] for c in shown],
                      rotation=30, ha="right")
    else:
        ok = ~np.isnan(values)
        ax.scatter(values[ok], shap[ok], s=9, alpha=0.5, color=MODEL, edgecolors="none")
        if ok.sum() > 20:
            # A long tail squeezes the bulk of the rows into one pixel column: show 1%-99%.
            lo, hi = np.quantile(values[ok], [0.01, 0.99])
            if hi > lo and (values[ok].max() - values[ok].min()) > 2 * (hi - lo):
                pad = 0.03 * (hi - lo)
                ax.set_xlim(lo - pad, hi + pad)
                name = f"{name} (1st-99th percentile shown)"
    ax.axhline(0, color=BASE, linewidth=0.8, linestyle="--")
    ax.set(xlabel=name, ylabel="SHAP value", title=f"Dependence: {name.split(' (')[0]}")
    return png(fig)


@_plain_text
def drift_bars(names: Sequence[str], psi: Sequence[float], threshold: float) -> bytes:
    """PSI per feature with the threshold; drifted features in red."""
    height = max(2.6, 0.34 * len(names) + 1.3)
    fig, ax = _figure((6.4, height))
    order = np.argsort(psi)
    colours = [ACCENT if psi[i] > threshold else MODEL for i in order]
    ax.barh([names[i] for i in order], [psi[i] for i in order], color=colours)
    ax.axvline(threshold, color=ACCENT, linestyle="--", linewidth=1.2)
    ax.annotate(f"threshold {threshold:g}", xy=(threshold, 1), xycoords=("data", "axes fraction"),
                xytext=(4, -12), textcoords="offset points", color=ACCENT, fontsize=9)
    ax.set_xlim(0, max(threshold, *psi) * 1.3)
    ax.set(xlabel="PSI (training snapshot vs relation now)", title="Drift per feature")
    ax.grid(axis="y", visible=False)
    return png(fig)


# One colour per statistic in every panel (thresholds and alerts stay ACCENT red).
_METRIC_COLOURS = {"psi": MODEL, "wasserstein": "#059669", "jensen_shannon": "#d97706",
                   "unseen_share": "#7c3aed", "null_share_change": "#6b7280", "ks": "#0891b2",
                   "hellinger": "#be185d", "linf": "#4d7c0f", "chi2": "#1e3a8a"}


@_plain_text
def monitoring_panels(windows: Sequence[str],
                      series: Sequence[tuple[str, Mapping[str, Sequence[float | None]]]]
                      ) -> bytes:
    """Small multiples, one panel per feature: each thresholded statistic per window as a
    multiple of its threshold (1 = the alert line), so PSI, Wasserstein and Jensen-Shannon
    share an axis; points above the line in red."""
    cols = min(3, max(1, len(series)))
    rows = (len(series) + cols - 1) // cols
    fig = Figure(figsize=(3.3 * cols, 2.3 * rows + 0.4), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    x = np.arange(len(windows))
    for ax, (feature, metrics) in zip(axes, series, strict=False):
        for metric, ratios in metrics.items():
            y = np.asarray([np.nan if r is None else r for r in ratios], dtype=float)
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=metric,
                    color=_METRIC_COLOURS.get(metric, BASE))
            hot = y > 1
            ax.scatter(x[hot], y[hot], color=ACCENT, s=18, zorder=3)
        ax.axhline(1.0, color=ACCENT, linestyle="--", linewidth=1)
        ax.set_title(feature, fontsize=9)
        ax.set_xticks(x, list(windows), fontsize=7, rotation=45 if len(windows) > 4 else 0)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
        ax.legend(fontsize=6, loc="upper left", frameon=False)
    for ax in axes[len(series):]:
        ax.set_visible(False)
    fig.suptitle("Drift per window (statistic / its threshold; above 1 alerts)", fontsize=10)
    return png(fig)


@_plain_text
def estimated_vs_realised(windows: Sequence[str], estimated: Sequence[float | None],
                          realised: Sequence[float | None], metric: str) -> bytes:
    """A binary model's label-free estimate per window beside the realised value."""
    fig, ax = _figure()
    x = np.arange(len(windows))
    for values, label, colour, style in ((estimated, "estimated (no labels)", MODEL, "-"),
                                         (realised, "realised (labelled rows)", BASE, "--")):
        y = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(x, y, marker="o", color=colour, linestyle=style, label=label)
    ax.set_xticks(x, list(windows), rotation=45 if len(windows) > 4 else 0)
    ax.set(ylabel=metric, title=f"{metric}: estimated vs realised per window")
    ax.legend()
    return png(fig)
