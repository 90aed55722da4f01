"""The kinds of dbt target pyml runs on, and what a Spark target's session needs.

A DuckDB target is a file (pyml.dbt.project resolves its path); a `type: spark` target with
`method: session` is an in-process SparkSession, described here by :class:`SparkTarget`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from pyml.errors import EngineError, ProjectError

ENGINES = ("duckdb", "spark")  # dbt target types pyml runs on
# Master URLs a dbt-spark `host:` may hold for `method: session` (dbt itself ignores it).
_MASTER_PREFIXES = ("local", "spark://", "yarn", "k8s://", "mesos://")


@dataclass(frozen=True)
class SparkTarget:
    """A dbt-spark target with `method: session`: where pyml's in-process SparkSession runs."""

    master: str  # spark.master: local[N], spark://host:port, yarn, k8s://...
    schema: str  # the target's schema (dbt-spark: schema = database)
    conf: dict[str, str]  # server_side_parameters: Spark settings for the session


def spark_target(target_name: str, output: dict[str, Any]) -> SparkTarget:
    """The session settings of a `type: spark` target; checks that pyml can run it.

    pyml runs Spark in its own process (`method: session`, as dbt-spark does), so it needs
    pyspark and dbt-spark's session extra: both come with
    `pip install '<pyml checkout>[spark]'`. They are looked up, not imported, so resolving a
    target stays cheap.
    """
    for module in ("pyspark", "dbt.adapters.spark"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package (dbt.adapters) is missing
            found = False
        if not found:
            raise EngineError(f"the dbt target '{target_name}' is type spark: install pyml's "
                              "Spark extra: pip install '<pyml checkout>[spark]'")
    method = output.get("method")
    if method != "session":
        raise ProjectError(
            f"target '{target_name}' is type spark with method {method!r}; pyml runs Spark "
            "in-process and needs `method: session` (a cluster master goes in "
            "server_side_parameters as spark.master)")
    conf = {str(k): str(v) for k, v in (output.get("server_side_parameters") or {}).items()}
    host = str(output.get("host") or "")
    master = conf.pop("spark.master", None) or (
        host if host.startswith(_MASTER_PREFIXES) else "local[*]")
    schema = str(output.get("schema") or output.get("database") or "")
    if not schema:
        raise ProjectError(f"target '{target_name}' (type spark) has no `schema:`; add one")
    return SparkTarget(master, schema, conf)
