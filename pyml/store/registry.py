"""The `ml` schema: every model version, its metrics and importances, as plain tables.

A BI tool sees the registry with plain SQL. Boosters are stored as XGBoost's own UBJ bytes
and loaded only through `Booster.load_model`: nothing stored here is ever unpickled or
evaluated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import xgboost as xgb

from pyml.data.encode import Feature, Target
from pyml.engines.duckdb import abort_transaction, first_row
from pyml.errors import ModelNotFound, RegistryError
from pyml.modelling.metrics import Metric

SCHEMA = "ml"

DDL = [
    f"create schema if not exists {SCHEMA}",
    f"""create table if not exists {SCHEMA}.models (
        model_name varchar not null,
        version integer not null,
        created_at timestamp not null,
        task varchar not null,
        objective varchar not null,
        description varchar,
        feature_model varchar not null,
        feature_relation varchar not null,
        target varchar not null,
        target_type varchar not null,
        classes json,
        key_columns json not null,
        features json not null,
        spec json not null,
        params json not null,
        split json not null,
        train_rows bigint not null,
        validation_rows bigint not null,
        test_rows bigint not null,
        dropped_null_target_rows bigint not null,
        num_trees integer not null,
        best_iteration integer,
        dbt_invocation_id varchar,
        pyml_version varchar not null,
        xgboost_version varchar not null,
        booster_format varchar not null,
        booster blob not null,
        primary key (model_name, version)
    )""",
    f"""create table if not exists {SCHEMA}.metrics (
        model_name varchar not null,
        version integer not null,
        split varchar not null,
        metric varchar not null,
        value double,
        baseline double,
        n_rows bigint not null,
        primary key (model_name, version, split, metric)
    )""",
    f"""create table if not exists {SCHEMA}.feature_importance (
        model_name varchar not null,
        version integer not null,
        feature varchar not null,
        importance_type varchar not null,
        value double not null,
        primary key (model_name, version, feature, importance_type)
    )""",
    # Added after the first release: migrate registries created before them.
    f"alter table {SCHEMA}.metrics add column if not exists ci_low double",
    f"alter table {SCHEMA}.metrics add column if not exists ci_high double",
    f"alter table {SCHEMA}.metrics add column if not exists std double",
]


MODEL_COLUMNS = ("model_name, version, created_at, task, objective, description, "
                 "feature_model, feature_relation, target, target_type, classes, key_columns, "
                 "features, spec, params, split, train_rows, validation_rows, test_rows, "
                 "dropped_null_target_rows, num_trees, best_iteration, dbt_invocation_id, "
                 "pyml_version, xgboost_version, booster_format, booster")
# A promotion policy: (con, new version, champion version) -> lifecycle.Decision.
Decide = Callable[[duckdb.DuckDBPyConnection, int, int], Any]


@dataclass(frozen=True)
class NewVersion:
    """Everything a training run stores for one new model version."""

    name: str  # model name
    task: str  # binary | multiclass | regression
    objective: str  # XGBoost objective
    description: str  # from the spec
    feature_model: str  # dbt unique_id
    feature_relation: str  # schema.table trained on
    target: str  # label column
    target_info: Target  # label type and classes
    key: tuple[str, ...]  # key columns
    features: tuple[Feature, ...]  # inputs with category mappings
    spec: dict[str, Any]  # the validated spec
    params: dict[str, Any]  # final XGBoost params
    split: dict[str, Any]  # split method, fractions, cut-offs, row counts
    rows: tuple[int, int, int, int]  # train, validation, test, dropped (NULL target)
    booster: xgb.Booster  # the trained booster (already cut at the best iteration)
    best_iteration: int | None  # early-stopping best round, if any
    dbt_invocation_id: str | None  # dbt run that built the feature model
    metrics: tuple[Metric, ...]  # holdout (and validation) metrics
    importance: tuple[tuple[str, str, float], ...]  # (feature, type, value)
    note: str | None = None  # why this version exists (e.g. the tuning result)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ml schema and registry tables if they are missing."""
    for ddl in DDL:
        con.execute(ddl)
    from pyml.store.lifecycle import ensure_lifecycle

    ensure_lifecycle(con)  # status/note columns, ml.model_events; migrates older registries


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def write_version(con: duckdb.DuckDBPyConnection, new: NewVersion,
                  extra: Callable[[duckdb.DuckDBPyConnection, int], None] | None = None,
                  decide: Decide | None = None) -> int:
    """Store a new version in one transaction; returns its number. Nothing is overwritten.

    `extra(con, version)` writes further per-version rows (evaluation tables, training
    snapshot) inside the same transaction. The version then gets its status from the
    promotion policy `decide` (pyml.lifecycle), in the same transaction too.
    """
    from pyml import __version__

    ensure_schema(con)
    con.execute("begin transaction")
    try:
        row = first_row(con, f"select coalesce(max(version), 0) + 1 from {SCHEMA}.models "
                          "where model_name = ?", [new.name])
        version = int(row[0]) if row else 1
        train_rows, valid_rows, test_rows, dropped = new.rows
        con.execute(
            # Columns named: later releases add columns (status, note) at the end.
            f"insert into {SCHEMA}.models ({MODEL_COLUMNS}) values "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [new.name, version, datetime.now().replace(microsecond=0), new.task, new.objective,
             new.description, new.feature_model, new.feature_relation, new.target,
             new.target_info.dtype,
             _json(list(new.target_info.classes)) if new.target_info.classes else None,
             _json(list(new.key)), _json([f.to_dict() for f in new.features]),
             _json(new.spec), _json(new.params), _json(new.split),
             train_rows, valid_rows, test_rows, dropped,
             new.booster.num_boosted_rounds(), new.best_iteration, new.dbt_invocation_id,
             __version__, xgb.__version__, "ubj", bytes(new.booster.save_raw("ubj"))],
        )
        if new.metrics:
            con.executemany(
                f"insert into {SCHEMA}.metrics (model_name, version, split, metric, value, "
                "baseline, n_rows, ci_low, ci_high, std) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[new.name, version, m.split, m.name,
                  m.value if math.isfinite(m.value) else None, m.baseline, m.n_rows,
                  m.ci_low, m.ci_high, m.std]
                 for m in new.metrics],
            )
        if new.importance:
            con.executemany(
                f"insert into {SCHEMA}.feature_importance values (?, ?, ?, ?, ?)",
                [[new.name, version, f, t, v] for f, t, v in new.importance],
            )
        if extra is not None:
            extra(con, version)
        from pyml.store.lifecycle import on_version_written

        on_version_written(con, new.name, version, new.note, decide)
        con.execute("commit")
    except BaseException:
        abort_transaction(con)
        raise
    return version


@dataclass(frozen=True)
class StoredModel:
    """A registry row, decoded."""

    name: str  # model name
    version: int  # version number
    created_at: datetime  # when it was trained
    task: str  # binary | multiclass | regression
    target: Target  # label type and classes
    key: tuple[str, ...]  # key columns
    features: tuple[Feature, ...]  # inputs with category mappings
    spec: dict[str, Any]  # the spec it was trained with
    feature_relation: str  # schema.table it was trained on
    booster: xgb.Booster  # loaded from UBJ bytes


def load_version(con: duckdb.DuckDBPyConnection, name: str, version: int | None = None
                 ) -> StoredModel:
    """The given version of a model, or its champion (its latest when it has none)."""
    if not _has_registry(con):
        raise ModelNotFound(f"no model '{name}' has been trained in this database: "
                            f"run `pyml train {name}` first")
    if version is None:
        from pyml.store.lifecycle import champion_version

        version = champion_version(con, name)
    sql = (f"select version, created_at, task, target_type, classes, key_columns, features, "
           f"spec, feature_relation, booster_format, booster from {SCHEMA}.models "
           "where model_name = ?")
    params: list[Any] = [name]
    if version is not None:
        sql += " and version = ?"
        params.append(version)
    row = first_row(con, sql + " order by version desc limit 1", params)
    if row is None:
        if version is not None:
            raise ModelNotFound(f"model '{name}' has no version {version}: "
                                "`pyml models` lists the versions")
        raise ModelNotFound(f"model '{name}' has not been trained yet: "
                            f"run `pyml train {name}` first")
    (ver, created, task, ttype, classes, key, feats, spec, relation, fmt, blob) = row
    if fmt not in ("ubj", "json"):
        raise RegistryError(f"model '{name}' version {ver} has booster format {fmt!r}; pyml "
                            "loads only XGBoost ubj/json models: retrain it")
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(blob))
    except (xgb.core.XGBoostError, TypeError, ValueError) as e:
        raise RegistryError(
            f"model '{name}' version {ver}: the stored booster is not a valid XGBoost "
            f"{fmt} model; retrain it with `pyml train {name}`"
        ) from e
    try:
        return StoredModel(
            name=name,
            version=int(ver),
            created_at=created,
            task=task,
            target=Target(ttype, tuple(_decode(classes, list, "classes")) if classes else ()),
            key=tuple(_decode(key, list, "key_columns")),
            features=tuple(Feature.from_dict(f) for f in _decode(feats, list, "features")),
            spec=_decode(spec, dict, "spec"),
            feature_relation=relation,
            booster=booster,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        column = e.args[0] if isinstance(e, _Corrupt) else "features"
        raise RegistryError(f"model '{name}' version {ver}: its ml.models row is corrupt "
                            f"({column}); retrain it with `pyml train {name}`") from e


class _Corrupt(ValueError):
    """A JSON column of ml.models that does not hold what pyml wrote there."""


def _decode(text: str, kind: type, column: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        raise _Corrupt(column) from None
    if not isinstance(value, kind):
        raise _Corrupt(column)
    return value


def _has_registry(con: duckdb.DuckDBPyConnection) -> bool:
    from pyml.engines.duckdb import table_exists

    return table_exists(con, SCHEMA, "models")


def list_versions(con: duckdb.DuckDBPyConnection, names: Sequence[str] = ()
                  ) -> list[dict[str, Any]]:
    """One dict per version with its headline holdout metric, newest first per model."""
    if not _has_registry(con):
        return []
    rel = con.execute(
        f"""select m.model_name, m.version, m.created_at, m.task, m.feature_relation,
                   m.train_rows, m.test_rows, m.num_trees, h.metric, h.value, h.baseline
            from {SCHEMA}.models m
            left join {SCHEMA}.metrics h
              on h.model_name = m.model_name and h.version = m.version
             and h.split = 'holdout'
             and h.metric = case m.task when 'binary' then 'auc'
                                        when 'multiclass' then 'log_loss' else 'rmse' end
            order by m.model_name, m.version desc"""
    )
    cols = [d[0] for d in rel.description]
    rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    return [r for r in rows if not names or r["model_name"] in names]
