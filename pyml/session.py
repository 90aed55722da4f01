"""One library call's context: the dbt project, the lock wait and the log, resolved once.

`pyml.api` builds a :class:`Session` per call (the CLI goes through `pyml.api` too) and hands
it to the verbs, so no verb resolves a project, a profile or a lock timeout itself. The
caller's overrides (CLI flags, API keyword arguments) are applied to each selected spec here,
once, with `dataclasses.replace`: a verb reads its settings from the spec and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import duckdb

from pyml.dbt.project import Project, load_project, resolve_relation, select_specs
from pyml.dbt.spec import ModelSpec
from pyml.dbt.spec_tune import TuneSpec
from pyml.engines.duckdb import connect, corrupt_error
from pyml.errors import EngineError, ModelNotFound, PymlError, SelectionError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

Log = Callable[[str], None]
PathLike = str | Path | None


# The commands that run on a Spark target (docs/scale-out.md); the others that need a
# target refuse it with Session.require_duckdb's line, which names these.
SPARK_VERBS = ("train", "score", "explain", "show", "export", "serve", "sql", "models",
               "predictions", "promote", "rollback")


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Overrides:
    """What the caller set for this run; None keeps the spec's own value."""

    batch_size: int | None = None  # score.batch_size: rows per batch (score, explain)
    max_memory: int | None = None  # max_memory in bytes (train)
    drift_threshold: float | None = None  # drift_threshold: PSI that counts as drift (drift)
    n_trials: int | None = None  # tune.n_trials (tune)
    tune_timeout: float | None = None  # tune.timeout in seconds (tune)
    # `pyml tune`: the spec records the budget that ran, the defaults if it declares none.
    tuning: bool = False


def apply_overrides(spec: ModelSpec, overrides: Overrides) -> ModelSpec:
    """`spec` with the caller's overrides in place of the values its YAML gave."""
    o = overrides
    if o.batch_size is not None:
        spec = replace(spec, score=replace(spec.score, batch_size=o.batch_size))
    if o.max_memory is not None:
        spec = replace(spec, max_memory=o.max_memory)
    if o.drift_threshold is not None:
        spec = replace(spec, drift_threshold=o.drift_threshold)
    if o.tuning or o.n_trials is not None or o.tune_timeout is not None:
        budget = spec.tune or TuneSpec()
        if o.n_trials is not None:
            budget = replace(budget, n_trials=o.n_trials)
        if o.tune_timeout is not None:
            budget = replace(budget, timeout=o.tune_timeout)
        spec = replace(spec, tune=budget)
    return spec


@dataclass(frozen=True)
class Session:
    """What every verb needs from its caller, resolved once per library call."""

    project: Project  # dbt project, profile target (hence the DuckDB file) and manifest
    lock_timeout: float = 5.0  # seconds to wait for another process's DuckDB write lock
    log: Log = _quiet  # progress lines (the CLI prints them on stderr)

    @property
    def engine(self) -> str:
        """Where the verbs run: "duckdb" (the target's file) or "spark" (its catalog)."""
        return self.project.engine

    def require_duckdb(self, verb: str) -> None:
        """Refuse, in one line, a verb (e.g. "pyml drift") that runs on DuckDB targets only
        for now."""
        if self.engine != "duckdb":
            raise EngineError(
                f"{verb} runs on DuckDB targets only for now: target "
                f"'{self.project.target_name}' is type {self.engine} "
                f"({', '.join(SPARK_VERBS[:-1])} and {SPARK_VERBS[-1]} run on Spark)")

    def spark(self) -> SparkSession:
        """The SparkSession of a Spark target (started on first use; dbt, run in this
        process, shares it)."""
        from pyml.engines.spark import spark_session

        target = self.project.spark
        if target is None:
            raise EngineError(f"target '{self.project.target_name}' is type {self.engine}, "
                              "not spark")
        return spark_session(target.master, target.conf, self.project.target_name)

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """Open the project's DuckDB file, waiting up to `lock_timeout` for a writer."""
        self.require_duckdb("this command")
        return connect(self.project.db_path, read_only=read_only,
                       lock_timeout=self.lock_timeout)

    @contextmanager
    def database(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The DuckDB file, open for the block and closed however it ends (which lets go of
        the lock: other processes wait for it)."""
        con = self.connect(read_only=read_only)
        try:
            with self._corruption_named():
                yield con
        finally:
            con.close()

    @contextmanager
    def releasable_database(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Like `database()`, but `release(con)` lets go of the file in the middle of the
        block (`pyml train` during the fit, so dbt, BI readers and other pyml commands get in)
        and the next use of `con` reopens it, waiting up to `lock_timeout` as the first open
        did."""
        con = _Reopening(self.connect)
        try:
            with self._corruption_named():
                yield cast(duckdb.DuckDBPyConnection, con)
        finally:
            con.release()

    @contextmanager
    def _corruption_named(self) -> Iterator[None]:
        """A damaged block read during the block (opening checks only the file's headers
        and catalog; DuckDB checks each block as it reads it) becomes one line naming the
        file; any other error passes as it is."""
        try:
            yield
        except duckdb.Error as e:
            corrupt = corrupt_error(e, self.project.db_path)
            if corrupt is None:
                raise
            raise corrupt from None


    def specs(self, models: Sequence[str] = (), select: Sequence[str] = (),
              overrides: Overrides = Overrides()) -> list[ModelSpec]:
        """The named (or dbt-selected, or all) specs, with the caller's overrides applied."""
        return [apply_overrides(spec, overrides)
                for spec in select_specs(self.project, models, select)]

    @contextmanager
    def unknown_named(self, model: str, what: str = "in the project or its registry"
                      ) -> Iterator[None]:
        """ModelNotFound for a name the project does not declare becomes "no pyml model
        named ..." with the declared ones (the registry's message tells a declared model to
        train or score, which for a typo misleads)."""
        try:
            yield
        except ModelNotFound as e:
            try:
                declared = sorted(s.name for s in self.specs())
            except PymlError:  # no specs, a broken spec: the registry's own message stands
                declared = [model]
            if model in declared:
                raise e from None
            raise unknown_model(model, declared, what) from None

    def scored_relation(self, spec: ModelSpec) -> tuple[str, str]:
        """(schema, name) of what `pyml score` reads for `spec`: score.relation, else the
        feature relation."""
        if spec.score.relation:
            return resolve_relation(self.project, spec.score.relation, spec.where)
        return spec.schema, spec.relation


def unknown_model(model: str, declared: Sequence[str],
                  what: str = "in the project or its registry") -> SelectionError:
    """The one message for a model name neither declared nor stored."""
    return SelectionError(f"no pyml model named '{model}' {what}; declared models: "
                          f"{', '.join(declared) or 'none'}")


class _Reopening:
    """A DuckDB connection that can close its file and reopens it on the next attribute use.

    Only a connection outside any transaction, cursor or temporary object may be released:
    the reopened one is a new connection (settings and temporary objects are gone)."""

    def __init__(self, open_: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        self._open = open_
        self._con: duckdb.DuckDBPyConnection | None = open_()

    def release(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    close = release

    def __getattr__(self, name: str) -> Any:
        if self._con is None:
            self._con = self._open()
        return getattr(self._con, name)


def release(con: duckdb.DuckDBPyConnection) -> None:
    """Let go of the DuckDB file if `con` came from `Session.releasable_database()` (its next
    use reopens it); a plain connection stays open."""
    if isinstance(con, _Reopening):
        con.release()


def open_session(project_dir: PathLike = None, profiles_dir: PathLike = None,
                 target: str | None = None, *, lock_timeout: float = 5.0,
                 log: Log | None = None) -> Session:
    """Resolve the dbt project (dbt's own rules for each option) into a Session."""
    project = load_project(project_dir, profiles_dir, target, log=log)
    return Session(project, lock_timeout, log or _quiet)
