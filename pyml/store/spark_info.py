"""What `pyml show`, `pyml export` and `pyml serve` read about a version on a Spark target:
its ml.models row, its metrics, the model's events and the versions that serve.

The reads of pyml.store.evaluation and pyml.store.lifecycle, on the Spark registry
(pyml.store.spark_registry), returning the same shapes, so the renderers and writers of
show, export and serve take either engine's answer unchanged.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pyml.engines.spark import qualified, quote, sql, table_exists
from pyml.store.evaluation import JSON_COLUMNS
from pyml.store.lifecycle import Event, identities
from pyml.store.names import SCHEMA
from pyml.store.schema import METRICS, MODEL_EVENTS, MODELS
from pyml.store.spark_registry import statuses

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _dicts(spark: SparkSession, table: str, columns: list[str], where: str,
           args: dict[str, Any], order: str = "") -> list[dict[str, Any]]:
    """`columns` of the rows of ml.<table> that `where` picks, as dicts; [] where the table
    does not exist yet."""
    if not table_exists(spark, SCHEMA, table):
        return []
    rows = sql(spark, f"select {', '.join(quote(c) for c in columns)} from "
                      f"{qualified(SCHEMA, table)} where {where}"
                      + (f" order by {order}" if order else ""), args).collect()
    return [dict(zip(columns, tuple(r), strict=True)) for r in rows]


def model_row(spark: SparkSession, name: str, version: int) -> dict[str, Any]:
    """The version's ml.models row without the booster, JSON columns decoded ({} if none):
    pyml.store.evaluation.model_row on Spark."""
    columns = [c.name for c in MODELS.columns if c.name != "booster"]
    rows = _dicts(spark, "models", columns, "`model_name` = :name and `version` = :version",
                  {"name": name, "version": version})
    row = rows[0] if rows else {}
    for key in JSON_COLUMNS:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def metrics(spark: SparkSession, name: str, version: int) -> list[dict[str, Any]]:
    """The version's ml.metrics rows by split and metric (pyml.store.evaluation.metrics)."""
    columns = [c.name for c in METRICS.columns if c.name not in ("model_name", "version")]
    return _dicts(spark, METRICS.name, columns, "`model_name` = :name and `version` = :version",
                  {"name": name, "version": version}, "`split`, `metric`")


def events(spark: SparkSession, name: str, limit: int = 20) -> list[Event]:
    """The newest decisions about a model, newest first (pyml.store.lifecycle.events)."""
    rows = _dicts(spark, MODEL_EVENTS.name,
                  ["event_id", "version", "event", "from_status", "to_status", "actor",
                   "event_at", "reason"], "`model_name` = :name", {"name": name},
                  f"`event_id` desc limit {int(limit)}")
    return [Event(int(r["event_id"]), int(r["version"]), str(r["event"]), r["from_status"],
                  r["to_status"], str(r["actor"]), r["event_at"], r["reason"]) for r in rows]


def serving_versions(spark: SparkSession) -> dict[str, int]:
    """model name -> the version that serves: its champion, else its latest
    (pyml.store.lifecycle.serving_versions)."""
    out: dict[str, int] = {}
    champions: dict[str, int] = {}
    for (name, version), status in statuses(spark).items():
        out[name] = max(out.get(name, version), version)
        if status == "champion":
            champions[name] = version
    return {**out, **champions}


def serving_identities(spark: SparkSession) -> dict[str, tuple[int, str]]:
    """model name -> (the version that serves, when it was trained)
    (pyml.store.lifecycle.serving_identities)."""
    return identities(serving_versions(spark), {
        (str(r["model_name"]), int(r["version"])): r["created_at"] for r in _dicts(
            spark, "models", ["model_name", "version", "created_at"], "true", {})})
