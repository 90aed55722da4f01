"""ml.trials: every trial of every `pyml tune` study, and reading a study back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from pyml.engines.duckdb import first_row, qualified, table_exists, transaction
from pyml.interrupts import note_written
from pyml.store.names import SCHEMA
from pyml.store.schema import ensure_schema

TABLE = qualified(SCHEMA, "trials")


@dataclass(frozen=True)
class Trial:
    """One row of ml.trials."""

    model_name: str  # model tuned
    study: str  # study id
    trial_number: int  # from 1, as the log counts; 1 = the spec's own parameters
    version: int | None  # version the study's best parameters trained (once linked)
    params: dict[str, Any]  # the trial's parameters
    metric: str  # validation metric optimised
    direction: str  # maximize | minimize
    value: float | None  # best validation value (last reached, if pruned)
    best_round: int | None  # early stopping's best round
    state: str  # complete | pruned | fail
    seconds: float  # wall time
    started_at: datetime  # when it started
    folds: int | None = None  # tune.cv: folds run (value is their mean); None without cv
    value_std: float | None = None  # tune.cv: standard deviation of the folds' values


def record_trials(con: duckdb.DuckDBPyConnection, trials: Sequence[Trial]) -> None:
    """Append a study's trials to ml.trials, in one transaction (version not yet linked).

    The trials of a model's first training come before its first version: the whole registry
    is created here (not ml.trials alone, which next to no ml.models reads as a damaged
    registry), inside the same transaction as the rows.
    """
    rows = [[t.model_name, t.study, t.trial_number, json.dumps(t.params, sort_keys=True),
             t.metric, t.direction, t.value, t.best_round, t.state, t.seconds, t.started_at,
             t.study, t.folds, t.value_std] for t in trials]
    with transaction(con):
        ensure_schema(con, in_transaction=True)
        con.executemany(f"insert into {TABLE} (model_name, study, trial_number, params, "
                        "metric, direction, value, best_round, state, seconds, started_at, "
                        "study_id, folds, value_std) "
                        "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    if trials:  # a Ctrl-C in the fits after the study said "nothing was written" (an audit)
        note_written(f"ml.trials (study {trials[0].study})")


def link_version(con: duckdb.DuckDBPyConnection, study_id: str, version: int) -> None:
    """Mark the study's trials with the version its best parameters trained."""
    con.execute(f"update {TABLE} set version = ? where study_id = ?", [version, study_id])


def trials(con: duckdb.DuckDBPyConnection, name: str, study: str | None = None
           ) -> list[Trial]:
    """The trials of a model's latest (or the given) study, in trial order.

    Works on read-only connections to registries from before study_id (their trials were
    numbered from 0: read as from 1, as the migration renumbers them).
    """
    if not table_exists(con, SCHEMA, "trials"):
        return []
    have = {str(r[0]) for r in con.execute(
        "select column_name from duckdb_columns() where database_name = current_database() "
        "and schema_name = ? and table_name = 'trials'", [SCHEMA]).fetchall()}
    # Old rows (no study_id) are renumbered on read as the migration would.
    fill = "coalesce(study_id, study)" if "study_id" in have else "study"
    shift = "case when study_id is null then 1 else 0 end" if "study_id" in have else "1"
    cv = "folds, value_std" if "folds" in have else "null, null"
    if study is None:
        row = first_row(con, f"select max_by({fill}, started_at) from {TABLE} "
                             "where model_name = ?", [name])
        study = str(row[0]) if row and row[0] is not None else None
    if study is None:
        return []
    rows = con.execute(f"select model_name, {fill}, trial_number + {shift}, version, params, "
                       f"metric, direction, value, best_round, state, seconds, started_at, {cv} "
                       f"from {TABLE} where {fill} = ? order by 3", [study]).fetchall()
    return [Trial(str(r[0]), str(r[1]), int(r[2]), r[3], json.loads(r[4]), str(r[5]),
                  str(r[6]), r[7], r[8], str(r[9]), float(r[10]), r[11], r[12], r[13])
            for r in rows]
