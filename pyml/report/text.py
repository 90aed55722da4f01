"""Plain-text tables for the CLI: registry listings and prediction previews."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyml.dbt.project import Project
from pyml.engines.duckdb import connect
from pyml.store import tables
from pyml.store.lifecycle import statuses
from pyml.store.registry import list_versions


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
        rows = list_versions(con, names)
        status = statuses(con)
    finally:
        con.close()
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
    finally:
        con.close()
    return text_table(cols, rows)
