"""The library API in one call per verb, with dbt-style project options.

The CLI calls these and nothing else; notebooks and orchestrators can too::

    import pyml
    pyml.train(["churn"])                  # same as `pyml train churn`
    pyml.score(select=["customer_features"], output="churn.parquet")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyml.dbt.project import load_project, select_specs
from pyml.dbt.spec import parse_size
from pyml.engines.duckdb import write_errors
from pyml.verbs.score import ScoreResult
from pyml.verbs.score import score as _score
from pyml.verbs.train import TrainResult
from pyml.verbs.train import train as _train

if TYPE_CHECKING:  # the analysis verbs import their modules (matplotlib, sklearn) lazily
    from pyml.export import ExportResult
    from pyml.store.lifecycle import Change
    from pyml.verbs.drift import DriftResult
    from pyml.verbs.explain import ExplainResult
    from pyml.verbs.profile import ProfileResult

Log = Callable[[str], None]
PathLike = str | Path | None


@write_errors
def train(models: Sequence[str] = (), *, select: Sequence[str] = (),
          project_dir: PathLike = None, profiles_dir: PathLike = None,
          target: str | None = None, log: Log | None = None,
          lock_timeout: float = 5.0, max_memory: int | str | None = None,
          external: bool | None = None) -> list[TrainResult]:
    """Train the named (or dbt-selected, or all) models; each gets a new version.

    `max_memory` (bytes or a size such as "2GB") overrides the specs' budget: a training set
    that would not fit it trains from disk with XGBoost external memory; `external=True`
    trains from disk whatever the size.
    """
    budget = None if max_memory is None else parse_size(max_memory, "--max-memory")
    project = load_project(project_dir, profiles_dir, target, log=log)
    specs = select_specs(project, models, select)
    return _train(project, specs, log=log, lock_timeout=lock_timeout, max_memory=budget,
                  external=external)


@write_errors
def score(models: Sequence[str] = (), *, select: Sequence[str] = (),
          version: int | None = None, output: PathLike = None,
          batch_size: int | None = None, project_dir: PathLike = None,
          profiles_dir: PathLike = None, target: str | None = None,
          log: Log | None = None, lock_timeout: float = 5.0) -> list[ScoreResult]:
    """Score the named (or dbt-selected, or all) models into ml.<model>_predictions."""
    project = load_project(project_dir, profiles_dir, target, log=log)
    specs = select_specs(project, models, select)
    return _score(project, specs, version=version,
                  output=Path(output) if output is not None else None,
                  batch_size=batch_size, log=log, lock_timeout=lock_timeout)


@write_errors
def profile(model: str, *, target_column: str | None = None, project_dir: PathLike = None,
            profiles_dir: PathLike = None, target: str | None = None, log: Log | None = None,
            lock_timeout: float = 5.0) -> ProfileResult:
    """Profile a dbt model (or a pyml model's relation) into ml.profile_<relation>."""
    from pyml.verbs.profile import profile as _profile

    project = load_project(project_dir, profiles_dir, target, log=log)
    return _profile(project, model, target_column=target_column, lock_timeout=lock_timeout)


@write_errors
def explain(models: Sequence[str] = (), *, select: Sequence[str] = (), top_k: int = 5,
            version: int | None = None, batch_size: int | None = None,
            project_dir: PathLike = None, profiles_dir: PathLike = None,
            target: str | None = None, log: Log | None = None,
            lock_timeout: float = 5.0) -> list[ExplainResult]:
    """Write the top-K SHAP contributions per row into ml.<model>_explanations."""
    from pyml.verbs.explain import explain as _explain

    project = load_project(project_dir, profiles_dir, target, log=log)
    specs = select_specs(project, models, select)
    return _explain(project, specs, top_k=top_k, version=version, batch_size=batch_size,
                    log=log, lock_timeout=lock_timeout)


@write_errors
def drift(models: Sequence[str] = (), *, select: Sequence[str] = (),
          version: int | None = None, threshold: float | None = None,
          project_dir: PathLike = None, profiles_dir: PathLike = None,
          target: str | None = None, log: Log | None = None,
          lock_timeout: float = 5.0) -> list[DriftResult]:
    """Compare each model's score relation with its training snapshot; rows go to ml.drift."""
    from pyml.verbs.drift import drift as _drift

    project = load_project(project_dir, profiles_dir, target, log=log)
    specs = select_specs(project, models, select)
    return _drift(project, specs, version=version, threshold=threshold, log=log,
                  lock_timeout=lock_timeout)


def report(model: str, *, output: PathLike = None, version: int | None = None,
           project_dir: PathLike = None, profiles_dir: PathLike = None,
           target: str | None = None, log: Log | None = None,
           lock_timeout: float = 5.0) -> Path:
    """Write a self-contained HTML report of one model version; returns its path."""
    from pyml.report.html import report as _report

    project = load_project(project_dir, profiles_dir, target, log=log)
    specs = select_specs(project, [model])
    return _report(project, specs[0], output=Path(output) if output is not None else None,
                   version=version, log=log, lock_timeout=lock_timeout)


@write_errors
def tune(models: Sequence[str] = (), *, select: Sequence[str] = (),
         n_trials: int | None = None, timeout: float | None = None,
         project_dir: PathLike = None, profiles_dir: PathLike = None,
         target: str | None = None, log: Log | None = None,
         lock_timeout: float = 5.0) -> list[TrainResult]:
    """Tune the named models with Optuna, then train a version with the best parameters.

    `n_trials` / `timeout` override the spec's `tune:` budget; a spec without `tune:` gets
    the task's default search space.
    """
    from dataclasses import replace

    from pyml.dbt.spec_tune import TuneSpec

    project = load_project(project_dir, profiles_dir, target, log=log)
    specs = []
    for spec in select_specs(project, models, select):
        budget = spec.tune or TuneSpec()
        if n_trials is not None:
            budget = replace(budget, n_trials=n_trials)
        if timeout is not None:
            budget = replace(budget, timeout=timeout)
        specs.append(replace(spec, tune=budget))
    return _train(project, specs, log=log, lock_timeout=lock_timeout, tune=True)


@write_errors
def promote(model: str, *, version: int | None = None, reason: str | None = None,
            project_dir: PathLike = None, profiles_dir: PathLike = None,
            target: str | None = None, lock_timeout: float = 5.0) -> Change:
    """Make a version (default: the newest) the champion that score and serve use."""
    from pyml.engines.duckdb import connect
    from pyml.store.lifecycle import promote as _promote

    project = load_project(project_dir, profiles_dir, target)
    con = connect(project.db_path, lock_timeout=lock_timeout)
    try:
        return _promote(con, model, version, reason)
    finally:
        con.close()


@write_errors
def rollback(model: str, *, reason: str | None = None, project_dir: PathLike = None,
             profiles_dir: PathLike = None, target: str | None = None,
             lock_timeout: float = 5.0) -> Change:
    """Retire the champion and bring back the one it replaced."""
    from pyml.engines.duckdb import connect
    from pyml.store.lifecycle import rollback as _rollback

    project = load_project(project_dir, profiles_dir, target)
    con = connect(project.db_path, lock_timeout=lock_timeout)
    try:
        return _rollback(con, model, reason)
    finally:
        con.close()


def show(model: str, *, version: int | None = None, project_dir: PathLike = None,
         profiles_dir: PathLike = None, target: str | None = None,
         lock_timeout: float = 5.0) -> str:
    """`pyml show`: versions, status, metrics, data snapshot and events of a model."""
    from pyml.engines.duckdb import connect
    from pyml.export import render_show, version_info

    project = load_project(project_dir, profiles_dir, target)
    con = connect(project.db_path, read_only=True, lock_timeout=lock_timeout)
    try:
        return render_show(version_info(con, model, version))
    finally:
        con.close()


def export(model: str, output: str | Path, *, version: int | None = None,
           project_dir: PathLike = None, profiles_dir: PathLike = None,
           target: str | None = None, lock_timeout: float = 5.0) -> ExportResult:
    """Write a version (default: the champion) as XGBoost JSON + model card + predict.py."""
    from pyml.engines.duckdb import connect
    from pyml.export import export as _export

    project = load_project(project_dir, profiles_dir, target)
    con = connect(project.db_path, read_only=True, lock_timeout=lock_timeout)
    try:
        return _export(con, model, version, Path(output))
    finally:
        con.close()


def serve(*, host: str = "127.0.0.1", port: int = 8000, poll_seconds: float = 5.0,
          max_records: int = 1000, max_body_bytes: int = 1 << 20, access_log: bool = False,
          project_dir: PathLike = None, profiles_dir: PathLike = None,
          target: str | None = None, log: Log | None = None,
          lock_timeout: float = 5.0) -> None:
    """Serve every model's champion over HTTP until interrupted (see pyml.serve)."""
    from pyml.serve.app import serve as _serve

    project = load_project(project_dir, profiles_dir, target, log=log)
    _serve(project.db_path, host=host, port=port, poll_seconds=poll_seconds,
           max_records=max_records, max_body_bytes=max_body_bytes, access_log=access_log,
           lock_timeout=lock_timeout)


def sql(model: str, *, version: int | None = None, dialect: str = "duckdb",
        dbt_model: bool = False, project_dir: PathLike = None, profiles_dir: PathLike = None,
        target: str | None = None, lock_timeout: float = 5.0) -> str:
    """SQL that scores a model exactly like `pyml score` (see pyml.sqlgen).

    The version defaults to the one `pyml score` uses (the champion, else the latest). With
    `dbt_model`, the SQL is a dbt model reading `{{ ref('<feature model>') }}`.
    """
    from pyml.engines.duckdb import connect
    from pyml.sqlgen.compile import scoring_sql
    from pyml.store.registry import load_version

    project = load_project(project_dir, profiles_dir, target)
    con = connect(project.db_path, read_only=True, lock_timeout=lock_timeout)
    try:
        stored = load_version(con, model, version)
    finally:
        con.close()
    return scoring_sql(stored, dialect=dialect, dbt_model=dbt_model)
