"""The library API in one call per verb, with dbt-style project options.

The CLI calls these and nothing else; notebooks and orchestrators can too::

    import pyml
    pyml.train(["churn"])                  # same as `pyml train churn`
    pyml.score(select=["customer_features"], output="churn.parquet")

Each call resolves the project once into a :class:`pyml.session.Session`, applies the
caller's overrides to the selected specs (:func:`pyml.session.apply_overrides`) and hands both
to the verb. Modules behind a verb are imported when it is called, so `import pyml.api`
stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyml.engines.duckdb import write_errors
from pyml.errors import EngineError, SelectionError, UsageError
from pyml.session import Overrides, Session, open_session

if TYPE_CHECKING:
    from pyml.export import ExportResult
    from pyml.store.lifecycle import Change
    from pyml.store.publish import Published
    from pyml.store.registry import StoredModel
    from pyml.verbs.drift import DriftResult
    from pyml.verbs.explain import ExplainResult
    from pyml.verbs.monitor import MonitorResult
    from pyml.verbs.profile import ProfileResult
    from pyml.verbs.score import ScoreResult
    from pyml.verbs.train import TrainResult

Log = Callable[[str], None]
PathLike = str | Path | None


@write_errors
def train(models: Sequence[str] = (), *, select: Sequence[str] = (),
          project_dir: PathLike = None, profiles_dir: PathLike = None,
          target: str | None = None, log: Log | None = None,
          lock_timeout: float = 5.0, max_memory: int | str | None = None,
          external: bool | None = None, num_workers: int | None = None,
          force: bool = False, score: bool | None = None) -> list[TrainResult]:
    """Train the named (or dbt-selected, or all) models; each gets a new version, except a
    model whose spec, feature SQL and data are those of its latest version (DuckDB targets):
    its result is `unchanged` and nothing is trained, unless `force`.

    `max_memory` (bytes or a size such as "2GB") overrides the specs' budget: a training set
    that would not fit it trains from disk with XGBoost external memory; `external=True`
    trains from disk whatever the size. On a Spark target (dbt `type: spark`) the models
    train with xgboost.spark on `num_workers` workers (default: the spec's, else one per
    core of the cluster). A new version that becomes champion is rescored at once (`score`;
    None: the spec's promote.score), else `log` gets a `stale:` line per table it did not
    write.
    """
    from pyml.dbt.spec import parse_size
    from pyml.verbs.train import train as _train

    # Checked before the project is parsed: a mistyped size fails at once.
    budget = None if max_memory is None else parse_size(max_memory, "memory budget")
    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    specs = session.specs(models, select, Overrides(max_memory=budget))
    if session.engine == "spark":
        from pyml.spark.train import train as _spark_train

        if budget is not None or external:
            raise EngineError("max_memory and external memory run on DuckDB targets only; "
                              "on Spark, num_workers spreads the training set over executors")
        return _crowned(session, _spark_train(session, specs, num_workers=num_workers,
                                              force=force), score)
    if num_workers is not None:
        raise UsageError("num_workers applies to Spark targets (dbt `type: spark`) only")
    return _crowned(session, _train(session, specs, external=external, force=force), score)


def _crowned(session: Session, results: list[TrainResult], score: bool | None
             ) -> list[TrainResult]:
    """After a train or tune: for each new version that became champion, rescore (`score`,
    None: the spec's promote.score) or log a `stale:` line per output table it did not
    write (pyml.verbs.rescore)."""
    from pyml.verbs.rescore import after_champion_change

    for r in results:
        if r.status == "champion" and not r.unchanged:
            for note in after_champion_change(session, [r.name], score,
                                              f"{r.name}: v{r.version} is now the champion"):
                session.log(note)
    if any(not r.unchanged for r in results):
        _publish(session, "trained " + ", ".join(r.name for r in results if not r.unchanged))
    return results


def _publish(session: Session, done: str) -> None:
    """Republish the BI file (`pyml publish`) if dbt_project.yml asks for it."""
    from pyml.verbs.publish import publish_configured

    publish_configured(session, done)


@write_errors
def score(models: Sequence[str] = (), *, select: Sequence[str] = (),
          version: int | None = None, output: PathLike = None,
          batch_size: int | None = None, explain: int | None = None,
          project_dir: PathLike = None, profiles_dir: PathLike = None,
          target: str | None = None, log: Log | None = None,
          lock_timeout: float = 5.0, incremental: bool | None = None) -> list[ScoreResult]:
    """Score the named (or dbt-selected, or all) models into ml.<model>_predictions.

    `explain` = K also writes each row's top K SHAP contributions to ml.<model>_explanations,
    from the same model version that scored (each result's `explanation`). `incremental`
    (None: each spec's score.incremental) rescores only new and changed rows (DuckDB only).
    """
    from pyml.verbs.score import score as _score

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    specs = session.specs(models, select, Overrides(batch_size=batch_size))
    if session.engine == "spark":
        from pyml.spark.score import refuse_options
        from pyml.spark.score import score as _spark_score

        refuse_options(output, explain)
        if incremental or (incremental is None and any(s.score.incremental for s in specs)):
            raise EngineError("pyml score --incremental (score.incremental) is not yet "
                              "available on Spark targets: score without it")
        return _spark_score(session, specs, version=version)
    results = _score(session, specs, version=version,
                     output=Path(output) if output is not None else None, explain=explain,
                     incremental=incremental)
    _publish(session, "scored " + ", ".join(r.name for r in results))
    return results


@write_errors
def profile(model: str, *, target_column: str | None = None, project_dir: PathLike = None,
            profiles_dir: PathLike = None, target: str | None = None, log: Log | None = None,
            lock_timeout: float = 5.0) -> ProfileResult:
    """Profile a dbt model (or a pyml model's relation) into ml.profile_<relation>."""
    from pyml.verbs.profile import profile as _profile

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    session.require_duckdb("pyml profile")
    return _profile(session, model, target_column=target_column)


@write_errors
def explain(models: Sequence[str] = (), *, select: Sequence[str] = (), top_k: int = 5,
            version: int | None = None, batch_size: int | None = None,
            project_dir: PathLike = None, profiles_dir: PathLike = None,
            target: str | None = None, log: Log | None = None,
            lock_timeout: float = 5.0) -> list[ExplainResult]:
    """Write the top-K SHAP contributions per row into ml.<model>_explanations."""
    from pyml.verbs.explain import explain as _explain

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    specs = session.specs(models, select, Overrides(batch_size=batch_size))
    if session.engine == "spark":
        from pyml.spark.explain import explain as _spark_explain

        return _spark_explain(session, specs, top_k=top_k, version=version)
    return _explain(session, specs, top_k=top_k, version=version)


@write_errors
def drift(models: Sequence[str] = (), *, select: Sequence[str] = (),
          version: int | None = None, threshold: float | None = None,
          project_dir: PathLike = None, profiles_dir: PathLike = None,
          target: str | None = None, log: Log | None = None,
          lock_timeout: float = 5.0, fail_on_drift: bool = False) -> list[DriftResult]:
    """Compare each model's score relation with its training snapshot; rows go to ml.drift.

    With `fail_on_drift`, a feature above its threshold raises DriftDetected (exit code 2 in
    the CLI) once every result is written; the exception carries the results.
    """
    from pyml.verbs.drift import drift as _drift
    from pyml.verbs.drift import drift_found

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    session.require_duckdb("pyml drift")
    specs = session.specs(models, select, Overrides(drift_threshold=threshold))
    results = _drift(session, specs, version=version)
    found = drift_found(results) if fail_on_drift else None
    if found is not None:
        raise found
    return results


def monitor(models: Sequence[str] = (), *, select: Sequence[str] = (),
            version: int | None = None, project_dir: PathLike = None,
            profiles_dir: PathLike = None, target: str | None = None, log: Log | None = None,
            lock_timeout: float = 5.0, fail_on_alert: bool = False) -> list[MonitorResult]:
    """Monitor each model's score relation per time window (the spec's `monitor:`) against
    its training snapshot; the windows' rows of ml.monitoring are replaced.

    With `fail_on_alert`, a statistic above its threshold raises DriftDetected (exit code 2 in
    the CLI) once every result is written; the exception carries the results.
    """
    from pyml.verbs.monitor import monitor as _monitor
    from pyml.verbs.monitor import monitor_found

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    session.require_duckdb("pyml monitor")
    results = _monitor(session, session.specs(models, select), version=version)
    found = monitor_found(results) if fail_on_alert else None
    if found is not None:
        raise found
    return results


def report(model: str, *, output: PathLike = None, version: int | None = None,
           project_dir: PathLike = None, profiles_dir: PathLike = None,
           target: str | None = None, log: Log | None = None,
           lock_timeout: float = 5.0) -> Path:
    """Write a self-contained HTML report of one model version; returns its path."""
    from pyml.report.html import report as _report

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    session.require_duckdb("pyml report")
    spec = session.specs([model])[0]
    return _report(session.project, spec, output=Path(output) if output is not None else None,
                   version=version, log=log, lock_timeout=lock_timeout)


@write_errors
def tune(models: Sequence[str] = (), *, select: Sequence[str] = (),
         n_trials: int | None = None, timeout: float | None = None,
         project_dir: PathLike = None, profiles_dir: PathLike = None,
         target: str | None = None, log: Log | None = None,
         lock_timeout: float = 5.0, score: bool | None = None) -> list[TrainResult]:
    """Tune the named models with Optuna, then train a version with the best parameters.

    `n_trials` / `timeout` override the spec's `tune:` budget; a spec without `tune:` gets
    the task's default search space. When a tuned version becomes champion, `score` (None:
    the spec's promote.score) rescores it at once; otherwise `log` gets a `stale:` line for
    each output table the old champion wrote.
    """
    from pyml.verbs.train import train as _train

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    session.require_duckdb("pyml tune")
    specs = session.specs(models, select, Overrides(n_trials=n_trials, tune_timeout=timeout,
                                                    tuning=True))
    return _crowned(session, _train(session, specs, tune=True), score)


@write_errors
def promote(model: str, *, version: int | None = None, reason: str | None = None,
            project_dir: PathLike = None, profiles_dir: PathLike = None,
            target: str | None = None, lock_timeout: float = 5.0, score: bool | None = None,
            log: Log | None = None) -> Change:
    """Make a version (default: the newest) the champion that score and serve use.

    `score` (None: the spec's promote.score) rescores at once; the Change's `notes` name
    each output table still written by another version, with the command that rewrites it.
    """
    from pyml.store.lifecycle import promote as _promote

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    with session.unknown_named(model):
        if session.engine == "spark":
            from pyml.store.spark_registry import promote as _spark_promote

            change = _spark_promote(session.spark(), model, version, reason)
        else:
            with session.database() as con:
                change = _promote(con, model, version, reason)
    return _noted(session, change, score)


def _noted(session: Session, change: Change, score: bool | None) -> Change:
    """The change with its staleness notes, after rescoring where wanted."""
    from dataclasses import replace

    from pyml.verbs.rescore import after_champion_change

    notes = after_champion_change(session, [change.name], score, change.message)
    _publish(session, change.message)
    return replace(change, notes=tuple(notes))


@write_errors
def rollback(model: str, *, reason: str | None = None, project_dir: PathLike = None,
             profiles_dir: PathLike = None, target: str | None = None,
             lock_timeout: float = 5.0, score: bool | None = None,
             log: Log | None = None) -> Change:
    """Retire the champion and bring back the one it replaced (`score`, `notes`: as
    `promote`)."""
    from pyml.store.lifecycle import rollback as _rollback

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    with session.unknown_named(model):
        if session.engine == "spark":
            from pyml.store.spark_registry import rollback as _spark_rollback

            change = _spark_rollback(session.spark(), model, reason)
        else:
            with session.database() as con:
                change = _rollback(con, model, reason)
    return _noted(session, change, score)


def models(names: Sequence[str] = (), *, project_dir: PathLike = None,
           profiles_dir: PathLike = None, target: str | None = None,
           lock_timeout: float = 5.0) -> str:
    """`pyml models`: the versions of the named (default: all) models as a text table."""
    from pyml.report.text import models_table

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout)
    if session.engine == "spark":
        from pyml.report.text import known_versions, versions_text, with_hints
        from pyml.store import spark_registry

        spark, rows = session.spark(), known_versions(session.project, names, spark_registry
                                                      .list_versions(session.spark(), names))
        status = spark_registry.statuses(spark)
        return with_hints(versions_text(rows, status), spark_registry.stale_hints(
            spark, names or sorted({n for n, _ in status})))
    return models_table(session.project, names, lock_timeout=lock_timeout)


def predictions(model: str, *, limit: int = 10, project_dir: PathLike = None,
                profiles_dir: PathLike = None, target: str | None = None,
                lock_timeout: float = 5.0) -> str:
    """`pyml predictions`: the top `limit` rows of ml.<model>_predictions as a text table."""
    from pyml.report.text import top_predictions

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout)
    if session.engine == "spark":
        from pyml.report.text import text_table
        from pyml.store.spark_writer import top_predictions as _spark_top

        return text_table(*_spark_top(session.spark(), model, limit))
    with session.unknown_named(model, f"and no ml.{model}_predictions"):
        return top_predictions(session.project, model, limit, lock_timeout=lock_timeout)


def show(model: str, *, version: int | None = None, project_dir: PathLike = None,
         profiles_dir: PathLike = None, target: str | None = None,
         lock_timeout: float = 5.0) -> str:
    """`pyml show`: versions, status, metrics, data snapshot and events of a model."""
    from pyml.export import render_show, spark_version_info, version_info
    from pyml.report.text import with_hints
    from pyml.store.staleness import stale_hints

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout)
    with session.unknown_named(model):
        if session.engine == "spark":
            from pyml.store.spark_registry import stale_hints as _spark_stale

            spark = session.spark()
            return with_hints(render_show(spark_version_info(spark, model, version)),
                              _spark_stale(spark, [model]))
        with session.database(read_only=True) as con:
            return with_hints(render_show(version_info(con, model, version)),
                              stale_hints(con, [model]))


def export(model: str, output: str | Path, *, version: int | None = None,
           project_dir: PathLike = None, profiles_dir: PathLike = None,
           target: str | None = None, lock_timeout: float = 5.0) -> ExportResult:
    """Write a version (default: the champion) as XGBoost JSON + model card + predict.py."""
    from pyml.export import check_folder, spark_version_info, write_export
    from pyml.export import export as _export

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout)
    with session.unknown_named(model):
        if session.engine == "spark":
            out = check_folder(Path(output))
            return write_export(spark_version_info(session.spark(), model, version), out)
        with session.database(read_only=True) as con:
            return _export(con, model, version, Path(output))


def serve(*, host: str = "127.0.0.1", port: int = 8000, poll_seconds: float = 5.0,
          max_records: int = 1000, max_body_bytes: int = 1 << 20, access_log: bool = False,
          project_dir: PathLike = None, profiles_dir: PathLike = None,
          target: str | None = None, log: Log | None = None,
          lock_timeout: float = 5.0, body_timeout: float = 10.0) -> None:
    """Serve every model's champion over HTTP until interrupted (see pyml.serve)."""
    from pyml.serve.app import serve as _serve
    from pyml.serve.champions import DuckDBRegistry, Registry, SparkRegistry

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    # On Spark the server reads the catalog through this process's session: with Derby's
    # embedded metastore no other process can open the catalog meanwhile (docs/scale-out.md).
    registry: Registry = (SparkRegistry(session.spark()) if session.engine == "spark"
                          else DuckDBRegistry(session.project.db_path))
    _serve(registry, host=host, port=port, poll_seconds=poll_seconds,
           max_records=max_records, max_body_bytes=max_body_bytes, access_log=access_log,
           lock_timeout=lock_timeout, body_timeout=body_timeout)


def sql(model: str, *, version: int | None = None, dialect: str | None = None,
        dbt_model: bool = False, project_dir: PathLike = None, profiles_dir: PathLike = None,
        target: str | None = None, lock_timeout: float = 5.0, log: Log | None = None) -> str:
    """SQL that scores a model exactly like `pyml score` (see pyml.sqlgen).

    The version defaults to the one `pyml score` uses (the champion, else the latest). With
    `dbt_model`, the SQL is a dbt model reading `{{ ref('<feature model>') }}`. Like score,
    it logs a notice when the model's YAML now differs from the version's stored spec. The
    dialect defaults to the dbt target's engine (spark on a Spark target, else duckdb)."""
    from pyml.sqlgen.compile import scoring_sql

    session, stored, relation, table = _sql_stored(model, version, project_dir, profiles_dir,
                                                   target, lock_timeout, log)
    return scoring_sql(stored, dialect=dialect or session.engine, dbt_model=dbt_model,
                       relation=relation if dbt_model else table)


def _sql_stored(model: str, version: int | None, project_dir: PathLike,
                profiles_dir: PathLike, target: str | None, lock_timeout: float,
                log: Log | None) -> tuple[Session, StoredModel, str | None, str | None]:
    """The session, the stored version `pyml sql` compiles (logging the YAML notice), the
    spec's score.relation (what `pyml score` reads) and the schema.table it names."""
    from pyml.dbt.project import select_specs
    from pyml.dbt.spec_diff import yaml_notice
    from pyml.errors import SpecError
    from pyml.store.registry import load_version

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout)
    with session.unknown_named(model):
        if session.engine == "spark":  # the stored model is the same whichever engine
            from pyml.store.spark_registry import load_version as _spark_load

            stored = _spark_load(session.spark(), model, version)
        else:
            with session.database(read_only=True) as con:
                stored = load_version(con, model, version)
    try:  # the SQL needs no YAML: a model no longer declared (or a broken spec) still compiles
        spec = select_specs(session.project, [model])[0]
    except (SelectionError, SpecError):
        spec = None
    notice = spec and yaml_notice(spec, stored.version, stored.spec, stored.target.classes)
    if notice and log:
        log(notice)
    relation = spec.score.relation if spec else None
    table = ".".join(session.scored_relation(spec)) if spec and relation else None
    return session, stored, relation, table


def sql_model(model: str, output: str | Path, *, version: int | None = None,
              dialect: str | None = None, project_dir: PathLike = None,
              profiles_dir: PathLike = None, target: str | None = None,
              lock_timeout: float = 5.0, log: Log | None = None) -> Path:
    """Write `sql(..., dbt_model=True)` as the dbt model file `output` (a .sql file in an
    existing folder, replaced atomically) and beside it <name>.yml, its description and
    columns (pyml.sqlgen.dbt_yaml; not where the project documents the model elsewhere);
    returns the model file's resolved path."""
    from pyml.sqlgen import dbt_yaml
    from pyml.sqlgen.compile import scoring_sql, write_model_file

    session, stored, relation, table = _sql_stored(model, version, project_dir, profiles_dir,
                                                   target, lock_timeout, log)
    text = scoring_sql(stored, dialect=dialect or session.engine, dbt_model=True,
                       relation=relation)
    path = Path(output).expanduser().resolve()
    yml = dbt_yaml.yaml_path(path)
    manifest = session.project.manifest
    elsewhere = dbt_yaml.documented_elsewhere(manifest, path.stem, yml)
    if elsewhere is None:
        dbt_yaml.check_writable(yml)  # refused before the model file is written
    written = write_model_file(path, text)
    if elsewhere is None:
        dbt_yaml.write_yaml(yml, dbt_yaml.model_yaml(stored, path.stem, manifest, table))
    elif log:
        log(f"{path.stem} is documented in {elsewhere}: no {yml.name} written")
    return written


@write_errors
def publish(models: Sequence[str] = (), *, select: Sequence[str] = (),
            path: PathLike = None, relations: Sequence[str] | None = None,
            project_dir: PathLike = None, profiles_dir: PathLike = None,
            target: str | None = None, lock_timeout: float = 5.0,
            log: Log | None = None) -> Published:
    """Copy the named (or dbt-selected; default: every scored) models' predictions and the
    `relations` (default: dbt_project.yml's `vars: pyml: publish: relations`) to the BI file
    `path` (default: that key's `path`, else `<target file stem>_bi.duckdb`), which BI tools
    read while dbt and pyml write the main file (docs/reliability.md)."""
    from pyml.verbs.publish import publish as _publish_bi

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=log)
    result = _publish_bi(session, models, select, path=path, relations=relations)
    assert result is not None  # only when_any=True returns None
    return result
