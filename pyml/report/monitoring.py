"""The report's monitoring section: what `pyml monitor` wrote to ml.monitoring, over time.

Per feature (and the prediction), each statistic that has an alert rule, per window, as a
multiple of its threshold; for binary models the label-free performance estimate beside the
realised one; the alerts as a table. Only reads: without rows it says how to get them.
"""

from __future__ import annotations

import html
from typing import Any

from pyml.report import figures

PANELS = 12  # features plotted, those closest to (or over) their thresholds first
_PERFORMANCE = ("roc_auc", "accuracy", "f1")


def _img(data: bytes, alt: str) -> str:
    import base64

    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def monitoring_section(rows: list[dict[str, Any]]) -> str:
    """The HTML section from a version's ml.monitoring rows (pyml.store.monitoring)."""
    if not rows:
        return ("<h2>Monitoring</h2><p class='note'>No monitoring yet: run <code>pyml monitor"
                "</code> (windows from the spec's <code>monitor: {time_column, window}"
                "</code>).</p>")
    windows = list(dict.fromkeys(r["window_label"] for r in rows))
    at = {w: i for i, w in enumerate(windows)}
    ratios: dict[str, dict[str, list[float | None]]] = {}
    for r in rows:
        if r["threshold"] and r["value"] is not None and r["kind"] != "model":
            series = ratios.setdefault(r["feature"], {}).setdefault(
                r["metric"], [None] * len(windows))
            series[at[r["window_label"]]] = r["value"] / r["threshold"]
    worst = sorted(ratios, key=lambda f: -max(v or 0 for s in ratios[f].values() for v in s))
    parts = []
    if worst:
        parts.append(_img(figures.monitoring_panels(
            windows, [(f, ratios[f]) for f in worst[:PANELS]]),
            f"Statistics with an alert rule, per window ({min(len(worst), PANELS)} of "
            f"{len(worst)} features, the nearest to their thresholds first)"))
    model = {(r["window_label"], r["metric"]): r["value"] for r in rows if r["kind"] == "model"}
    for metric in _PERFORMANCE:
        est = [model.get((w, f"estimated_{metric}")) for w in windows]
        real = [model.get((w, f"realised_{metric}")) for w in windows]
        if any(v is not None for v in est + real):
            parts.append(_img(figures.estimated_vs_realised(windows, est, real, metric),
                              f"{metric}: label-free estimate (calibrated probabilities) vs "
                              "realised on the rows whose label is known"))
    alerts = [r for r in rows if r["alert"]]
    table = ("<p class='note'>No alert in any window.</p>" if not alerts else
             "<table><tr><th>window</th><th>feature</th><th>metric</th><th>value</th>"
             "<th>threshold</th></tr>" + "".join(
                 f"<tr><td>{html.escape(str(r['window_label']))}</td>"
                 f"<td>{html.escape(str(r['feature']))}</td><td>{html.escape(r['metric'])}</td>"
                 f"<td class='num'>{r['value']:.4f}</td><td class='num'>{r['threshold']:g}</td>"
                 "</tr>" for r in alerts) + "</table>")
    return (f"<h2>Monitoring</h2><p class='note'>From ml.monitoring (<code>pyml monitor</code>),"
            f" {len(windows)} window(s); {len(alerts)} alert(s).</p>"
            f"<div class='grid'>{''.join(parts)}</div>{table}")
