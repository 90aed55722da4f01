"""Fingerprints of a training run's inputs: the spec, the dbt SQL, the data, the releases.

Each version stores them (ml.lineage; the releases are ml.models' columns), and `pyml train`
trains nothing when a model's inputs match its latest version's (pyml.verbs.train):

- the spec: sha256 of its canonical JSON (keys sorted) after the caller's overrides, plus how
  it trains (tuning, external memory);
- the SQL: sha256 of the feature model's raw SQL in dbt's manifest (`raw:`), and of its
  compiled SQL when the manifest has it (`compiled:`, after a `dbt build` or `dbt compile`
  that ran the model; a manifest parsed since, or written by a run that selected other
  models, has the raw SQL only). Two fingerprints agree when every kind both have is
  equal: a raw-only one matches a version trained after a build, since the data
  fingerprint already covers what the compiled SQL built;
- the data: computed in SQL, so no row leaves DuckDB: the used columns' names and types, the
  row count and two sums of per-row hashes over the key, the label, every feature and the
  time split's column. A sum does not depend on row order, and a duplicated row counts twice
  (an XOR would cancel it); a change to any cell changes its row's hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import xgboost as xgb

from pyml.data.encode import Feature
from pyml.dbt.project import Project
from pyml.dbt.spec import ModelSpec, trained_part
from pyml.engines.duckdb import first_row, qualified, quote
from pyml.store.registry import Lineage


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def spec_sha256(spec: ModelSpec, how: Mapping[str, Any]) -> str:
    """The spec's fingerprint: its canonical JSON and `how` it trains (tuning, disk)."""
    # Keys read on every run (monitor, score, description, promote, ...) are left out as
    # their defaults: editing them trains nothing (a README walk found it for score.relation,
    # an audit for description), and the fingerprints of specs without them stay as they were.
    return _sha256(_canonical({"spec": trained_part(spec.to_dict()), "how": dict(how)}))


def sql_sha256(project: Project | None, unique_id: str) -> str | None:
    """`raw:<sha256> compiled:<sha256>` of the feature model's raw and compiled SQL in the
    manifest (each when the manifest has it; pyml.store.registry.same_sql compares them);
    None without a project, a node or either SQL."""
    node = (project.manifest.get("nodes") or {}).get(unique_id) if project else None
    if not isinstance(node, dict):
        return None
    parts = [f"{kind}:{_sha256(code)}" for kind, field in (("raw", "raw_code"),
                                                           ("compiled", "compiled_code"))
             if isinstance(code := node.get(field), str) and code]
    return " ".join(parts) or None


def used_columns(spec: ModelSpec, features: Sequence[Feature]) -> list[str]:
    """Every column a training run reads: key, label, features, the time split's column."""
    names = [*spec.key, spec.target, *(f.name for f in features)]
    if spec.split.method == "time" and spec.split.column:
        names.append(spec.split.column)
    return list(dict.fromkeys(names))


def data_fingerprint(con: duckdb.DuckDBPyConnection, spec: ModelSpec,
                     features: Sequence[Feature], types: Mapping[str, str]) -> tuple[str, int]:
    """The relation's order-independent fingerprint over the used columns, and its rows."""
    names = used_columns(spec, features)
    cols = ", ".join(quote(n) for n in names)
    # Two differently seeded 64-bit row hashes, summed as HUGEINT (no overflow).
    row = first_row(con, f"select count(*), cast(sum(hash({cols})) as varchar), "
                         f"cast(sum(hash({cols}, 'pyml-lineage')) as varchar) "
                         f"from {qualified(spec.schema, spec.relation)}")
    rows, first, second = (int(row[0]), row[1], row[2]) if row else (0, None, None)
    return data_digest(names, types, rows, (first, second)), rows


def data_digest(names: Sequence[str], types: Mapping[str, str], rows: int,
                sums: tuple[str | None, str | None]) -> str:
    """The data fingerprint from the used columns, the row count and the two row-hash sums
    (each engine sums its own 64-bit row hash: a fingerprint is compared only with versions
    of the same registry, so the engines never need to agree on it)."""
    columns = [[n, types.get(n)] for n in names]
    return _sha256(_canonical({"columns": columns, "rows": rows, "sums": list(sums)}))


def fingerprints(con: duckdb.DuckDBPyConnection, project: Project | None, spec: ModelSpec,
                 features: Sequence[Feature], types: Mapping[str, str],
                 how: Mapping[str, Any]) -> Lineage:
    """All of a training run's fingerprints, with this pyml's and XGBoost's releases."""
    data, rows = data_fingerprint(con, spec, features, types)
    return lineage_of(project, spec, how, data, rows)


def lineage_of(project: Project | None, spec: ModelSpec, how: Mapping[str, Any], data: str,
               rows: int) -> Lineage:
    """A run's fingerprints from its data fingerprint, with this pyml's and XGBoost's
    releases."""
    from pyml import __version__

    return Lineage(spec_sha256(spec, how), sql_sha256(project, spec.feature_model), data,
                   rows, __version__, xgb.__version__)
