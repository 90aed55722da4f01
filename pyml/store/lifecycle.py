"""Champion, challenger, retired: which version of a model serves, and why.

Every model name has at most one champion; `pyml score`, `pyml serve` and
`pyml.load_model` use it unless a version is asked for. A trained version starts as a
challenger; the promotion policy (pyml.modelling.policy), handed to `write_version` as a
callback, decides in the same transaction whether it replaces the champion; `pyml promote` /
`pyml rollback` change the champion by hand. Every change of status is a row of
ml.model_events. Registries written before statuses existed are migrated on the next write
(pyml.store.schema).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from pyml.engines.duckdb import first_row, qualified, table_exists, transaction
from pyml.errors import LifecycleError, ModelNotFound
from pyml.store import champions
from pyml.store import events as status_events
from pyml.store.events import EVENTS, MODELS, actor
from pyml.store.names import SCHEMA
from pyml.store.schema import check_registry, ensure_schema, headline_sql

__all__ = ["Change", "Decide", "Decision", "Event", "Outcome", "actor", "champion_history",
           "champion_version", "events", "first_decision", "last_decision",
           "on_version_written", "promote", "rollback", "serving_identities", "serving_versions",
           "statuses"]

STATUSES = ("champion", "challenger", "retired")


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
    # `stale: ...` lines of the output tables the new champion did not write (set by
    # pyml.api after the change, with what was rescored; pyml.store.staleness)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Event:
    """One row of ml.model_events."""

    event_id: int  # increasing over the registry
    version: int  # the version whose status changed
    event: str  # promoted | rejected | registered | retired | restored | rolled_back | migrated
    from_status: str | None  # before
    to_status: str | None  # after
    actor: str  # OS user
    event_at: datetime  # when
    reason: str | None  # why


@dataclass(frozen=True)
class Outcome:
    """A version's status and the reason of its newest event (e.g. right after training)."""

    status: str  # champion | challenger | retired; "" when unknown
    reason: str  # "" when there is no event


# A promotion policy: (con, new version, champion version) -> Decision, run inside the
# version's transaction (pyml.modelling.policy.HoldoutPolicy).
Decide = Callable[[duckdb.DuckDBPyConnection, int, int], Decision]


def _has_status(con: duckdb.DuckDBPyConnection) -> bool:
    row = first_row(con, "select count(*) from information_schema.columns where table_catalog "
                         "= current_database() and table_schema = ? and table_name = 'models' "
                         "and column_name = 'status'", [SCHEMA])
    return bool(row and row[0])


def champion_version(con: duckdb.DuckDBPyConnection, name: str) -> int | None:
    """The champion's version, or None where there is none (then the latest version serves).

    Works on read-only connections to registries from before statuses existed.
    """
    if not table_exists(con, SCHEMA, "models") or not _has_status(con):
        return None
    return status_events.champion(con, name)


def statuses(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], str]:
    """(model, version) -> status; a registry from before statuses reads as its migration."""
    if not table_exists(con, SCHEMA, "models"):
        return {}
    if _has_status(con):
        rows = con.execute(f"select model_name, version, status from {MODELS}").fetchall()
        return {(str(n), int(v)): str(s) for n, v, s in rows if s is not None}
    rows = con.execute(f"select model_name, version, version = max(version) over "
                       f"(partition by model_name) from {MODELS}").fetchall()
    return {(str(n), int(v)): "champion" if top else "retired" for n, v, top in rows}


def _make_champion(con: duckdb.DuckDBPyConnection, name: str, version: int,
                   from_status: str | None, event: str, reason: str,
                   metrics: dict[str, Any] | None, retire_event: str = "retired") -> int | None:
    """Retire the current champion (if any) and crown `version`; returns the old champion."""
    old = status_events.champion(con, name)
    if old is not None and old != version:
        status_events.set_status(con, name, old, "retired")
        status_events.record(con, name, old, retire_event, "champion", "retired",
                      f"replaced by v{version}", metrics)
    status_events.set_status(con, name, version, "champion")
    status_events.record(con, name, version, event, from_status, "champion", reason, metrics)
    return old


def first_decision(name: str, champion: int | None) -> Decision:
    """A new version's decision when no policy compares it (on either engine): the first
    version is promoted, any other registered as a challenger to `champion`."""
    if champion is None:
        return Decision(True, "promoted", "first version of the model")
    return Decision(False, "registered", f"challenger to v{champion}; "
                    f"`pyml promote {name}` makes it the champion")


def on_version_written(con: duckdb.DuckDBPyConnection, name: str, version: int,
                       note: str | None, decide: Decide | None) -> Decision:
    """Give a just-inserted version its status and note; run the promotion policy.

    Runs inside the transaction that inserted the version, so the version, its status and
    the events commit together or not at all.
    """
    con.execute(f"update {MODELS} set status = 'challenger', note = ? "
                "where model_name = ? and version = ?", [note, name, version])
    champion = status_events.champion(con, name)
    decision = (decide(con, version, champion) if champion is not None and decide else
                first_decision(name, champion))
    if decision.promote:
        _make_champion(con, name, version, "challenger", decision.event, decision.reason,
                       decision.metrics)
    else:
        status_events.record(con, name, version, decision.event, None, "challenger",
                      decision.reason, decision.metrics)
    return decision


def _versions(con: duckdb.DuckDBPyConnection, name: str) -> list[int]:
    if not table_exists(con, SCHEMA, "models"):
        raise ModelNotFound(f"no model '{name}' has been trained in this database: "
                            f"run `pyml train {name}` first")
    rows = con.execute(f"select version from {MODELS} where model_name = ? "
                       "order by version", [name]).fetchall()
    if not rows:
        raise ModelNotFound(f"model '{name}' has not been trained yet: "
                            f"run `pyml train {name}` first")
    return [int(r[0]) for r in rows]


def _headline(con: duckdb.DuckDBPyConnection, name: str, versions: list[int]
              ) -> dict[str, Any]:
    rows = con.execute(
        f"select m.version, h.metric, h.value from {MODELS} m "
        f"join {qualified(SCHEMA, 'metrics')} h "
        "on h.model_name = m.model_name and h.version = m.version "
        f"and h.split = 'holdout' and h.metric = {headline_sql('m.task')} "
        "where m.model_name = ? and list_contains(?, m.version)",
        [name, versions]).fetchall()
    return {f"v{v}": {"metric": m, "value": val} for v, m, val in rows}


def promote(con: duckdb.DuckDBPyConnection, name: str, version: int | None = None,
            reason: str | None = None) -> Change:
    """Make `version` (default: the newest) the champion, by hand."""
    check_registry(con)
    versions = _versions(con, name)
    target = versions[-1] if version is None else version
    if target not in versions:
        raise ModelNotFound(f"model '{name}' has no version {target}: `pyml show {name}` "
                            "lists the versions")
    with transaction(con):
        # In the transaction: a refused promotion leaves no table created or migrated.
        ensure_schema(con, in_transaction=True)
        current = status_events.champion(con, name)
        if current == target:
            raise LifecycleError(f"model '{name}' v{target} is already the champion; "
                                 f"`pyml show {name}` lists the versions")
        row = first_row(con, f"select status from {MODELS} where model_name = ? "
                             "and version = ?", [name, target])
        from_status = str(row[0]) if row and row[0] is not None else None
        why = "promoted by hand" + (f": {reason}" if reason else "")
        metrics = _headline(con, name, [v for v in (current, target) if v is not None])
        _make_champion(con, name, target, from_status, "promoted", why, metrics)
    was = f" (was v{current})" if current is not None else ""
    return Change(name, target, current, f"{name}: v{target} is now the champion{was}")


def _event_rows(con: duckdb.DuckDBPyConnection, name: str) -> list[champions.EventRow]:
    if not table_exists(con, SCHEMA, "model_events"):
        return []
    rows = con.execute(f"select version, event, to_status from {EVENTS} where model_name = ? "
                       "order by event_id", [name]).fetchall()
    return [(int(v), str(e), t) for v, e, t in rows]


def champion_history(con: duckdb.DuckDBPyConnection, name: str) -> list[int]:
    """The chain of champions that rollbacks walk back through, oldest first
    (pyml.store.champions.history over the model's ml.model_events)."""
    return champions.history(_event_rows(con, name))


def rollback(con: duckdb.DuckDBPyConnection, name: str, reason: str | None = None) -> Change:
    """Retire the champion and bring back the champion it replaced (the one under it in the
    champion history, pyml.store.champions)."""
    check_registry(con)
    _versions(con, name)
    with transaction(con):
        ensure_schema(con, in_transaction=True)  # as in promote: refused, nothing created
        current = status_events.champion(con, name)
        rows = _event_rows(con, name)
        previous = champions.rollback_target(name, current, champions.history(rows),
                                             champions.crowned(rows))
        assert current is not None  # rollback_target refuses a model without a champion
        why = f"rolled back from v{current}" + (f": {reason}" if reason else "")
        metrics = _headline(con, name, [current, previous])
        _make_champion(con, name, previous, "retired", "restored", why, metrics,
                       retire_event="rolled_back")
    return Change(name, previous, current,
                  f"{name}: rolled back from v{current} to v{previous}")


def events(con: duckdb.DuckDBPyConnection, name: str, limit: int = 20) -> list[Event]:
    """The newest decisions about a model, newest first."""
    if not table_exists(con, SCHEMA, "model_events"):
        return []
    rows = con.execute(f"select event_id, version, event, from_status, to_status, actor, "
                       f"event_at, reason from {EVENTS} where model_name = ? "
                       "order by event_id desc limit ?", [name, limit]).fetchall()
    return [Event(int(r[0]), int(r[1]), str(r[2]), r[3], r[4], str(r[5]), r[6], r[7])
            for r in rows]


def last_decision(con: duckdb.DuckDBPyConnection, name: str, version: int) -> Outcome:
    """A version's status and the reason of its newest event, e.g. right after training."""
    row = first_row(con, f"select m.status, (select e.reason from {EVENTS} e "
                         "where e.model_name = m.model_name and e.version = m.version "
                         "order by e.event_id desc limit 1) "
                         f"from {MODELS} m where m.model_name = ? and m.version = ?",
                    [name, version])
    return Outcome(str(row[0] or ""), str(row[1] or "")) if row else Outcome("", "")


def serving_versions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """model name -> the version that serves: its champion, else (a registry from before
    statuses) its latest. Works on read-only connections."""
    check_registry(con)
    if not table_exists(con, SCHEMA, "models"):
        return {}
    latest = con.execute(f"select model_name, max(version) from {MODELS} "
                         "group by model_name").fetchall()
    out = {str(n): int(v) for n, v in latest}
    for (name, version), status in statuses(con).items():
        if status == "champion":
            out[name] = version
    return out


def serving_identities(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str]]:
    """model name -> (the version that serves, when it was trained): what `pyml serve`
    compares to notice a new champion, also one that kept its version number (a registry
    restored from a backup, or built elsewhere and copied in)."""
    versions = serving_versions(con)
    if not versions:
        return {}
    return identities(versions, {(str(n), int(v)): c for n, v, c in con.execute(
        f"select model_name, version, created_at from {MODELS}").fetchall()})


def identities(versions: Mapping[str, int], created: Mapping[tuple[str, int], Any]
               ) -> dict[str, tuple[int, str]]:
    """serving_identities from either engine's answers: the serving versions, and when each
    (model, version) was trained."""
    def stamp(value: Any) -> str:
        return value.isoformat() if isinstance(value, datetime) else str(value)

    return {n: (v, stamp(created.get((n, v)))) for n, v in versions.items()}
