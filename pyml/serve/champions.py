"""The champions `pyml serve` answers with, kept in memory and refreshed from the registry.

The server never keeps the DuckDB file open: every `poll_seconds` (or on SIGHUP) it opens the
file read-only for a moment, reads which version of each model is the champion, loads the
ones that changed and closes it again, so `pyml score`, `pyml train` and `dbt build` can
take the write lock in between. A write lock held by another process skips that round.

Where the champions come from is a `Registry` (the loader seam): `DuckDBRegistry` (the file,
as above) or `SparkRegistry` (a Spark target's catalog, through the process's SparkSession).
The app (pyml.serve.app) sees only `Champions` and `Served`, whichever engine it is.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import duckdb

from pyml.data.encode import READ_BOOLEAN, READ_CATEGORY, READ_NUMBER, Feature, input_plan
from pyml.data.records import prepare
from pyml.engines.duckdb import connect
from pyml.errors import DatabaseLocked, OutputNameClash, PymlError
from pyml.modelling.model import LoadedModel, check_outputs
from pyml.store.registry import StoredModel, load_version
from pyml.tasks import SERVE_FIELDS

# The JSON type a client sends for a feature, by how the input plan reads it.
JSON_TYPE = {READ_NUMBER: "number", READ_BOOLEAN: "boolean", READ_CATEGORY: "string"}


@dataclass(frozen=True)
class Served:
    """One champion in memory, with what the endpoints report about it."""

    model: LoadedModel  # booster + encoder
    info: dict[str, Any]  # GET /models/{name}
    plan: tuple[Any, ...]  # the input plan as pyml.data.records.encode_rows reads it
    outputs: tuple[str, ...]  # prediction fields, as the columns of ml.<model>_predictions
    refused: str | None = None  # why predictions are refused (a version from before the
    # output-name rule whose key or classes clash with the fields it would answer with)

    @cached_property
    def known_fields(self) -> frozenset[str]:
        """The record fields the model reads or echoes: its features and key columns."""
        stored = self.model.stored
        return frozenset([*(f.name for f in stored.features), *stored.key])


def load_served(con: duckdb.DuckDBPyConnection, name: str, version: int) -> Served:
    """Load one version from the DuckDB registry and describe it (GET /models/{name})."""
    from pyml.store import evaluation
    from pyml.store.lifecycle import statuses

    stored = load_version(con, name, version)
    return describe(stored, evaluation.metrics(con, name, stored.version),
                    statuses(con).get((name, stored.version), "champion"))


def load_served_spark(spark: Any, name: str, version: int) -> Served:
    """load_served on a Spark target: the version from the Spark registry."""
    from pyml.store import spark_info, spark_registry

    stored = spark_registry.load_version(spark, name, version)
    return describe(stored, spark_info.metrics(spark, name, stored.version),
                    spark_registry.statuses(spark, name).get((name, stored.version),
                                                             "champion"))


def describe(stored: StoredModel, metric_rows: Sequence[dict[str, Any]], status: str
             ) -> Served:
    """A loaded version, its ml.metrics rows and status -> what the server keeps of it."""
    name = stored.name
    # One thread per prediction: requests are small and concurrency comes from requests;
    # OpenMP's thread start-up would cost more than the trees.
    stored.booster.set_param({"nthread": 1})
    model = LoadedModel(stored)
    metrics: dict[str, dict[str, Any]] = {}
    for r in metric_rows:
        r = dict(r)
        metrics.setdefault(str(r.pop("split")), {})[str(r.pop("metric"))] = r
    feats = stored.features
    rules = input_plan(feats)
    info: dict[str, Any] = {
        "name": name, "version": stored.version,
        "status": status,
        "task": stored.task, "description": stored.description,
        "created_at": stored.created_at.isoformat(),
        "target": {"column": stored.target_column, "type": stored.target.dtype,
                   "classes": list(stored.target.classes)},
        "threshold": stored.threshold if stored.task == "binary" else None,
        "key": list(stored.key),
        "features": [{"name": f.name, "kind": f.kind, "dtype": f.dtype,
                      "json_type": JSON_TYPE[rule.read], "categories": list(f.categories)}
                     for f, rule in zip(feats, rules, strict=True)],
        "outputs": [c.name for c in model.output_columns()],
        "metrics": metrics,
    }
    try:
        check_outputs(stored, SERVE_FIELDS)
        refused = None
    except OutputNameClash as e:  # the other champions are still served
        refused = str(e)
    return Served(model, info, served_plan(feats), tuple(info["outputs"]), refused)


def served_plan(features: Sequence[Feature]) -> tuple[Any, ...]:
    """The model's input plan (pyml.data.encode.input_plan) as the request encoder reads it:
    the same JSON form the model card of `pyml export` carries."""
    return prepare([rule.to_dict() for rule in input_plan(features)])


def champion_versions(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str]]:
    """model name -> (the version that serves: its champion, else its latest; when it was
    trained)."""
    from pyml.store.lifecycle import serving_identities

    return serving_identities(con)


class Reader(NamedTuple):
    """One open look at a registry: which version of each model serves, and loading one."""

    # model name -> (the version that serves, when it was trained): a new champion is a new
    # pair, also when a file restored from a backup gave another model the same version.
    versions: Callable[[], dict[str, tuple[int, str]]]
    load: Callable[[str, int], Served]  # (name, version) -> the loaded version


class Registry(Protocol):
    """Where the champions come from: the loader seam between the server and an engine."""

    def reader(self, lock_timeout: float) -> AbstractContextManager[Reader]:
        """The registry open for one refresh, let go of when the block ends."""
        ...


@dataclass(frozen=True)
class DuckDBRegistry:
    """The DuckDB file, opened read-only for each refresh and closed again."""

    db_path: Path  # the target's DuckDB file

    @contextmanager
    def reader(self, lock_timeout: float) -> Iterator[Reader]:
        """The file open read-only for the block."""
        con = connect(self.db_path, read_only=True, lock_timeout=lock_timeout)
        try:
            yield Reader(lambda: champion_versions(con),
                         lambda name, version: load_served(con, name, version))
        finally:
            con.close()


@dataclass(frozen=True)
class SparkRegistry:
    """The Spark catalog's registry, read through this process's SparkSession.

    With Derby's embedded metastore the session holds the catalog for the whole process:
    see docs/scale-out.md for what that means beside other pyml processes.
    """

    spark: Any  # the target's SparkSession

    @contextmanager
    def reader(self, lock_timeout: float) -> Iterator[Reader]:
        """The catalog needs no opening: each call reads it afresh."""
        from pyml.store.spark_info import serving_identities

        yield Reader(lambda: serving_identities(self.spark),
                     lambda name, version: load_served_spark(self.spark, name, version))


class Champions:
    """The served models, refreshed from the registry without holding the file open."""

    def __init__(self, registry: Path | Registry, lock_timeout: float = 5.0) -> None:
        self.registry = (DuckDBRegistry(registry) if isinstance(registry, Path)
                         else registry)
        self.lock_timeout = lock_timeout
        self.models: dict[str, Served] = {}
        self.refreshed_at: datetime | None = None
        self.refresh_error: str | None = None
        self._lock = threading.Lock()

    def refresh(self, lock_timeout: float | None = None) -> list[str]:
        """Reload champions that changed; returns 'name vN' for each change."""
        with self._lock:
            with self.registry.reader(self.lock_timeout if lock_timeout is None
                                      else lock_timeout) as registry:
                wanted = registry.versions()
                current = {n: (s.model.version, s.info["created_at"])
                           for n, s in self.models.items()}
                changed = {n: v for n, (v, trained) in wanted.items()
                           if current.get(n) != (v, trained)}
                loaded = {n: registry.load(n, v) for n, v in changed.items()}
            models = {n: s for n, s in self.models.items() if n in wanted}
            models.update(loaded)
            self.models = models  # one assignment: requests see the old or the new dict
            self.refreshed_at = datetime.now().replace(microsecond=0)
            self.refresh_error = None
            return [f"{n} v{v}" for n, v in sorted(changed.items())]

    def poll(self) -> None:
        """One background refresh; failures keep the current models and are reported."""
        try:
            changes = self.refresh(lock_timeout=0.5)
        except DatabaseLocked:
            # A writer (pyml score, dbt build) holds the file: try again next time.
            self.refresh_error = "database busy: another process is writing; retrying"
            return
        except PymlError as e:
            self.refresh_error = "cannot read the registry; see the server log"
            print(f"pyml serve: refresh failed: {e}", file=sys.stderr)
            return
        for change in changes:
            print(f"pyml serve: now serving {change}", file=sys.stderr)
