"""The `ml` schema: every model version, its metrics and importances, as plain tables.

A BI tool sees the registry with plain SQL. Boosters are stored as XGBoost's own UBJ bytes
and loaded only through `Booster.load_model`: nothing stored here is ever unpickled or
evaluated.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from pyml.data.encode import Feature, Target
from pyml.dbt.spec import trained_part
from pyml.engines.duckdb import (
    first_row,
    qualified,
    relation_columns,
    table_exists,
    transaction,
)
from pyml.errors import ModelNotFound, RegistryError
from pyml.interrupts import note_written
from pyml.store.lifecycle import Decide, champion_version, on_version_written
from pyml.store.names import SCHEMA
from pyml.store.schema import check_registry, ensure_schema, headline_sql

if TYPE_CHECKING:
    import xgboost as xgb

MODELS = qualified(SCHEMA, "models")
EVENTS = qualified(SCHEMA, "model_events")
METRICS = qualified(SCHEMA, "metrics")

MODEL_COLUMNS = ("model_name, version, created_at, task, objective, description, "
                 "feature_model, feature_relation, target, target_type, classes, key_columns, "
                 "features, spec, params, split, train_rows, validation_rows, test_rows, "
                 "dropped_null_target_rows, num_trees, best_iteration, dbt_invocation_id, "
                 "pyml_version, xgboost_version, booster_format, booster")


class MetricRecord(Protocol):
    """What the store writes of one metric (pyml.modelling.metrics.Metric has this shape)."""

    @property
    def split(self) -> str: ...  # holdout | cv
    @property
    def name(self) -> str: ...  # metric name
    @property
    def value(self) -> float: ...  # the model's value (NaN is stored as NULL)
    @property
    def baseline(self) -> float | None: ...  # a trivial baseline's value
    @property
    def n_rows(self) -> int: ...  # rows it was computed on
    @property
    def ci_low(self) -> float | None: ...  # 95% bootstrap interval, low end
    @property
    def ci_high(self) -> float | None: ...  # and high end
    @property
    def std(self) -> float | None: ...  # split cv: standard deviation over folds


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
    metrics: tuple[MetricRecord, ...]  # holdout (and cv) metrics
    importance: tuple[tuple[str, str, float], ...]  # (feature, type, value)
    note: str | None = None  # why this version exists (e.g. the tuning result)
    lineage: Lineage | None = None  # fingerprints of its inputs (ml.lineage); None: unknown


@dataclass(frozen=True)
class Lineage:
    """Fingerprints of what a version was trained from (ml.lineage, and ml.models' releases).

    Two versions with equal fingerprints were trained from the same inputs: `pyml train`
    retrains nothing then (pyml.verbs.train).
    """

    spec: str  # sha256 of the resolved spec's canonical JSON and how it trained
    sql: str | None  # "raw:<sha256> compiled:<sha256>" of the feature model's SQL; None
    data: str  # sha256 of the used columns and an order-independent hash of the rows
    data_rows: int  # rows that fingerprint covers
    pyml_version: str  # pyml release
    xgboost_version: str  # XGBoost release

    def changes(self, other: Lineage) -> list[str]:
        """What differs from `other`: spec, SQL, data, pyml/XGBoost release ([]: nothing)."""
        pairs = (("spec", self.spec, other.spec),
                 ("data", (self.data, self.data_rows), (other.data, other.data_rows)),
                 ("pyml release", self.pyml_version, other.pyml_version),
                 ("XGBoost release", self.xgboost_version, other.xgboost_version))
        changed = [what for what, a, b in pairs if a != b]
        return changed if same_sql(self.sql, other.sql) else ["SQL", *changed]


def same_sql(a: str | None, b: str | None) -> bool:
    """Whether two SQL fingerprints ("raw:<sha256> compiled:<sha256>", either part may be
    missing; older versions stored one part) agree: some kind in both, every kind in both
    equal. A raw-only fingerprint and a compiled-only one cannot be compared: changed."""
    if a is None or b is None:
        return a == b
    x, y = (dict(part.split(":", 1) for part in v.split() if ":" in part) for v in (a, b))
    common = x.keys() & y.keys()
    return bool(common) and all(x[k] == y[k] for k in common)


LINEAGE = qualified(SCHEMA, "lineage")


@dataclass(frozen=True)
class Fingerprinted:
    """A stored version as the unchanged rule sees it."""

    version: int
    status: str  # champion | challenger | retired
    lineage: Lineage
    created_at: datetime


def pick_unchanged(current: Lineage, versions: Sequence[Fingerprinted],
                   crowned_at: datetime | None) -> tuple[int, str] | None:
    """The version `pyml train` need not retrain, with its status, or None (both engines).

    One trained from the current inputs: the champion if it is one. Another only when the
    champion fits the current data (its SQL and data fingerprints are the current ones: it
    differs by a choice, a tuned study, a promotion), or when it was trained after the
    champion was crowned (the policy has judged it against this champion). Else the champion
    was trained on other data and the match never faced it: matching it and training nothing
    left a champion trained on minutes x 60 scoring plain minutes (a README walk)."""
    same = [v for v in versions if not current.changes(v.lineage)]
    champion = next((v for v in versions if v.status == "champion"), None)
    if champion is not None and champion in same:
        return champion.version, champion.status
    fits = champion is None or not {"SQL", "data"} & set(current.changes(champion.lineage))
    judged = [v for v in same if fits or crowned_at is None or v.created_at >= crowned_at]
    return (judged[0].version, judged[0].status) if judged else None


def unchanged_version(con: duckdb.DuckDBPyConnection, name: str, lineage: Lineage
                      ) -> tuple[int, str] | None:
    """The version of model `name` trained from the inputs `lineage` describes, with its
    status, by pick_unchanged's rule; None when there is none. Any version counts, not only
    the latest: after `pyml tune` stored a tuned challenger, a plain `pyml train` on the same
    inputs would retrain the version before it, byte for byte."""
    check_registry(con)
    if not _has_registry(con) or not table_exists(con, SCHEMA, "lineage"):
        return None
    # A registry from before statuses has no status column until a write migrates it.
    status = ("coalesce(m.status, 'champion')" if "status" in
              dict(relation_columns(con, SCHEMA, "models")) else "'champion'")
    rows = con.execute(f"""select m.version, l.spec_sha256, l.sql_sha256, l.data_sha256,
                                  l.data_rows, m.pyml_version, m.xgboost_version, {status},
                                  m.created_at
                           from {MODELS} m join {LINEAGE} l
                             on l.model_name = m.model_name and l.version = m.version
                           where m.model_name = ? order by m.version desc""", [name]).fetchall()
    versions = [Fingerprinted(int(r[0]), str(r[7]), Lineage(
        str(r[1]), None if r[2] is None else str(r[2]), str(r[3]), int(r[4]), str(r[5]),
        str(r[6])), r[8]) for r in rows]
    return pick_unchanged(lineage, versions,
                          crowned_at(con, name) if "status" in status else None)


def crowned_at(con: duckdb.DuckDBPyConnection, name: str) -> datetime | None:
    """When the current champion of `name` last became the champion, if the events say."""
    if not table_exists(con, SCHEMA, "model_events"):
        return None
    row = first_row(con, f"""select max(e.event_at) from {EVENTS} e join {MODELS} m
                              on m.model_name = e.model_name and m.version = e.version
                            where e.model_name = ? and e.to_status = 'champion'
                              and m.status = 'champion'""", [name])
    return row[0] if row and isinstance(row[0], datetime) else None


def same_model(con: duckdb.DuckDBPyConnection, name: str, a: int, b: int) -> bool:
    """Whether versions `a` and `b` of model `name` are the same model: byte-identical
    boosters, and the same trained spec (`trained_part`: a description edit is no other
    model), features (category codes), classes and key."""
    row = first_row(con, f"select x.spec::varchar, y.spec::varchar from {MODELS} x join "
                         f"{MODELS} y on x.model_name = y.model_name where x.model_name = ? "
                         "and x.version = ? and y.version = ? and x.booster = y.booster and "
                         "x.features::varchar = y.features::varchar and "
                         "x.classes::varchar is not distinct from y.classes::varchar and "
                         "x.key_columns::varchar = y.key_columns::varchar and "
                         "x.target_type = y.target_type", [name, a, b])
    if row is None:
        return False
    return trained_part(json.loads(str(row[0]))) == trained_part(json.loads(str(row[1])))


def _xgboost_version() -> str:
    import xgboost as xgb  # imported by whoever trained the booster being written

    return str(xgb.__version__)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def write_version(con: duckdb.DuckDBPyConnection, new: NewVersion,
                  extra: Callable[[duckdb.DuckDBPyConnection, int], None] | None = None,
                  decide: Decide | None = None) -> int:
    """Store a new version in one transaction; returns its number. Nothing is overwritten.

    `extra(con, version)` writes further per-version rows (evaluation tables, training
    snapshot) inside the same transaction. The version then gets its status from the
    promotion policy `decide` (pyml.modelling.policy), in the same transaction too: the
    store calls it, it does not know it.
    """
    from pyml import __version__

    with transaction(con):
        ensure_schema(con, in_transaction=True)  # a failed write creates no table either
        row = first_row(con, f"select coalesce(max(version), 0) + 1 from {MODELS} "
                          "where model_name = ?", [new.name])
        version = int(row[0]) if row else 1
        train_rows, valid_rows, test_rows, dropped = new.rows
        booster = bytes(new.booster.save_raw("ubj"))
        con.execute(
            # Columns named: later releases add columns (status, note) at the end.
            f"insert into {MODELS} ({MODEL_COLUMNS}) values "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [new.name, version, datetime.now().replace(microsecond=0), new.task, new.objective,
             new.description, new.feature_model, new.feature_relation, new.target,
             new.target_info.dtype,
             _json(list(new.target_info.classes)) if new.target_info.classes else None,
             _json(list(new.key)), _json([f.to_dict() for f in new.features]),
             _json(new.spec), _json(new.params), _json(new.split),
             train_rows, valid_rows, test_rows, dropped,
             new.booster.num_boosted_rounds(), new.best_iteration, new.dbt_invocation_id,
             __version__, _xgboost_version(), "ubj", booster],
        )
        if new.metrics:
            con.executemany(
                f"insert into {METRICS} (model_name, version, split, metric, value, "
                "baseline, n_rows, ci_low, ci_high, std) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[new.name, version, m.split, m.name,
                  m.value if math.isfinite(m.value) else None, m.baseline, m.n_rows,
                  m.ci_low, m.ci_high, m.std]
                 for m in new.metrics],
            )
        if new.importance:
            con.executemany(
                f"insert into {qualified(SCHEMA, 'feature_importance')} "
                "(model_name, version, feature, importance_type, value) values (?, ?, ?, ?, ?)",
                [[new.name, version, f, t, v] for f, t, v in new.importance],
            )
        if extra is not None:
            extra(con, version)
        if new.lineage is not None:
            lin = new.lineage
            con.execute(f"insert into {LINEAGE} (model_name, version, spec_sha256, sql_sha256, "
                        "data_sha256, data_rows, booster_sha256) values (?, ?, ?, ?, ?, ?, ?)",
                        [new.name, version, lin.spec, lin.sql, lin.data, lin.data_rows,
                         hashlib.sha256(booster).hexdigest()])
        on_version_written(con, new.name, version, new.note, decide)
    note_written(f"{new.name} v{version}")
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

    # Typed views of the stored spec, with the defaults the spec validator applies, so no
    # caller has to know the spec's JSON keys.
    @property
    def threshold(self) -> float:
        """Binary: the probability at or above which the positive class is predicted."""
        return float(self.spec.get("threshold", 0.5))

    @property
    def description(self) -> str:
        """The spec's description ("" when it has none)."""
        return str(self.spec.get("description") or "")

    @property
    def target_column(self) -> str | None:
        """The label column's name."""
        value = self.spec.get("target")
        return None if value is None else str(value)

    @property
    def classes(self) -> tuple[Any, ...]:
        """Classifier labels in class-index order (empty for regression)."""
        return self.target.classes

    @property
    def positive_class(self) -> Any:
        """Binary: the label predicted at or above the threshold (classes[1]); else None."""
        return self.target.classes[1] if self.task == "binary" else None

    @property
    def schema(self) -> str | None:
        """Schema of the dbt feature model it was trained on."""
        value = self.spec.get("schema")
        return None if value is None else str(value)

    @property
    def relation(self) -> str | None:
        """Table or view name of the dbt feature model it was trained on."""
        value = self.spec.get("relation")
        return None if value is None else str(value)

    @property
    def feature_model(self) -> str:
        """dbt unique_id of the feature model ("" when unknown)."""
        return str(self.spec.get("feature_model") or "")


def load_version(con: duckdb.DuckDBPyConnection, name: str, version: int | None = None
                 ) -> StoredModel:
    """The given version of a model, or its champion (its latest when it has none)."""
    check_registry(con)
    if not _has_registry(con):
        raise ModelNotFound(f"no model '{name}' has been trained in this database: "
                            f"run `pyml train {name}` first")
    if version is None:
        version = champion_version(con, name)
    sql = f"select {STORED_COLUMNS} from {MODELS} where model_name = ?"
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
    return decode_version(name, row)


# The ml.models columns a StoredModel is decoded from, in decode_version's order.
STORED_COLUMNS = ("version, created_at, task, target_type, classes, key_columns, features, "
                  "spec, feature_relation, booster_format, booster")


def decode_version(name: str, row: Sequence[Any]) -> StoredModel:
    """A StoredModel from an ml.models row's STORED_COLUMNS (whichever engine read it):
    the booster loaded from its own bytes, the JSON columns checked."""
    import xgboost as xgb  # here, not at the top: listing versions needs no booster (startup)

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
        labels = tuple(_decode(classes, list, "classes")) if classes else ()
        _check_classes(task, labels, booster)
        return StoredModel(
            name=name,
            version=int(ver),
            created_at=created,
            task=task,
            target=Target(ttype, labels),
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


def _check_classes(task: str, labels: tuple[Any, ...], booster: xgb.Booster) -> None:
    """A classifier's labels must be the ones its booster predicts: two for binary, the
    booster's num_class for multiclass (else every prediction would be of a missing label)."""
    if task == "binary" and len(labels) != 2:
        raise _Corrupt("classes")
    if task == "multiclass":
        config = json.loads(booster.save_config())
        n = int(config["learner"]["learner_model_param"].get("num_class", 0))
        if len(labels) < 2 or len(labels) != n:
            raise _Corrupt("classes")


def _decode(text: str, kind: type, column: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        raise _Corrupt(column) from None
    if not isinstance(value, kind):
        raise _Corrupt(column)
    return value


def _has_registry(con: duckdb.DuckDBPyConnection) -> bool:
    return table_exists(con, SCHEMA, "models")


@dataclass(frozen=True)
class VersionRow:
    """One version in a listing (`pyml models`, `pyml show`), with its headline metric."""

    model_name: str  # model name
    version: int  # version number
    created_at: datetime  # when it was trained
    task: str  # binary | multiclass | regression
    feature_relation: str  # schema.table it was trained on
    train_rows: int  # training part
    test_rows: int  # holdout part
    num_trees: int  # boosting rounds kept
    metric: str | None  # the task's headline metric (pyml.tasks.HEADLINE_METRIC)
    value: float | None  # its holdout value
    baseline: float | None  # the baseline's holdout value
    note: str | None  # why the version exists (None in registries from before notes)


def list_versions(con: duckdb.DuckDBPyConnection, names: Sequence[str] = ()
                  ) -> list[VersionRow]:
    """Every version with its headline holdout metric, newest first per model (all models,
    or those in `names`)."""
    check_registry(con)
    if not _has_registry(con):
        return []
    has_note = first_row(con, "select count(*) from duckdb_columns() where database_name = "
                              "current_database() and schema_name = ? and table_name = "
                              "'models' and column_name = 'note'", [SCHEMA])
    note = "m.note" if has_note and has_note[0] else "null"
    rows = con.execute(
        f"""select m.model_name, m.version, m.created_at, m.task, m.feature_relation,
                   m.train_rows, m.test_rows, m.num_trees, h.metric, h.value, h.baseline,
                   {note}
            from {MODELS} m
            left join {METRICS} h
              on h.model_name = m.model_name and h.version = m.version
             and h.split = 'holdout' and h.metric = {headline_sql('m.task')}
            where len(?) = 0 or list_contains(?, m.model_name)
            order by m.model_name, m.version desc""", [list(names), list(names)]).fetchall()
    return [VersionRow(str(r[0]), int(r[1]), r[2], str(r[3]), str(r[4]), int(r[5]), int(r[6]),
                       int(r[7]), r[8], r[9], r[10], r[11]) for r in rows]
