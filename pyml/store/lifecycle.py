"""Champion, challenger, retired: which version of a model serves, and why.

Every model name has at most one champion; `pyml score`, `pyml serve` and
`pyml.load_model` use it unless a version is asked for. A trained version starts as a
challenger. The spec's `promote:` policy decides at train time, in the same transaction that
writes the version: `auto` re-scores the champion on the challenger's holdout rows and
promotes the challenger when it is not worse (by `min_delta`) on the chosen metric; `manual`
leaves it to `pyml promote`. Every change of status is a row of ml.model_events.

Registries written before statuses existed are migrated on the next write: their latest
version becomes the champion (what `pyml score` used before) and the rest are retired.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyml.data.encode import check_schema, matrix_sql
from pyml.data.trainset import labels
from pyml.dbt.spec import ModelSpec
from pyml.dbt.spec_tune import promote_metric
from pyml.engines.duckdb import (
    abort_transaction,
    first_row,
    qualified,
    quote,
    relation_columns,
    stream_arrow,
    table_exists,
)
from pyml.errors import ModelNotFound, PymlError, SchemaMismatch
from pyml.modelling.compare import Comparison, compare
from pyml.modelling.model import LoadedModel
from pyml.store.registry import SCHEMA, load_version

COMPARE_BATCH_ROWS = 100_000  # holdout rows per batch when champion and challenger compete

Log = Callable[[str], None]
STATUSES = ("champion", "challenger", "retired")

DDL = [
    f"alter table {SCHEMA}.models add column if not exists status varchar",
    f"alter table {SCHEMA}.models add column if not exists note varchar",
    f"""create table if not exists {SCHEMA}.model_events (
        event_id bigint not null primary key,
        model_name varchar not null,
        version integer not null,
        event varchar not null,
        from_status varchar,
        to_status varchar,
        actor varchar not null,
        event_at timestamp not null,
        reason varchar,
        metrics json
    )""",
]


@dataclass(frozen=True)
class Decision:
    """What the promotion policy decided for a new version."""

    promote: bool  # the new version becomes the champion
    event: str  # promoted | rejected | registered
    reason: str  # one line, stored in ml.model_events.reason
    metrics: dict[str, Any] | None = None  # what was compared (ml.model_events.metrics)

    @property
    def status(self) -> str:
        """The new version's status after the decision."""
        return "champion" if self.promote else "challenger"


@dataclass(frozen=True)
class Change:
    """A change of champion made by hand (`pyml promote` / `pyml rollback`)."""

    name: str  # model name
    version: int  # the new champion
    previous: int | None  # the champion it replaced
    message: str  # one line for the CLI


Decide = Callable[[duckdb.DuckDBPyConnection, int, int], Decision]


def actor() -> str:
    """The OS user running pyml (recorded with every decision)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry, e.g. in some containers
        return os.environ.get("USER") or os.environ.get("USERNAME") or f"uid {os.getuid()}"


def ensure_lifecycle(con: duckdb.DuckDBPyConnection) -> None:
    """Add the status/note columns and ml.model_events; migrate versions without a status.

    Call outside any transaction (the migration runs in its own).
    """
    for ddl in DDL:
        con.execute(ddl)
    legacy = con.execute(f"select distinct model_name from {SCHEMA}.models "
                         "where status is null").fetchall()
    if not legacy:
        return
    con.execute("begin transaction")
    try:
        for (name,) in legacy:
            if _champion(con, str(name)) is None:
                row = first_row(con, f"select max(version) from {SCHEMA}.models "
                                     "where model_name = ? and status is null", [name])
                latest = int(row[0]) if row and row[0] is not None else None
                if latest is not None:
                    _set_status(con, str(name), latest, "champion")
                    _event(con, str(name), latest, "migrated", None, "champion",
                           "registry upgraded to statuses: the latest version, which "
                           "`pyml score` used, became the champion")
                con.execute(f"update {SCHEMA}.models set status = 'retired' "
                            "where model_name = ? and status is null", [name])
            else:
                con.execute(f"update {SCHEMA}.models set status = 'challenger' "
                            "where model_name = ? and status is null", [name])
        con.execute("commit")
    except BaseException:
        abort_transaction(con)
        raise


def _has_status(con: duckdb.DuckDBPyConnection) -> bool:
    row = first_row(con, "select count(*) from information_schema.columns where table_catalog "
                         "= current_database() and table_schema = ? and table_name = 'models' "
                         "and column_name = 'status'", [SCHEMA])
    return bool(row and row[0])


def _champion(con: duckdb.DuckDBPyConnection, name: str) -> int | None:
    row = first_row(con, f"select max(version) from {SCHEMA}.models "
                         "where model_name = ? and status = 'champion'", [name])
    return int(row[0]) if row and row[0] is not None else None


def champion_version(con: duckdb.DuckDBPyConnection, name: str) -> int | None:
    """The champion's version, or None where there is none (then the latest version serves).

    Works on read-only connections to registries from before statuses existed.
    """
    if not table_exists(con, SCHEMA, "models") or not _has_status(con):
        return None
    return _champion(con, name)


def statuses(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], str]:
    """(model, version) -> status; a registry from before statuses reads as its migration."""
    if not table_exists(con, SCHEMA, "models"):
        return {}
    if _has_status(con):
        rows = con.execute(f"select model_name, version, status from {SCHEMA}.models"
                           ).fetchall()
        return {(str(n), int(v)): str(s) for n, v, s in rows if s is not None}
    rows = con.execute(f"select model_name, version, version = max(version) over "
                       f"(partition by model_name) from {SCHEMA}.models").fetchall()
    return {(str(n), int(v)): "champion" if top else "retired" for n, v, top in rows}


def _set_status(con: duckdb.DuckDBPyConnection, name: str, version: int, status: str) -> None:
    con.execute(f"update {SCHEMA}.models set status = ? where model_name = ? and version = ?",
                [status, name, version])


def _event(con: duckdb.DuckDBPyConnection, name: str, version: int, event: str,
           from_status: str | None, to_status: str | None, reason: str,
           metrics: dict[str, Any] | None = None) -> None:
    row = first_row(con, f"select coalesce(max(event_id), 0) + 1 from {SCHEMA}.model_events")
    event_id = int(row[0]) if row else 1
    con.execute(
        f"insert into {SCHEMA}.model_events (event_id, model_name, version, event, "
        "from_status, to_status, actor, event_at, reason, metrics) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [event_id, name, version, event, from_status, to_status, actor(),
         datetime.now().replace(microsecond=0), reason,
         None if metrics is None else json.dumps(metrics, default=str, sort_keys=True)])


def _make_champion(con: duckdb.DuckDBPyConnection, name: str, version: int,
                   from_status: str | None, event: str, reason: str,
                   metrics: dict[str, Any] | None, retire_event: str = "retired") -> int | None:
    """Retire the current champion (if any) and crown `version`; returns the old champion."""
    old = _champion(con, name)
    if old is not None and old != version:
        _set_status(con, name, old, "retired")
        _event(con, name, old, retire_event, "champion", "retired",
               f"replaced by v{version}", metrics)
    _set_status(con, name, version, "champion")
    _event(con, name, version, event, from_status, "champion", reason, metrics)
    return old


def on_version_written(con: duckdb.DuckDBPyConnection, name: str, version: int,
                       note: str | None, decide: Decide | None) -> Decision:
    """Give a just-inserted version its status and note; run the promotion policy.

    Runs inside the transaction that inserted the version, so the version, its status and
    the events commit together or not at all.
    """
    con.execute(f"update {SCHEMA}.models set status = 'challenger', note = ? "
                "where model_name = ? and version = ?", [note, name, version])
    champion = _champion(con, name)
    if champion is None:
        decision = Decision(True, "promoted", "first version of the model")
    elif decide is None:
        decision = Decision(False, "registered", f"challenger to v{champion}; "
                            f"`pyml promote {name}` makes it the champion")
    else:
        decision = decide(con, version, champion)
    if decision.promote:
        _make_champion(con, name, version, "challenger", decision.event, decision.reason,
                       decision.metrics)
    else:
        _event(con, name, version, decision.event, None, "challenger", decision.reason,
               decision.metrics)
    return decision


class HoldoutPolicy:
    """The spec's `promote:` policy, comparing on the challenger's own holdout rows.

    `holdout_sql` is train.py's split expression (2 = holdout) with its parameters, so the
    rows are exactly those the challenger's holdout metrics were computed on.
    """

    def __init__(self, spec: ModelSpec, holdout_sql: str, holdout_params: list[Any],
                 log: Log) -> None:
        self.spec, self.holdout_sql, self.holdout_params = spec, holdout_sql, holdout_params
        self.log = log

    def __call__(self, con: duckdb.DuckDBPyConnection, version: int, champion: int
                 ) -> Decision:
        spec, policy = self.spec, self.spec.promote
        if policy.policy == "manual":
            return Decision(False, "registered", f"promote.policy is manual: challenger to "
                            f"v{champion}; `pyml promote {spec.name}` makes it the champion")
        metric = promote_metric(policy, spec.task)
        try:
            cmp = holdout_comparison(con, spec, champion, version, metric,
                                     self.holdout_sql, self.holdout_params)
        except _CannotCompare as e:
            reason = (f"champion v{champion} cannot be scored on v{version}'s holdout rows "
                      f"({e}); `pyml promote {spec.name}` promotes v{version} by hand")
            self.log(f"[{spec.name}] v{version} stays challenger: {reason}")
            return Decision(False, "registered", reason)
        text = cmp.describe(f"champion v{champion}", f"v{version}")
        metrics = {"metric": cmp.metric, "champion": {"version": champion, "value": cmp.a},
                   "challenger": {"version": version, "value": cmp.b}, "gain": cmp.gain,
                   "ci95": None if cmp.ci_low is None else [cmp.ci_low, cmp.ci_high],
                   "n_rows": cmp.n_rows, "min_delta": policy.min_delta}
        if cmp.gain >= -1e-12 + policy.min_delta:
            reason = f"auto: {text}; not worse by min_delta {policy.min_delta:g}"
            self.log(f"[{spec.name}] v{version} promoted to champion: {text}")
            return Decision(True, "promoted", reason, metrics)
        reason = (f"auto: {text}; needs a gain of at least {policy.min_delta:g}: "
                  f"v{champion} stays champion")
        self.log(f"[{spec.name}] v{version} stays challenger: {text}")
        return Decision(False, "rejected", reason, metrics)


class _CannotCompare(PymlError):
    pass


def holdout_comparison(con: duckdb.DuckDBPyConnection, spec: ModelSpec, champion: int,
                       challenger: int, metric: str, holdout_sql: str,
                       holdout_params: list[Any]) -> Comparison:
    """Score both versions on the challenger's holdout rows and compare them on `metric`."""
    old = LoadedModel(load_version(con, spec.name, champion))
    new = LoadedModel(load_version(con, spec.name, challenger))
    if old.stored.task != new.stored.task:
        raise _CannotCompare(f"its task is {old.stored.task}")
    if list(old.stored.target.classes) != list(new.stored.target.classes):
        raise _CannotCompare(f"its classes {list(old.stored.target.classes)} differ")
    columns = relation_columns(con, spec.schema, spec.relation)
    label = f"{spec.schema}.{spec.relation}"
    try:
        check_schema(f"champion v{champion}", old.stored.features, columns, label)
    except SchemaMismatch as e:
        raise _CannotCompare(str(e).split(": ", 1)[-1]) from e
    target = quote(spec.target)
    source = qualified(spec.schema, spec.relation)
    # Streamed in batches, keeping only labels and the two predictions: the holdout may be
    # far bigger than memory (pyml.extmem).
    reader = stream_arrow(con, f"select {target} as __pyml_y, "
                               f"{matrix_sql(old.stored.features)} as __pyml_old, "
                               f"{matrix_sql(new.stored.features)} as __pyml_new "
                               f"from {source} where {target} is not null and "
                               f"({holdout_sql}) = 2", COMPARE_BATCH_ROWS, holdout_params)
    classes = (pa.array(list(new.stored.target.classes)) if spec.task != "regression"
               else None)
    ys, olds, news = [], [], []
    for batch in reader:
        y_col = batch.column(0)
        if classes is not None and pc.index_in(y_col, value_set=classes).null_count:
            reader.close()
            raise _CannotCompare("the holdout has labels outside the trained classes")
        ys.append(labels(y_col, classes))
        olds.append(_raw(old, batch.column(1)))
        news.append(_raw(new, batch.column(2)))
    if not ys:
        raise _CannotCompare("the holdout is empty")
    return compare(spec.task, metric, np.concatenate(ys), np.concatenate(olds),
                   np.concatenate(news), float(old.stored.spec.get("threshold", 0.5)),
                   float(new.stored.spec.get("threshold", 0.5)))


def _raw(model: LoadedModel, column: pa.Array) -> np.ndarray:
    X = model.encoder.from_fixed(column, f"model '{model.name}' v{model.version}")
    return np.asarray(model.stored.booster.inplace_predict(X), dtype=np.float64)


def _versions(con: duckdb.DuckDBPyConnection, name: str) -> list[int]:
    if not table_exists(con, SCHEMA, "models"):
        raise ModelNotFound(f"no model '{name}' has been trained in this database: "
                            f"run `pyml train {name}` first")
    rows = con.execute(f"select version from {SCHEMA}.models where model_name = ? "
                       "order by version", [name]).fetchall()
    if not rows:
        raise ModelNotFound(f"model '{name}' has not been trained yet: "
                            f"run `pyml train {name}` first")
    return [int(r[0]) for r in rows]


def _headline(con: duckdb.DuckDBPyConnection, name: str, versions: list[int]
              ) -> dict[str, Any]:
    rows = con.execute(
        f"select m.version, h.metric, h.value from {SCHEMA}.models m join {SCHEMA}.metrics h "
        "on h.model_name = m.model_name and h.version = m.version and h.split = 'holdout' "
        "and h.metric = case m.task when 'binary' then 'auc' when 'multiclass' then 'log_loss' "
        "else 'rmse' end where m.model_name = ? and list_contains(?, m.version)",
        [name, versions]).fetchall()
    return {f"v{v}": {"metric": m, "value": val} for v, m, val in rows}


def promote(con: duckdb.DuckDBPyConnection, name: str, version: int | None = None,
            reason: str | None = None) -> Change:
    """Make `version` (default: the newest) the champion, by hand."""
    versions = _versions(con, name)
    ensure_lifecycle(con)
    target = versions[-1] if version is None else version
    if target not in versions:
        raise ModelNotFound(f"model '{name}' has no version {target}: `pyml show {name}` "
                            "lists the versions")
    con.execute("begin transaction")
    try:
        current = _champion(con, name)
        if current == target:
            raise PymlError(f"model '{name}' v{target} is already the champion; "
                            f"`pyml show {name}` lists the versions")
        row = first_row(con, f"select status from {SCHEMA}.models where model_name = ? "
                             "and version = ?", [name, target])
        from_status = str(row[0]) if row and row[0] is not None else None
        why = "promoted by hand" + (f": {reason}" if reason else "")
        metrics = _headline(con, name, [v for v in (current, target) if v is not None])
        _make_champion(con, name, target, from_status, "promoted", why, metrics)
        con.execute("commit")
    except BaseException:
        abort_transaction(con)
        raise
    was = f" (was v{current})" if current is not None else ""
    return Change(name, target, current, f"{name}: v{target} is now the champion{was}")


def champion_history(con: duckdb.DuckDBPyConnection, name: str) -> list[int]:
    """The chain of champions that rollbacks walk back through, oldest first."""
    rows = con.execute(f"select version, event from {SCHEMA}.model_events where model_name = ? "
                       "and event in ('promoted', 'migrated', 'rolled_back') order by event_id",
                       [name]).fetchall()
    stack: list[int] = []
    for version, event in rows:
        if event == "rolled_back":
            if stack and stack[-1] == version:
                stack.pop()
        elif not stack or stack[-1] != version:
            stack.append(int(version))
    return stack


def rollback(con: duckdb.DuckDBPyConnection, name: str, reason: str | None = None) -> Change:
    """Retire the champion and bring back the champion it replaced."""
    _versions(con, name)
    ensure_lifecycle(con)
    con.execute("begin transaction")
    try:
        current = _champion(con, name)
        history = champion_history(con, name)
        if current is None or len(history) < 2 or history[-1] != current:
            only = f" (v{current} is the only champion it has had)" if current else ""
            raise PymlError(f"model '{name}' has no earlier champion to roll back to{only}; "
                            f"`pyml promote {name} --version N` picks a version by hand")
        previous = history[-2]
        why = f"rolled back from v{current}" + (f": {reason}" if reason else "")
        metrics = _headline(con, name, [current, previous])
        _make_champion(con, name, previous, "retired", "restored", why, metrics,
                       retire_event="rolled_back")
        con.execute("commit")
    except BaseException:
        abort_transaction(con)
        raise
    return Change(name, previous, current,
                  f"{name}: rolled back from v{current} to v{previous}")


def events(con: duckdb.DuckDBPyConnection, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest decisions about a model, newest first."""
    if not table_exists(con, SCHEMA, "model_events"):
        return []
    rel = con.execute(f"select event_id, version, event, from_status, to_status, actor, "
                      f"event_at, reason from {SCHEMA}.model_events where model_name = ? "
                      "order by event_id desc limit ?", [name, limit])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]



def last_decision(con: duckdb.DuckDBPyConnection, name: str, version: int) -> tuple[str, str]:
    """(status, reason of its newest event) of a version, e.g. right after training."""
    row = first_row(con, f"select m.status, (select e.reason from {SCHEMA}.model_events e "
                         "where e.model_name = m.model_name and e.version = m.version "
                         "order by e.event_id desc limit 1) "
                         f"from {SCHEMA}.models m where m.model_name = ? and m.version = ?",
                    [name, version])
    return (str(row[0] or ""), str(row[1] or "")) if row else ("", "")
