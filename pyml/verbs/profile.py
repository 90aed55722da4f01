"""`pyml profile`: what is in a feature relation, and how each column relates to the target.

Descriptive statistics (null rate, distinct count, min / max / mean / std, quartiles, IQR
outliers, top categories, duplicate keys, class balance) are aggregate queries that DuckDB runs
in parallel over the whole relation. The association with the target (univariate AUC or
Spearman, `pyml.checks`) and scikit-learn's mutual information need the values themselves:
they are computed on a seeded sample of the labelled rows fetched as Arrow.

The result is written to `ml.profile_<relation>` (one row per column, replaced atomically)
and printed as a compact table with the checks' warnings underneath.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

from pyml.data.encode import kind_of
from pyml.dbt.project import Project, all_specs, resolve_relation
from pyml.dbt.spec import ModelSpec
from pyml.engines.duckdb import first_row, qualified, quote, relation_columns
from pyml.errors import SelectionError
from pyml.modelling import checks
from pyml.session import Session
from pyml.store.names import profile_table
from pyml.store.writer import Constant, display_name, replace_table

MI_ROWS = 5_000  # mutual information (k-NN estimator) on a seeded sample of this many rows
TOP_CATEGORIES = 5  # categories listed per text column
_TEMPORAL = ("DATE", "TIMESTAMP", "TIME")


@dataclass(frozen=True)
class ColumnProfile:
    """One column of the relation (one row of ml.profile_<relation>)."""

    name: str  # column name
    dtype: str  # DuckDB type
    role: str  # key | target | feature | excluded | split_column | column (no spec)
    null_rate: float  # share of rows that are NULL
    distinct: int  # distinct non-NULL values
    min_value: str | None  # as text (numbers, dates and strings alike)
    max_value: str | None
    mean: float | None  # numeric only
    std: float | None  # numeric only (sample standard deviation)
    outlier_share: float | None  # numeric: share of non-NULL values beyond 1.5 IQR
    top_categories: str | None  # text / boolean: "value (share), ..."
    auc: float | None  # univariate AUC against a binary target
    spearman: float | None  # Spearman correlation with a numeric target
    mutual_info: float | None  # scikit-learn mutual information with the target (nats)
    warnings: tuple[str, ...]  # the checks' findings that name this column


@dataclass(frozen=True)
class ProfileResult:
    """What `pyml profile` computed and wrote."""

    relation: str  # schema.table profiled
    table: str  # ml.profile_<relation>
    rows: int  # rows in the relation
    target: str | None  # target column profiled against
    task: str | None  # binary | multiclass | regression (spec's, or inferred)
    columns: tuple[ColumnProfile, ...]
    findings: tuple[checks.Finding, ...]  # every warning, in check order


def _choose(project: Project, name: str, target_column: str | None
            ) -> tuple[tuple[str, str], ModelSpec | None, list[ModelSpec], str | None]:
    """(relation, spec, specs on it, target) for a pyml model or dbt model name."""
    specs = all_specs(project)
    by_name = {s.name: s for s in specs}
    if name in by_name:
        chosen = by_name[name]
        relation = (chosen.schema, chosen.relation)
        on = [s for s in specs if (s.schema, s.relation) == relation]
        if target_column is None or target_column == chosen.target:
            return relation, chosen, on, chosen.target
    else:
        relation = resolve_relation(project, name, what="relation")
        on = [s for s in specs if (s.schema, s.relation) == relation]
    if target_column is not None:
        match = [s for s in on if s.target == target_column]
        return relation, (match[0] if match else None), on, target_column
    targets = sorted({s.target for s in on})
    if len(targets) > 1:
        listed = ", ".join(f"{s.name}: {s.target}" for s in on)
        raise SelectionError(
            f"{relation[0]}.{relation[1]} declares pyml models with different targets "
            f"({listed}); give a target column, or name one pyml model "
            f"(e.g. `pyml profile {on[0].name}`)")
    return relation, (on[0] if on else None), on, (targets[0] if targets else None)


def _roles(columns: Sequence[tuple[str, str]], spec: ModelSpec | None,
           target: str | None) -> dict[str, str]:
    roles = {c: "column" for c, _ in columns}
    if spec is None:
        if target in roles:
            roles[str(target)] = "target"
        return roles
    used = set(spec.features) if spec.features is not None else None
    for c in roles:
        if c in spec.key:
            roles[c] = "key"
        elif c == target:
            roles[c] = "target"
        elif c == spec.split.column:
            roles[c] = "split_column"
        elif c in spec.exclude or (used is not None and c not in used):
            roles[c] = "excluded"
        else:
            roles[c] = "feature"
    return roles


def _infer_task(dtype: str, distinct: int) -> str:
    if dtype.upper() == "BOOLEAN" or distinct == 2:
        return "binary"
    if kind_of(dtype) == "numeric":
        return "regression"
    return "multiclass"


def _stats(con: duckdb.DuckDBPyConnection, source: str, columns: Sequence[tuple[str, str]]
           ) -> tuple[int, list[dict[str, Any]]]:
    """One aggregate query for every column, a second for the IQR outliers."""
    exprs = ["count(*)"]
    for c, dtype in columns:
        q = quote(c)
        exprs += [f"count({q})", f"count(distinct {q})"]
        if kind_of(dtype) == "numeric":
            x = f"cast({q} as double)"
            exprs += [f"min({x})::varchar", f"max({x})::varchar", f"avg({x})",
                      f"stddev_samp({x})", f"quantile_cont({x}, 0.25)",
                      f"quantile_cont({x}, 0.75)"]
        else:
            exprs += [f"min({q})::varchar", f"max({q})::varchar", "null", "null", "null",
                      "null"]
    row = first_row(con, f"select {', '.join(exprs)} from {source}")
    assert row is not None
    n = int(row[0])
    stats = []
    for i in range(len(columns)):
        nn, distinct, lo, hi, mean, std, q1, q3 = row[1 + 8 * i: 9 + 8 * i]
        stats.append({"nulls": n - int(nn), "distinct": int(distinct), "min": lo, "max": hi,
                      "mean": mean, "std": std, "q1": q1, "q3": q3, "outliers": None,
                      "non_null": int(nn)})
    numeric = [(i, c) for i, (c, dtype) in enumerate(columns)
               if kind_of(dtype) == "numeric" and dtype.upper() != "BOOLEAN"
               and stats[i]["q1"] is not None and stats[i]["distinct"] > 2]
    if numeric:
        parts, params = [], []
        for i, c in numeric:
            iqr = stats[i]["q3"] - stats[i]["q1"]
            parts.append(f"count(*) filter (where cast({quote(c)} as double) < ? or "
                         f"cast({quote(c)} as double) > ?)")
            params += [stats[i]["q1"] - 1.5 * iqr, stats[i]["q3"] + 1.5 * iqr]
        counts = first_row(con, f"select {', '.join(parts)} from {source}", params)
        assert counts is not None
        for (i, _), k in zip(numeric, counts, strict=True):
            stats[i]["outliers"] = int(k) / stats[i]["non_null"] if stats[i]["non_null"] else None
    return n, stats


def _top(con: duckdb.DuckDBPyConnection, source: str, column: str, n_rows: int) -> str:
    q = quote(column)
    rows = con.execute(f"select {q}::varchar, count(*) from {source} where {q} is not null "
                       f"group by 1 order by 2 desc, 1 limit {TOP_CATEGORIES}").fetchall()
    return ", ".join(f"{v} ({k / n_rows:.0%})" for v, k in rows)


def _sample_arrow(con: duckdb.DuckDBPyConnection, source: str, exprs: Sequence[str],
                  where: str, labelled: int) -> pa.Table:
    # hash() of the whole row: a deterministic sample that does not depend on scan order.
    keep = ""
    if labelled > checks.CHECK_ROWS:
        keep = f" and hash(t) % {labelled} < {checks.CHECK_ROWS}"
    table = con.sql(f"select {', '.join(exprs)} from {source} t where {where}{keep}"
                    ).to_arrow_table()
    assert table is not None
    return table


def _as_numbers(col: pa.ChunkedArray) -> tuple[np.ndarray, bool]:
    """(float64 values with NaN for NULL, is categorical) of one sampled column."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        enc = pc.dictionary_encode(col.combine_chunks())
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.float64)
        codes[np.asarray(enc.indices.is_null())] = np.nan
        return codes, True
    return col.to_numpy().astype(np.float64), False


def _encode_target(col: pa.ChunkedArray, task: str, spec: ModelSpec | None) -> np.ndarray:
    if task == "regression":
        return col.to_numpy().astype(np.float64)
    values = col.to_pylist()
    classes = sorted(set(values), key=lambda v: (str(type(v)), v))
    if task == "binary" and spec is not None and spec.positive_class in classes:
        classes = [c for c in classes if c != spec.positive_class] + [spec.positive_class]
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.float64)


def _mutual_info(task: str, X: np.ndarray, categorical: Sequence[bool], y: np.ndarray
                 ) -> list[float | None]:
    if len(y) < 10 or X.shape[1] == 0:
        return [None] * X.shape[1]
    if len(y) > MI_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(len(y), MI_ROWS, replace=False))
        X, y = X[rows], y[rows]
    X = X.copy()
    for j in range(X.shape[1]):
        missing = np.isnan(X[:, j])
        if missing.all():
            X[:, j] = 0.0
        elif missing.any():
            # NULL as its own code (categorical) or the median (numeric), so it counts.
            X[missing, j] = -1.0 if categorical[j] else np.nanmedian(X[:, j])
    mask = np.asarray(categorical, dtype=bool)
    if task == "regression":
        mi = mutual_info_regression(X, y, discrete_features=mask, random_state=0)
    else:
        mi = mutual_info_classif(X, y, discrete_features=mask, random_state=0)
    return [float(v) for v in mi]


def profile_relation(con: duckdb.DuckDBPyConnection, relation: tuple[str, str],
                     spec: ModelSpec | None, target: str | None,
                     key: Sequence[str] = (), *, write: bool = True) -> ProfileResult:
    """Profile one relation (against `target`, if given) and write ml.profile_<relation>
    (`write=False`: only compute it, e.g. on a read-only connection)."""
    schema, name = relation
    label = f"{schema}.{name}"
    source = qualified(schema, name)
    columns = relation_columns(con, schema, name)
    types = dict(columns)
    if target is not None and target not in types:
        raise SelectionError(f"target column '{target}' is not in {label}; columns are: "
                             f"{', '.join(types)}")
    n, stats = _stats(con, source, columns)
    roles = _roles(columns, spec, target)
    findings: list[checks.Finding] = []
    features = [c for c, _ in columns if roles[c] in ("feature", "column")]
    fstats = [stats[i] for i, (c, _) in enumerate(columns) if c in features]
    findings += checks.column_findings(features, [s["nulls"] for s in fstats],
                                       [s["distinct"] for s in fstats], n)
    for c, s in zip(features, fstats, strict=True):
        if (kind_of(types[c]) == "categorical" and s["non_null"] >= 50
                and s["distinct"] >= checks.KEY_COPY * s["non_null"]):
            findings.append(checks.Finding("id_like", c, (
                f"has a different value in {s['distinct'] / s['non_null']:.0%} of rows, like "
                "an id: exclude it (a model cannot generalise from it)")))
    if key:
        keys_sql = ", ".join(quote(k) for k in key)
        row = first_row(con, f"select count(*) - count(distinct ({keys_sql})) from {source}")
        if row and row[0]:
            findings.append(checks.Finding("duplicate_keys", ", ".join(key), (
                f"{row[0]:,} rows repeat a key already seen; make the key unique in the dbt "
                "model (one row per entity and as-of date)")))
        findings += _key_copies(con, source, key, features, types)
    task = None
    assoc: dict[str, tuple[float | None, float | None, float | None]] = {}
    if target is not None:
        task = spec.task if spec is not None else _infer_task(
            types[target], stats[[c for c, _ in columns].index(target)]["distinct"])
        if task != "regression":
            counts = con.execute(f"select {quote(target)}::varchar, count(*) from {source} "
                                 f"where {quote(target)} is not null group by 1").fetchall()
            findings += checks.target_findings(target, {str(v): int(k) for v, k in counts})
        assoc = _associations(con, source, columns, target, task, spec, features, roles, n)
        aucs = [assoc.get(c, (None, None, None))[0] for c in features]
        rhos = [assoc.get(c, (None, None, None))[1] for c in features]
        findings += checks.leak_findings(features, target, aucs, rhos)
    by_column: dict[str, list[str]] = {}
    for f in findings:
        for c in f.column.split(", "):
            by_column.setdefault(c, []).append(f.message)
    profiles = []
    for (c, dtype), s in zip(columns, stats, strict=True):
        listed = kind_of(dtype) == "categorical" or dtype.upper() == "BOOLEAN"
        top = _top(con, source, c, n) if n and listed else None
        auc, rho, mi = assoc.get(c, (None, None, None))
        profiles.append(ColumnProfile(
            c, dtype, roles[c], s["nulls"] / n if n else 0.0, s["distinct"], s["min"],
            s["max"], s["mean"], s["std"], s["outliers"], top or None, auc, rho, mi,
            tuple(by_column.get(c, ()))))
    table = profile_table(name)
    written = (_write(con, table, label, profiles, target) if write
               else display_name(table))
    return ProfileResult(label, written, n, target, task, tuple(profiles),
                         tuple(findings))


def _key_copies(con: duckdb.DuckDBPyConnection, source: str, key: Sequence[str],
                features: Sequence[str], types: dict[str, str]) -> list[checks.Finding]:
    """Features equal to a key column in >= 98% of rows, or monotone in a numeric key."""
    pairs = [(f, k) for f in features for k in key]
    if not pairs:
        return []
    exprs = [f"avg(case when {quote(f)}::varchar = {quote(k)}::varchar then 1.0 else 0 end)"
             for f, k in pairs]
    exprs += [f"corr(cast({quote(f)} as double), cast({quote(k)} as double))"
              if kind_of(types[f]) == "numeric" and kind_of(types[k]) == "numeric"
              and types[k].upper() != "BOOLEAN" else "null" for f, k in pairs]
    row = first_row(con, f"select {', '.join(exprs)} from {source}")
    assert row is not None
    out = []
    for i, (f, k) in enumerate(pairs):
        same, corr = row[i], row[len(pairs) + i]
        if same is not None and same >= checks.KEY_COPY:
            out.append(checks.Finding("key_copy", f, (
                f"equals key column '{k}' in {same:.0%} of rows; it is a copy of the key: "
                "exclude it")))
        elif corr is not None and abs(corr) >= checks.KEY_COPY:
            out.append(checks.Finding("key_copy", f, (
                f"is a near-linear function of key column '{k}' (correlation {corr:+.3f}); "
                "ids carry no signal that generalises: exclude it")))
    return out


def _associations(con: duckdb.DuckDBPyConnection, source: str,
                  columns: Sequence[tuple[str, str]], target: str, task: str,
                  spec: ModelSpec | None, features: Sequence[str], roles: dict[str, str],
                  n: int) -> dict[str, tuple[float | None, float | None, float | None]]:
    """(AUC, Spearman, mutual information) of each usable column with the target."""
    usable = []
    for c, dtype in columns:
        if c == target:
            continue
        kind = kind_of(dtype)
        if kind == "numeric":
            usable.append((c, f"cast({quote(c)} as double)"))
        elif kind == "categorical":
            usable.append((c, f"cast({quote(c)} as varchar)"))
        elif dtype.upper().startswith(_TEMPORAL):
            usable.append((c, f"cast(epoch({quote(c)}) as double)"))
    if not usable:
        return {}
    row = first_row(con, f"select count({quote(target)}) from {source}")
    labelled = int(row[0]) if row else 0
    exprs = [f"{quote(target)} as __pyml_y"] + [f"{e} as {quote(f'__pyml_c{i}')}"
                                              for i, (_, e) in enumerate(usable)]
    table = _sample_arrow(con, source, exprs, f"{quote(target)} is not null", labelled)
    y = _encode_target(table.column(0), task, spec)
    cols = [_as_numbers(table.column(i + 1)) for i in range(len(usable))]
    X = (np.column_stack([v for v, _ in cols]) if cols
         else np.empty((len(y), 0)))
    categorical = [cat for _, cat in cols]
    aucs, rhos = checks.univariate(task, categorical, X, y)
    mis = _mutual_info(task, X, categorical, y)
    return {c: (aucs[j], rhos[j], mis[j]) for j, (c, _) in enumerate(usable)}


# ml.profile_<relation>'s columns: (name, Arrow type, COMMENT); profiled_at comes last.
_COLUMNS = [
    ("column_name", pa.string(), "column of {label}"),
    ("data_type", pa.string(), "its DuckDB type"),
    ("role", pa.string(), "key, target, feature, excluded, split_column, or column (no pyml "
                          "model declared on {label})"),
    ("null_rate", pa.float64(), "share of rows that are NULL"),
    ("distinct_count", pa.int64(), "distinct non-NULL values"),
    ("min_value", pa.string(), "smallest value, as text"),
    ("max_value", pa.string(), "largest value, as text"),
    ("mean", pa.float64(), "mean (numeric columns)"),
    ("std", pa.float64(), "sample standard deviation (numeric columns)"),
    ("outlier_share", pa.float64(), "share of non-NULL values beyond 1.5 IQR (numeric columns)"),
    ("top_categories", pa.string(), "most frequent values with their shares (text and boolean "
                                    "columns)"),
    ("target", pa.string(), "the target column the associations are measured against"),
    ("target_auc", pa.float64(), "univariate AUC against a binary target, on a sample"),
    ("target_spearman", pa.float64(), "Spearman correlation with the target, on a sample"),
    ("mutual_info", pa.float64(), "mutual information with the target (nats, scikit-learn), "
                                  "on a sample"),
    ("warnings", pa.string(), "the checks' findings about the column, '; '-separated"),
]


def _write(con: duckdb.DuckDBPyConnection, table: str, label: str,
           profiles: Sequence[ColumnProfile], target: str | None) -> str:
    """Replace ml.<table> with one row per profiled column; returns its name for users."""
    rows = pa.Table.from_pylist(
        [dict(zip([c for c, _, _ in _COLUMNS], [
            p.name, p.dtype, p.role, p.null_rate, p.distinct, p.min_value, p.max_value,
            p.mean, p.std, p.outlier_share, p.top_categories, target, p.auc, p.spearman,
            p.mutual_info, "; ".join(p.warnings) or None], strict=True)) for p in profiles],
        schema=pa.schema([(c, t) for c, t, _ in _COLUMNS]))
    comments = {c: text.format(label=label) for c, _, text in _COLUMNS}
    comments["profiled_at"] = "when pyml profile wrote this table (local time)"
    written = replace_table(
        con, table, rows.to_reader(),
        constants=[Constant("profiled_at", "timestamp", datetime.now().replace(microsecond=0))],
        expected_rows=len(profiles), where=f"profile of {label}",
        comment=f"Profile of {label}, one row per column (pyml profile)",
        column_comments=comments)
    return written.table


def profile(session: Session, name: str, *, target_column: str | None = None
            ) -> ProfileResult:
    """Profile a dbt model (or a pyml model's feature relation) against its target."""
    relation, spec, _, target = _choose(session.project, name, target_column)
    with session.database() as con:
        return profile_relation(con, relation, spec, target, spec.key if spec else ())
