"""The `ml` registry on Spark: the same tables in a database of the Spark catalog.

Every statement pyml runs against `ml.*` on a Spark target is in this module and in
pyml.store.spark_writer (predictions), as the DuckDB ones are in the rest of pyml/store/.
The tables and their comments are pyml.store.schema's, with Spark types.

Spark's catalog tables (Hive parquet tables) have no transactions, no UPDATE and no DELETE,
so the registry is append-only here and the writes are ordered so that a run killed at any
point leaves a registry that reads correctly (docs/reliability.md):

- A version's status is not stored in a row that would need an UPDATE: `ml.model_events` is
  the log of every change of status, and `ml.models` is a view that joins each row of
  `ml.model_versions` (the immutable version rows) with the `to_status` of its newest event.
  The view has ml.models' DuckDB columns, in the same order.
- A version is written metrics first, then its other tables, then its `ml.model_versions`
  row (the commit point: listings, score and promote see a version only from then on), then
  its events. Each INSERT is one statement writing one file.
- A promotion or rollback is ONE insert of its event rows (retire the old champion, crown
  the new one): a reader sees both or neither.
- Two trainings of the same model at once would both take the next version number: Spark's
  catalog has no lock to stop them. Run one writer per model (as a scheduler does).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import xgboost as xgb

from pyml.engines.spark import qualified, quote, sql, string_literal, table_exists
from pyml.errors import LifecycleError, ModelNotFound
from pyml.interrupts import note_written
from pyml.store import champions, staleness
from pyml.store.drift import Snapshot
from pyml.store.events import actor
from pyml.store.lifecycle import Change, Decision, Outcome, first_decision
from pyml.store.names import SCHEMA
from pyml.store.registry import (
    MODEL_COLUMNS,
    STORED_COLUMNS,
    Fingerprinted,
    Lineage,
    NewVersion,
    StoredModel,
    VersionRow,
    decode_version,
    pick_unchanged,
)
from pyml.store.schema import (
    CALIBRATION,
    CURVES,
    FEATURE_IMPORTANCE,
    LIFT,
    LINEAGE,
    METRICS,
    MODEL_EVENTS,
    MODELS,
    TRAINING_SNAPSHOTS,
    Column,
    Table,
)
from pyml.tasks import HEADLINE_METRIC

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

VERSIONS = Table("model_versions", "One row per trained model version, never changed once "
                 "written (Spark: ml.models is a view adding each version's status from "
                 "ml.model_events).",
                 tuple(c for c in MODELS.columns if c.name != "status"), MODELS.key)
# Created by ensure_schema, in this order (ml.models, the view, comes after them).
SPARK_TABLES = (VERSIONS, METRICS, FEATURE_IMPORTANCE, MODEL_EVENTS, CALIBRATION, LIFT, CURVES,
                TRAINING_SNAPSHOTS, LINEAGE)
# The promotion policy on Spark: (session, new version, champion version) -> Decision.
SparkDecide = Callable[["SparkSession", int, int], Decision]

_TYPES = {"varchar": "string", "json": "string", "blob": "binary", "timestamp": "timestamp",
          "bigint": "bigint", "integer": "int", "double": "double",
          "double[]": "array<double>"}


def spark_type(column: Column) -> str:
    """The Spark type of an ml column (declared with DuckDB types in pyml.store.schema)."""
    return _TYPES[column.type.split()[0].lower()]


def _table(name: str) -> str:
    return qualified(SCHEMA, name)


def create_sql(table: Table) -> str:
    """CREATE TABLE IF NOT EXISTS for one ml table, with its comments, as parquet.

    No NOT NULL: Hive tables take the constraint but Spark cannot add such a column later.
    """
    cols = ", ".join(f"{quote(c.name)} {spark_type(c)} comment {string_literal(c.comment)}"
                     for c in table.columns)
    return (f"create table if not exists {_table(table.name)} ({cols}) using parquet "
            f"comment {string_literal(table.comment)}")


def _models_view_sql() -> str:
    # The newest event of each version carries its status; a version without an event yet
    # (its run was killed between the version row and its events) reads as a challenger.
    names = [c.name for c in MODELS.columns]
    cols = ", ".join(f"{quote(c.name)} comment {string_literal(c.comment)}"
                     for c in MODELS.columns)
    picked = ", ".join("coalesce(s.`status`, 'challenger') as `status`" if n == "status"
                       else f"v.{quote(n)} as {quote(n)}" for n in names)
    return (f"create or replace view {_table('models')} ({cols}) "
            f"comment {string_literal(MODELS.comment)} as select {picked} "
            f"from {_table(VERSIONS.name)} v left join (select `model_name`, `version`, "
            "`to_status` as `status`, row_number() over (partition by `model_name`, `version` "
            f"order by `event_id` desc) as `rn` from {_table(MODEL_EVENTS.name)}) s "
            "on s.`model_name` = v.`model_name` and s.`version` = v.`version` and s.`rn` = 1")


def ensure_schema(spark: SparkSession) -> None:
    """Create the ml database, its tables and the ml.models view where missing."""
    sql(spark, f"create database if not exists {quote(SCHEMA)} comment "
               f"{string_literal('pyml registry, predictions and evaluations')}")
    for table in SPARK_TABLES:
        if not table_exists(spark, SCHEMA, table.name):
            sql(spark, create_sql(table))
        else:
            _add_missing_columns(spark, table)
    if not table_exists(spark, SCHEMA, "models"):
        sql(spark, _models_view_sql())


def _add_missing_columns(spark: SparkSession, table: Table) -> None:
    """Columns a later pyml release added to an ml table (at its end, as pyml.store.schema
    adds them), appended to a catalog written by an earlier one; rows already there read
    NULL in them."""
    have = {f.name.lower() for f in spark.table(_table(table.name)).schema.fields}
    missing = [c for c in table.columns if c.name.lower() not in have]
    if missing:
        cols = ", ".join(f"{quote(c.name)} {spark_type(c)} comment {string_literal(c.comment)}"
                         for c in missing)
        sql(spark, f"alter table {_table(table.name)} add columns ({cols})")


def struct(table: Table) -> StructType:
    """The Spark schema of an ml table's rows (what an insert builds its DataFrame with)."""
    from pyspark.sql.types import (
        ArrayType,
        BinaryType,
        DoubleType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    kinds = {"string": StringType(), "binary": BinaryType(), "timestamp": TimestampType(),
             "bigint": LongType(), "int": IntegerType(), "double": DoubleType(),
             "array<double>": ArrayType(DoubleType())}
    return StructType([StructField(c.name, kinds[spark_type(c)], True) for c in table.columns])


def insert_rows(spark: SparkSession, table: Table, rows: Sequence[Sequence[Any]]) -> None:
    """Append rows (in the table's column order) to ml.<table> in one statement.

    The rows travel as data, never as SQL text; one partition makes one file, which appears
    whole or not at all when the write commits.
    """
    if not rows:
        return
    frame = spark.createDataFrame([tuple(r) for r in rows], struct(table))
    frame.coalesce(1).write.insertInto(_table(table.name))


def _scalar(spark: SparkSession, text: str, args: dict[str, Any] | None = None) -> Any:
    rows = sql(spark, text, args).collect()
    return rows[0][0] if rows else None


def next_version(spark: SparkSession, name: str) -> int:
    """The next version number: one above any a run has used, committed or not.

    ml.metrics is written first, so a run killed before its version row still holds its
    number there and no later version reuses it (its orphan rows stay unseen).
    """
    top = _scalar(spark, f"select max(v) from (select max(`version`) as v from "
                         f"{_table(VERSIONS.name)} where `model_name` = :name union all "
                         f"select max(`version`) from {_table(METRICS.name)} "
                         "where `model_name` = :name)", {"name": name})
    return int(top or 0) + 1


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def write_version(spark: SparkSession, new: NewVersion, *,
                  calibration: Sequence[Sequence[Any]] = (), lift: Sequence[Sequence[Any]] = (),
                  curves: Sequence[Sequence[Any]] = (), snapshots: Sequence[Snapshot] = (),
                  decide: SparkDecide | None = None) -> tuple[int, Decision]:
    """Store a new version (ordered appends, see the module docstring); returns its number
    and the promotion decision. Nothing written before is changed."""
    from pyml import __version__

    ensure_schema(spark)
    version = next_version(spark, new.name)
    nv = [new.name, version]
    insert_rows(spark, METRICS, [
        [*nv, m.split, m.name, m.value if math.isfinite(m.value) else None, m.baseline,
         m.n_rows, m.ci_low, m.ci_high, m.std] for m in new.metrics])
    insert_rows(spark, FEATURE_IMPORTANCE, [[*nv, f, t, v] for f, t, v in new.importance])
    insert_rows(spark, CALIBRATION, [[*nv, *r] for r in calibration])
    insert_rows(spark, LIFT, [[*nv, *r] for r in lift])
    insert_rows(spark, CURVES, [[*nv, *r] for r in curves])
    insert_rows(spark, TRAINING_SNAPSHOTS, [s.row(new.name, version) for s in snapshots])
    booster_ubj = bytes(new.booster.save_raw("ubj"))
    if new.lineage is not None:
        lin = new.lineage
        insert_rows(spark, LINEAGE, [[*nv, lin.spec, lin.sql, lin.data, lin.data_rows,
                                      hashlib.sha256(booster_ubj).hexdigest()]])
    train_rows, valid_rows, test_rows, dropped = new.rows
    row = [new.name, version, datetime.now().replace(microsecond=0), new.task, new.objective,
           new.description, new.feature_model, new.feature_relation, new.target,
           new.target_info.dtype,
           _json(list(new.target_info.classes)) if new.target_info.classes else None,
           _json(list(new.key)), _json([f.to_dict() for f in new.features]), _json(new.spec),
           _json(new.params), _json(new.split), train_rows, valid_rows, test_rows, dropped,
           new.booster.num_boosted_rounds(), new.best_iteration, new.dbt_invocation_id,
           __version__, xgb.__version__, "ubj", booster_ubj, new.note]
    assert [c.name for c in VERSIONS.columns] == [*MODEL_COLUMNS.split(", "), "note"]
    insert_rows(spark, VERSIONS, [row])  # the commit point of the version
    current = champion(spark, new.name)
    decision = (decide(spark, version, current) if current is not None and decide else
                first_decision(new.name, current))
    if decision.promote:
        _crown(spark, new.name, version, current, "challenger", decision.event,
               decision.reason, decision.metrics)
    else:
        _record(spark, [(new.name, version, decision.event, None, "challenger",
                         decision.reason, decision.metrics)])
    note_written(f"{new.name} v{version}")
    return version, decision


Event = tuple[str, int, str, str | None, str | None, str, dict[str, Any] | None]


def _record(spark: SparkSession, events: Sequence[Event]) -> None:
    """Append events (name, version, event, from, to, reason, metrics) in ONE insert."""
    first = int(_scalar(spark, f"select coalesce(max(`event_id`), 0) + 1 from "
                               f"{_table(MODEL_EVENTS.name)}") or 1)
    now, who = datetime.now().replace(microsecond=0), actor()
    insert_rows(spark, MODEL_EVENTS, [
        [first + i, name, version, event, from_status, to_status, who, now, reason,
         None if metrics is None else _json(metrics)]
        for i, (name, version, event, from_status, to_status, reason, metrics)
        in enumerate(events)])


def _crown(spark: SparkSession, name: str, version: int, old: int | None,
           from_status: str | None, event: str, reason: str,
           metrics: dict[str, Any] | None, retire_event: str = "retired") -> None:
    """Retire `old` (if another) and crown `version`, in one insert of both events."""
    events: list[Event] = []
    if old is not None and old != version:
        events.append((name, old, retire_event, "champion", "retired",
                       f"replaced by v{version}", metrics))
    events.append((name, version, event, from_status, "champion", reason, metrics))
    _record(spark, events)


def statuses(spark: SparkSession, name: str | None = None) -> dict[tuple[str, int], str]:
    """(model, version) -> status, from ml.models (the view over the events)."""
    if not table_exists(spark, SCHEMA, "models"):
        return {}
    rows = sql(spark, f"select `model_name`, `version`, `status` from {_table('models')} "
                      "where :name is null or `model_name` = :name", {"name": name}).collect()
    return {(str(n), int(v)): str(s) for n, v, s in rows}


def champion(spark: SparkSession, name: str) -> int | None:
    """The champion's version, or None."""
    found = [v for (_, v), s in statuses(spark, name).items() if s == "champion"]
    return max(found) if found else None


def _versions(spark: SparkSession, name: str) -> list[int]:
    have = sorted(v for (_, v) in statuses(spark, name))
    if not have:
        raise ModelNotFound(f"model '{name}' has not been trained yet: "
                            f"run `pyml train {name}` first")
    return have


def _headline(spark: SparkSession, name: str, versions: Sequence[int]) -> dict[str, Any]:
    rows = sql(spark, f"select m.`version`, m.`task`, h.`metric`, h.`value` from "
                      f"{_table(VERSIONS.name)} m join {_table(METRICS.name)} h on "
                      "h.`model_name` = m.`model_name` and h.`version` = m.`version` and "
                      "h.`split` = 'holdout' where m.`model_name` = :name",
               {"name": name}).collect()
    return {f"v{v}": {"metric": m, "value": val} for v, task, m, val in rows
            if v in versions and m == HEADLINE_METRIC.get(task)}


def promote(spark: SparkSession, name: str, version: int | None = None,
            reason: str | None = None) -> Change:
    """Make `version` (default: the newest) the champion, by hand (one insert)."""
    versions = _versions(spark, name)
    target = versions[-1] if version is None else version
    if target not in versions:
        raise ModelNotFound(f"model '{name}' has no version {target}: `pyml models {name}` "
                            "lists the versions")
    current = champion(spark, name)
    if current == target:
        raise LifecycleError(f"model '{name}' v{target} is already the champion; "
                             f"`pyml models {name}` lists the versions")
    from_status = statuses(spark, name).get((name, target))
    why = "promoted by hand" + (f": {reason}" if reason else "")
    metrics = _headline(spark, name, [v for v in (current, target) if v is not None])
    _crown(spark, name, target, current, from_status, "promoted", why, metrics)
    was = f" (was v{current})" if current is not None else ""
    return Change(name, target, current, f"{name}: v{target} is now the champion{was}")


def _event_rows(spark: SparkSession, name: str) -> list[champions.EventRow]:
    rows = sql(spark, f"select `version`, `event`, `to_status` from "
                      f"{_table(MODEL_EVENTS.name)} where `model_name` = :name "
                      "order by `event_id`", {"name": name}).collect()
    return [(int(v), str(e), t) for v, e, t in rows]


def champion_history(spark: SparkSession, name: str) -> list[int]:
    """The chain of champions that rollbacks walk back through, oldest first (the rule of
    pyml.store.champions, on the Spark event log)."""
    return champions.history(_event_rows(spark, name))


def rollback(spark: SparkSession, name: str, reason: str | None = None) -> Change:
    """Retire the champion and bring back the champion it replaced (one insert)."""
    _versions(spark, name)
    current = champion(spark, name)
    rows = _event_rows(spark, name)
    previous = champions.rollback_target(name, current, champions.history(rows),
                                         champions.crowned(rows))
    assert current is not None  # rollback_target refuses a model without a champion
    why = f"rolled back from v{current}" + (f": {reason}" if reason else "")
    metrics = _headline(spark, name, [current, previous])
    _crown(spark, name, previous, current, "retired", "restored", why, metrics,
           retire_event="rolled_back")
    return Change(name, previous, current, f"{name}: rolled back from v{current} to "
                                           f"v{previous}")


def stale_hints(spark: SparkSession, names: Sequence[str]) -> list[str]:
    """pyml.store.staleness on Spark: one line for each of the models' output tables written
    by another version than the champion. One aggregate job per existing table (min and max
    of model_version; the distinct versions only when they differ)."""
    out = []
    for name in names:
        have = statuses(spark, name)
        serving = champion(spark, name) or max((v for (_, v) in have), default=None)
        for table_of, command in staleness.OUTPUTS:
            table = table_of(name)
            if not table_exists(spark, SCHEMA, table):
                continue
            low, high = sql(spark, f"select min(`model_version`), max(`model_version`) "
                                   f"from {_table(table)}").collect()[0]
            if low is None:
                continue
            versions = (int(low),) if low == high else tuple(int(r[0]) for r in sql(
                spark, f"select distinct `model_version` from {_table(table)} where "
                       "`model_version` is not null order by 1").collect())
            written = staleness.Written(name, f"{SCHEMA}.{table}", versions, serving, command)
            if written.stale:
                out.append(written.hint())
    return out


def last_decision(spark: SparkSession, name: str, version: int) -> Outcome:
    """A version's status and the reason of its newest event."""
    rows = sql(spark, f"select `to_status`, `reason` from {_table(MODEL_EVENTS.name)} where "
                      "`model_name` = :name and `version` = :version order by `event_id` desc "
                      "limit 1", {"name": name, "version": version}).collect()
    return Outcome(str(rows[0][0] or ""), str(rows[0][1] or "")) if rows else Outcome("", "")


def unchanged_version(spark: SparkSession, name: str, lineage: Lineage
                      ) -> tuple[int, str] | None:
    """The version of model `name` trained from the inputs `lineage` describes (no
    `changes`), with its status: the champion if it is one, else the newest; None when there
    is none (versions trained before the Spark registry kept fingerprints never match). The
    Spark twin of pyml.store.registry.unchanged_version: any version counts, not only the
    latest (after `pyml tune` stored a tuned challenger, or a spec edited and reverted)."""
    if not table_exists(spark, SCHEMA, VERSIONS.name) or not table_exists(spark, SCHEMA,
                                                                          LINEAGE.name):
        return None
    rows = sql(spark, f"""select l.`version`, l.`spec_sha256`, l.`sql_sha256`,
                                 l.`data_sha256`, l.`data_rows`, v.`pyml_version`,
                                 v.`xgboost_version`, v.`created_at`
                          from {_table(VERSIONS.name)} v join {_table(LINEAGE.name)} l
                            on l.`model_name` = v.`model_name` and l.`version` = v.`version`
                          where v.`model_name` = :name order by v.`version` desc""",
               {"name": name}).collect()
    status = statuses(spark, name)
    versions = [Fingerprinted(int(r[0]), status.get((name, int(r[0])), "challenger"), Lineage(
        str(r[1]), None if r[2] is None else str(r[2]), str(r[3]), int(r[4]), str(r[5]),
        str(r[6])), r[7]) for r in rows]
    return pick_unchanged(lineage, versions, _crowned_at(spark, name))


def _crowned_at(spark: SparkSession, name: str) -> Any:
    """When the current champion of `name` last became the champion, if the events say
    (pyml.store.registry.crowned_at)."""
    current = champion(spark, name)
    if current is None or not table_exists(spark, SCHEMA, MODEL_EVENTS.name):
        return None
    row = sql(spark, f"select max(`event_at`) from {_table(MODEL_EVENTS.name)} where "
                     "`model_name` = :name and `version` = :version and `to_status` = "
                     "'champion'", {"name": name, "version": current}).collect()
    return row[0][0] if row else None


def load_version(spark: SparkSession, name: str, version: int | None = None) -> StoredModel:
    """The given version of a model, or its champion (its latest when it has none)."""
    if not table_exists(spark, SCHEMA, "models"):
        raise ModelNotFound(f"no model '{name}' has been trained in this Spark catalog: "
                            f"run `pyml train {name}` first")
    if version is None:
        version = champion(spark, name)
    rows = sql(spark, f"select {STORED_COLUMNS} from {_table(VERSIONS.name)} where "
                      "`model_name` = :name and (:version is null or `version` = :version) "
                      "order by `version` desc limit 1",
               {"name": name, "version": version}).collect()
    if not rows:
        if version is not None:
            raise ModelNotFound(f"model '{name}' has no version {version}: "
                                "`pyml models` lists the versions")
        raise ModelNotFound(f"model '{name}' has not been trained yet: "
                            f"run `pyml train {name}` first")
    return decode_version(name, tuple(rows[0]))


def split_record(spark: SparkSession, name: str, version: int) -> dict[str, Any]:
    """A version's stored split record (ml.models.split), {} where it has none."""
    rows = sql(spark, f"select `split` from {_table(VERSIONS.name)} where `model_name` = :name "
                      "and `version` = :version", {"name": name, "version": version}).collect()
    value = json.loads(rows[0][0]) if rows and rows[0][0] else {}
    return value if isinstance(value, dict) else {}


def list_versions(spark: SparkSession, names: Sequence[str] = ()) -> list[VersionRow]:
    """Every version with its headline holdout metric, newest first per model."""
    if not table_exists(spark, SCHEMA, "models"):
        return []
    rows = sql(spark, f"select `model_name`, `version`, `created_at`, `task`, "
                      f"`feature_relation`, `train_rows`, `test_rows`, `num_trees`, `note` "
                      f"from {_table(VERSIONS.name)} order by `model_name`, `version` desc"
               ).collect()
    metrics = sql(spark, f"select `model_name`, `version`, `metric`, `value`, `baseline` from "
                         f"{_table(METRICS.name)} where `split` = 'holdout'").collect()
    by_key = {(str(r[0]), int(r[1]), str(r[2])): (r[3], r[4]) for r in metrics}
    out = []
    for r in rows:
        if names and r[0] not in names:
            continue
        metric = HEADLINE_METRIC.get(str(r[3]))
        value, baseline = by_key.get((str(r[0]), int(r[1]), str(metric)), (None, None))
        out.append(VersionRow(str(r[0]), int(r[1]), r[2], str(r[3]), str(r[4]), int(r[5]),
                              int(r[6]), int(r[7]), metric, value, baseline, r[8]))
    return out
