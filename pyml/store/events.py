"""The primitives of a version's status: who is champion, set a status, record an event.

Shared by the lifecycle (promotions, rollbacks) and the schema's migration of registries
from before statuses; each runs inside the caller's transaction.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime
from typing import Any

import duckdb

from pyml.engines.duckdb import first_row, qualified
from pyml.store.names import SCHEMA

MODELS = qualified(SCHEMA, "models")
EVENTS = qualified(SCHEMA, "model_events")


def actor() -> str:
    """The OS user running pyml (recorded with every decision)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry, e.g. in some containers
        return os.environ.get("USER") or os.environ.get("USERNAME") or f"uid {os.getuid()}"


def champion(con: duckdb.DuckDBPyConnection, name: str) -> int | None:
    """The champion's version (ml.models must have its status column)."""
    row = first_row(con, f"select max(version) from {MODELS} "
                         "where model_name = ? and status = 'champion'", [name])
    return int(row[0]) if row and row[0] is not None else None


def set_status(con: duckdb.DuckDBPyConnection, name: str, version: int, status: str) -> None:
    """Set one version's status."""
    con.execute(f"update {MODELS} set status = ? where model_name = ? and version = ?",
                [status, name, version])


def record(con: duckdb.DuckDBPyConnection, name: str, version: int, event: str,
           from_status: str | None, to_status: str | None, reason: str,
           metrics: dict[str, Any] | None = None) -> None:
    """Append one row to ml.model_events, by the current OS user, now."""
    row = first_row(con, f"select coalesce(max(event_id), 0) + 1 from {EVENTS}")
    event_id = int(row[0]) if row else 1
    con.execute(
        f"insert into {EVENTS} (event_id, model_name, version, event, from_status, "
        "to_status, actor, event_at, reason, metrics) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [event_id, name, version, event, from_status, to_status, actor(),
         datetime.now().replace(microsecond=0), reason,
         None if metrics is None else json.dumps(metrics, default=str, sort_keys=True)])
