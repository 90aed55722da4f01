"""`pyml report`: one self-contained HTML page per model version.

Everything comes from the registry (metrics with intervals, curves, calibration, lift,
importances, drift, profile), plus SHAP values computed here on a sample of the rows the
model scores. Figures are PNGs embedded as base64, styles are inline: the file can be mailed,
attached to a ticket or opened offline. A missing profile or drift check is computed for the
page (and not stored: the report only reads), so the report is complete after one command.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import yaml

from pyml.data.encode import select_exprs
from pyml.dbt.project import Project, resolve_relation
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import connect, qualified, quote
from pyml.errors import OutputError
from pyml.files import replacing
from pyml.modelling.model import LoadedModel
from pyml.modelling.shap import margin_contributions
from pyml.report import figures
from pyml.report.monitoring import monitoring_section
from pyml.store import evaluation, tables
from pyml.store.drift import has_snapshots, latest_drift
from pyml.store.monitoring import load_monitoring
from pyml.store.registry import load_version
from pyml.tasks import HEADLINE_METRIC
from pyml.verbs.drift import DriftResult, drift_relation
from pyml.verbs.profile import ProfileResult, profile_relation

Log = Callable[[str], None]
SHAP_ROWS = 1000  # rows behind the SHAP summary and dependence plots
TOP_FEATURES = 12  # features in the SHAP summary
DEPENDENCE = 3  # dependence plots (top features by mean |SHAP|)


def _img(data: bytes, alt: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not np.isfinite(v):
            return ""
        if abs(v) >= 10_000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}" if abs(v) < 10 else f"{v:.{digits}g}"
    return str(v)


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.1%}"


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if n else ""}">{html.escape(_fmt(v))}</td>'
                         for v, n in zip(r, numeric, strict=True)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _shap_sample(con: duckdb.DuckDBPyConnection, model: LoadedModel,
                 relation: tuple[str, str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(feature matrix, SHAP values) of up to SHAP_ROWS rows, chosen by a hash of the key."""
    stored = model.stored
    keys = ", ".join(quote(k) for k in stored.key)
    try:
        table = con.sql(f"select {', '.join(select_exprs(stored.features))} from "
                        f"{qualified(*relation)} order by hash({keys}) limit {SHAP_ROWS}"
                        ).to_arrow_table()
    except duckdb.Error:
        return None
    if table is None or table.num_rows == 0:
        return None
    X = model.encoder.matrix([table.column(i) for i in range(table.num_columns)],
                             f"model '{model.name}'")
    contrib, _ = margin_contributions(model.stored.booster, X)
    return X.astype(np.float64), contrib[:, :-1].astype(np.float64)


def _metrics_section(metrics: list[dict[str, Any]]) -> str:
    rows = []
    for m in metrics:
        ci = (f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
              if m.get("ci_low") is not None else "")
        spread = f"± {_fmt(m['std'])}" if m.get("std") is not None else ci
        rows.append([m["split"], m["metric"], m["value"], spread, m["baseline"], m["n_rows"]])
    return ("<h2>Metrics</h2><p class='note'>Holdout metrics with 95% bootstrap intervals "
            "(200 resamples); split <code>cv</code> rows are means ± standard deviation "
            "over folds. The baseline is a model that learned nothing: the training prior "
            "(classifiers) or mean (regression).</p>"
            + _html_table(["split", "metric", "value", "95% interval / spread", "baseline",
                           "rows"], rows, [False, False, True, False, True, True]))


def _performance(task: str, metrics: dict[str, dict[str, Any]], curves: list[dict[str, Any]],
                 cal: list[dict[str, Any]], lift: list[dict[str, Any]],
                 classes: Sequence[Any], threshold: float) -> list[str]:
    out = []
    by: dict[str, list[tuple[float, float]]] = {}
    for c in curves:
        by.setdefault(c["curve"], []).append((c["x"], c["y"]))
    if task == "binary":
        if by.get("roc"):
            out.append(_img(figures.roc(by["roc"], metrics.get("auc", {}).get("value")),
                            "ROC curve with the random-guess baseline"))
        if by.get("pr"):
            prevalence = metrics.get("positive_rate", {}).get("value") or 0.0
            out.append(_img(figures.pr(by["pr"], metrics.get("pr_auc", {}).get("value"),
                                       prevalence),
                            "Precision-recall curve with the positive-rate baseline"))
        if cal:
            out.append(_img(figures.calibration(
                [(r["mean_predicted"], r["observed_rate"], r["count"]) for r in cal]),
                "Calibration: predicted probability vs observed rate"))
        if lift:
            out.append(_img(figures.gains(
                [(r["decile"], r["cumulative_capture"], r["lift"]) for r in lift]),
                "Cumulative gains by decile, with lift"))
        need = ("positive_rate", "recall", "accuracy")
        if all(metrics.get(k, {}).get("value") is not None for k in need):
            n = int(metrics["accuracy"]["n_rows"])
            pos = round(metrics["positive_rate"]["value"] * n)
            tp = round(metrics["recall"]["value"] * pos)
            tn = round(metrics["accuracy"]["value"] * n) - tp
            out.append(_img(figures.confusion(tn, n - pos - tn, pos - tp, tp,
                                              [str(c) for c in classes], threshold),
                            f"Confusion matrix at threshold {threshold:g}"))
    elif task == "regression" and by.get("residuals"):
        pts = np.asarray(by["residuals"])
        out.append(_img(figures.residuals(pts[:, 0], pts[:, 1]),
                        "Residuals vs predicted value (holdout sample)"))
        out.append(_img(figures.predicted_vs_actual(pts[:, 0], pts[:, 0] + pts[:, 1]),
                        "Actual vs predicted value (holdout sample)"))
    return out


def _explanations(model: LoadedModel, importance: list[dict[str, Any]],
                  sample: tuple[np.ndarray, np.ndarray] | None) -> list[str]:
    out = []
    shap_imp = {r["feature"]: r["value"] for r in importance
                if r["importance_type"] == "mean_abs_shap"}
    gain = {r["feature"]: r["value"] for r in importance if r["importance_type"] == "gain"}
    names = [f.name for f in model.stored.features]
    values, title, unit = ((shap_imp, "Mean |SHAP| per feature (holdout)",
                            "mean |SHAP value| (margin units)") if shap_imp
                           else (gain, "XGBoost gain per feature", "gain"))
    if values:
        ranked = sorted(names, key=lambda n: -values.get(n, 0.0))[:TOP_FEATURES]
        if len(names) > TOP_FEATURES:
            title = title.replace(" per feature", f": top {TOP_FEATURES} of {len(names)}")
        out.append(_img(figures.importance_bar(ranked, [values.get(n, 0.0) for n in ranked],
                                               title, unit), title))
    if sample is None:
        return out
    X, shap = sample
    order = np.argsort(-np.abs(shap).mean(axis=0))
    top = order[:TOP_FEATURES]
    feats = model.stored.features
    out.append(_img(figures.beeswarm([names[j] for j in top], shap[:, top], X[:, top],
                                     [feats[j].kind == "categorical" for j in top]),
                    "SHAP summary: one dot per row and feature, coloured by the value"))
    for j in order[:DEPENDENCE]:
        out.append(_img(figures.dependence(names[j], shap[:, j], X[:, j],
                                           feats[j].categories),
                        f"SHAP dependence of {names[j]}"))
    return out


def _drift_section(rows: list[dict[str, Any]], threshold: float) -> str:
    if not rows:
        return "<h2>Drift</h2><p class='note'>No drift check yet: run <code>pyml drift</code>.</p>"
    by: dict[str, dict[str, float]] = {}
    for r in rows:
        by.setdefault(r["feature"], {})[r["metric"]] = r["value"]
    names = list(by)
    psi = [by[n].get("psi", 0.0) for n in names]
    fig = _img(figures.drift_bars(names, psi, threshold),
               f"PSI per feature, checked {rows[0]['checked_at']} on {rows[0]['relation']}")
    def share(v: float | None) -> str:
        return "" if v is None else f"{v:.1%}"

    table = _html_table(
        ["feature", "PSI", "KS", "unseen share", "null share (train)", "null share (now)"],
        [[n, f"{by[n].get('psi', 0.0):.4f}" + (" drift" if by[n].get("psi", 0) > threshold
                                               else ""),
          "" if by[n].get("ks") is None else f"{by[n]['ks']:.4f}",
          share(by[n].get("unseen_share")), share(by[n].get("null_share_train")),
          share(by[n].get("null_share_now"))] for n in names],
        [False, True, True, True, True, True])
    return f"<h2>Drift</h2><div class='grid'>{fig}<div>{table}</div></div>"


def _profile_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    body = _html_table(
        ["column", "type", "role", "null rate", "distinct", "mean", "std", "outliers",
         "top categories", "AUC", "Spearman", "MI", "warnings"],
        [[r["column_name"], r["data_type"], r["role"], _pct(r["null_rate"]),
          f"{r['distinct_count']:,}", r["mean"], r["std"], _pct(r["outlier_share"]),
          r["top_categories"], r["target_auc"],
          r["target_spearman"], r["mutual_info"], r["warnings"]] for r in rows],
        [False, False, False, True, True, True, True, True, False, True, True, True, False])
    return ("<h2>Data profile</h2><p class='note'>From <code>ml.profile_*</code> (pyml "
            f"profile), profiled {rows[0]['profiled_at']}.</p><div class='wide'>{body}</div>")


CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#111827;background:#f9fafb}
main{max-width:1320px;margin:0 auto;padding:24px 32px 48px}
header{background:#111827;color:#f9fafb;padding:20px 32px}
header h1{margin:0;font-size:24px}header p{margin:6px 0 0;color:#d1d5db}
h2{margin:32px 0 8px;font-size:19px;border-bottom:2px solid #e5e7eb;padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;
min-width:150px}
.card b{display:block;font-size:12px;color:#6b7280;font-weight:600;text-transform:uppercase}
.card span{font-size:17px}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px;align-items:start}
figure{margin:0;background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#6b7280;margin-top:4px}
table{border-collapse:collapse;background:#fff;font-size:13px;width:100%}
th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.wide{overflow-x:auto}.note{color:#4b5563;font-size:13px}
pre{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px;font-size:12px;
overflow-x:auto}
"""


def render(model_row: dict[str, Any], model: LoadedModel, metrics: list[dict[str, Any]],
           performance: list[str], explanations: list[str], drift_html: str,
           profile_html: str, monitoring_html: str = "") -> str:
    """The whole HTML page."""
    spec = model.stored.spec
    holdout = {m["metric"]: m for m in metrics if m["split"] == "holdout"}
    headline = HEADLINE_METRIC[model.stored.task]
    h = holdout.get(headline, {})
    head_value = _fmt(h.get("value"))
    if h.get("ci_low") is not None:
        head_value += f" [{_fmt(h['ci_low'])}, {_fmt(h['ci_high'])}]"
    cards = [("task", model.stored.task), ("trained", model_row["created_at"]),
             ("relation", model_row["feature_relation"]), ("target", model_row["target"]),
             ("rows train / valid / holdout",
              f"{model_row['train_rows']:,} / {model_row['validation_rows']:,} / "
              f"{model_row['test_rows']:,}"),
             ("trees", model_row["num_trees"]), (f"holdout {headline}", head_value)]
    cards_html = "".join(f"<div class='card'><b>{html.escape(k)}</b>"
                         f"<span>{html.escape(str(v))}</span></div>" for k, v in cards)
    desc = html.escape(model_row.get("description") or "")
    spec_text = yaml.safe_dump(spec, sort_keys=False, default_flow_style=False)
    perf_html = (f"<div class='grid'>{''.join(performance)}</div>" if performance else
                 "<p class='note'>No curves are stored for this task: see the metrics "
                 "above.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>pyml report: {html.escape(model.name)} v{model.version}</title>
<style>{CSS}</style></head><body>
<header><h1>pyml report: {html.escape(model.name)} v{model.version}</h1>
<p>{desc} Generated {datetime.now().replace(microsecond=0)}.</p></header>
<main><div class="cards">{cards_html}</div>
{_metrics_section(metrics)}
<h2>Performance</h2>{perf_html}
<h2>Explanations</h2><p class="note">Exact TreeSHAP contributions to the margin (log-odds
for binary, the predicted class's score for multiclass). The summary and dependence plots
use up to {SHAP_ROWS:,} rows of the scored relation.</p>
<div class="grid">{''.join(explanations)}</div>
{drift_html}
{monitoring_html}
{profile_html}
<h2>Spec</h2><pre>{html.escape(spec_text)}</pre>
</main></body></html>
"""


def report(project: Project, spec: ModelSpec, *, output: Path | None = None,
           version: int | None = None, log: Log | None = None,
           lock_timeout: float = 5.0) -> Path:
    """Write the HTML report of a model version (default: the latest); returns the path.

    Reads only: the database is opened read-only, and a drift check or profile that was
    never stored is computed for the page without being written.
    """
    con = connect(project.db_path, read_only=True, lock_timeout=lock_timeout)
    try:
        model = LoadedModel(load_version(con, spec.name, version))
        path = (output or Path(f"{spec.name}_v{model.version}_report.html")
                ).expanduser().resolve()
        if not path.parent.is_dir():
            raise OutputError(f"output file {path}: folder {path.parent} does not exist")
        page = _build(con, project, spec, model, log)
    finally:
        con.close()
    try:
        with replacing(path) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from e
    return path


def _drift_rows(result: DriftResult) -> list[dict[str, Any]]:
    """A drift check computed now, shaped like the rows of ml.drift."""
    return [{"feature": r.feature, "metric": r.metric, "value": r.value,
             "checked_at": result.checked_at, "relation": result.relation}
            for f in result.features for r in f.rows()
            if r.value is not None and np.isfinite(r.value)]


def _profile_rows(result: ProfileResult) -> list[dict[str, Any]]:
    """A profile computed now, shaped like the rows of ml.profile_<relation>."""
    now = datetime.now().replace(microsecond=0)
    return [{"column_name": p.name, "data_type": p.dtype, "role": p.role,
             "null_rate": p.null_rate, "distinct_count": p.distinct, "mean": p.mean,
             "std": p.std, "outlier_share": p.outlier_share,
             "top_categories": p.top_categories, "target_auc": p.auc,
             "target_spearman": p.spearman, "mutual_info": p.mutual_info,
             "warnings": "; ".join(p.warnings) or None, "profiled_at": now}
            for p in result.columns]


def _build(con: duckdb.DuckDBPyConnection, project: Project, spec: ModelSpec,
           model: LoadedModel, log: Log | None) -> str:
    name, version = model.name, model.version
    model_row = evaluation.model_row(con, name, version)
    # holdout before cv, as the page explains them in that order
    metrics = sorted(evaluation.metrics(con, name, version), key=lambda m: m["split"] != "holdout")
    relation = (resolve_relation(project, spec.score.relation, spec.where) if spec.score.relation
                else (spec.schema, spec.relation))
    drift_rows = latest_drift(con, name, version)
    if not drift_rows and has_snapshots(con):
        drift_rows = _drift_rows(drift_relation(con, name, version, relation,
                                                spec.drift_threshold, log=log, write=False))
    profile_rows = tables.profile_rows(con, spec.relation, spec.target)
    if not profile_rows:
        if log:
            log(f"[{name}] profiling {spec.schema}.{spec.relation} for the report")
        profile_rows = _profile_rows(profile_relation(
            con, (spec.schema, spec.relation), spec, spec.target, spec.key, write=False))
    by_metric = {m["metric"]: m for m in metrics if m["split"] == "holdout"}
    performance = _performance(model.stored.task, by_metric,
                               evaluation.curves(con, name, version),
                               evaluation.calibration(con, name, version),
                               evaluation.lift(con, name, version),
                               model.stored.target.classes, model.stored.threshold)
    explanations = _explanations(model, evaluation.importance(con, name, version),
                                 _shap_sample(con, model, relation))
    return render(model_row, model, metrics, performance, explanations,
                  _drift_section(drift_rows, spec.drift_threshold),
                  _profile_section(profile_rows),
                  monitoring_section(load_monitoring(con, name, version)))
