"""Plain text for the CLI: registry listings, prediction previews and what each verb did."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyml.dbt.project import Project, all_specs
from pyml.engines.duckdb import connect
from pyml.errors import PymlError
from pyml.session import unknown_model
from pyml.store import tables
from pyml.store.lifecycle import statuses
from pyml.store.registry import VersionRow, list_versions
from pyml.store.staleness import stale_hints

if TYPE_CHECKING:
    from pyml.verbs.drift import DriftResult
    from pyml.verbs.explain import ExplainResult
    from pyml.verbs.profile import ProfileResult
    from pyml.verbs.score import ScoreResult
    from pyml.verbs.train import TrainResult


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h), *[len(r[i]) for r in cells]]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def models_table(project: Project, names: Sequence[str] = (), lock_timeout: float = 5.0) -> str:
    """The `pyml models` listing."""
    con = connect(project.db_path, read_only=True, lock_timeout=lock_timeout)
    try:
        rows = known_versions(project, names, list_versions(con, names))
        status = statuses(con)
        hints = stale_hints(con, names)
    finally:
        con.close()
    return with_hints(versions_text(rows, status), hints)


def known_versions(project: Project, names: Sequence[str], rows: Sequence[VersionRow]
                   ) -> Sequence[VersionRow]:
    """`rows`, once every name asked for is a declared or a stored model: `pyml models nope`
    said "No trained models yet" and exit 0 where every other command refuses the name (an
    audit)."""
    stored = {r.model_name for r in rows}
    missing = [n for n in names if n not in stored]
    if missing:
        try:
            declared = sorted(s.name for s in all_specs(project))
        except PymlError:
            declared = []
        unknown = [n for n in missing if n not in declared]
        if unknown:
            raise unknown_model(unknown[0], declared)
    return rows


def with_hints(text: str, hints: Sequence[str]) -> str:
    """A listing followed by its staleness lines (pyml.store.staleness), if any."""
    return "\n".join([text, *(f"stale: {h}" for h in hints)])


def versions_text(rows: Sequence[VersionRow], status: Mapping[tuple[str, int], str]) -> str:
    """The `pyml models` listing of registry rows and statuses (from either engine)."""
    if not rows:
        return "No trained models yet: run `pyml train`."
    headers = ["model", "version", "status", "created_at", "task", "relation", "train_rows",
               "holdout_rows", "trees", "metric", "value", "baseline"]
    return text_table(headers, [[r.model_name, r.version,
                                 status.get((r.model_name, r.version), ""),
                                 r.created_at, r.task, r.feature_relation, r.train_rows,
                                 r.test_rows, r.num_trees, r.metric, r.value, r.baseline]
                                for r in rows])


def top_predictions(project: Project, model: str, limit: int, lock_timeout: float = 5.0) -> str:
    """The highest-scored rows of ml.<model>_predictions."""
    con = connect(project.db_path, read_only=True, lock_timeout=lock_timeout)
    try:
        cols, rows = tables.top_predictions(con, model, limit)
        hints = stale_hints(con, [model], predictions_only=True)
    finally:
        con.close()
    return with_hints(text_table(cols, rows), hints)


def format_train(r: TrainResult) -> str:
    """What `pyml train` and `pyml tune` print for one new version: rows, metrics, decision
    (one line when the inputs had not changed and nothing was trained)."""
    if r.unchanged:
        return r.decision
    out = [f"{r.name} v{r.version} ({r.task}): {r.rows[0]:,} train / {r.rows[1]:,} "
           f"validation / {r.rows[2]:,} holdout rows, {r.num_trees} trees, {r.seconds:.1f}s"]
    for m in r.metrics:
        base = "" if m.baseline is None else f"   (baseline {m.baseline:.4f})"
        spread = (f" ± {m.std:.4f} over folds" if m.std is not None else
                  f" [{m.ci_low:.4f}, {m.ci_high:.4f}]"
                  if m.ci_low is not None and m.ci_high is not None else "")
        out.append(f"  {m.split} {m.name:<17} {m.value:.4f}{spread}{base}")
    if r.status:
        out.append(f"  -> {r.status}: {r.decision}")
    if r.note:
        out.append(f"  note: {r.note}")
    return "\n".join(out)


def format_score(r: ScoreResult) -> str:
    """What `pyml score` prints for one predictions table."""
    extra = f" and {r.output}" if r.output else ""
    # An incremental score says how many rows it scored anew (the others kept theirs).
    changed = f" ({r.rescored:,} rescored, incremental)" if r.rescored is not None else ""
    return (f"{r.name} v{r.version}: {r.rows:,} rows{changed} -> {r.table}{extra} "
            f"({r.seconds:.1f}s)")


def format_explain(e: ExplainResult) -> str:
    """What `pyml explain` (and `pyml score --explain`) print for one explanations table."""
    return (f"{e.name} v{e.version}: top {e.top_k} contributions of {e.rows:,} rows -> "
            f"{e.table} ({e.seconds:.1f}s)")


def format_drift(result: DriftResult) -> str:
    """The table `pyml drift` prints: one line per feature, drifted ones marked."""

    def num(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    rows = [[f.feature, f.kind, num(f.psi, ".3f"), num(f.ks, ".3f"),
             num(f.unseen_share, ".1%"), f"{f.null_share_train:.1%}",
             f"{f.null_share_now:.1%}", "DRIFT" if f.psi > result.threshold else ""]
            for f in result.features]
    head = (f"{result.name} v{result.version}: {result.relation} ({result.rows:,} rows) vs the "
            f"training snapshot; PSI threshold {result.threshold:g}")
    table = text_table(["feature", "kind", "psi", "ks", "unseen", "null_train", "null_now",
                        ""], rows)
    drifted = [f.feature for f in result.features if f.psi > result.threshold]
    if drifted:
        verdict = (f"{result.name}: {len(drifted)} of {len(result.features)} features drifted "
                   f"(PSI above {result.threshold:g}): {', '.join(drifted)}")
    else:
        verdict = (f"{result.name}: no drift: every feature's PSI is at or below "
                   f"{result.threshold:g}")
    return f"{head}\n{table}\n{verdict}"


def _num(value: float | None, fmt: str = "") -> str:
    if value is None or not math.isfinite(value):
        return ""
    if fmt:
        return format(value, fmt)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def format_profile(result: ProfileResult) -> str:
    """The compact text table `pyml profile` prints, warnings underneath."""
    assoc = "auc" if result.task == "binary" else "spearman"
    headers = ["column", "type", "role", "null", "distinct", "mean / top", "std", "outliers",
               assoc, "mi", "warn"]
    rows = []
    for c in result.columns:
        centre = _num(c.mean) if c.mean is not None else (c.top_categories or "")
        if len(centre) > 28:
            centre = centre[:25] + "..."
        value = c.auc if result.task == "binary" else c.spearman
        rows.append([c.name, c.dtype.lower()[:12], c.role, f"{c.null_rate:.1%}",
                     f"{c.distinct:,}", centre, _num(c.std),
                     "" if c.outlier_share is None else f"{c.outlier_share:.1%}",
                     _num(value, ".3f"), _num(c.mutual_info, ".3f"),
                     str(len(c.warnings)) if c.warnings else ""])
    against = f" against '{result.target}' ({result.task})" if result.target else ""
    out = [f"{result.relation}: {result.rows:,} rows, {len(result.columns)} columns"
           f"{against} -> {result.table}", "", text_table(headers, rows)]
    if result.findings:
        out += ["", f"{len(result.findings)} warning(s):"]
        out += [f"  - {f}" for f in result.findings]
    else:
        out += ["", "No warnings."]
    return "\n".join(out)
