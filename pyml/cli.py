"""The `pyml` command line: parse options, call the library, print. Nothing else lives here."""

from __future__ import annotations

from pathlib import Path

import click

from pyml import __version__
from pyml.cli_monitor import monitor as monitor_command
from pyml.cli_publish import publish as publish_command
from pyml.cli_scaffold import scaffold as scaffold_command
from pyml.cli_sources import sources as sources_command
from pyml.cliopts import (
    INT,
    IntRange,
    NumberRange,
    PymlGroup,
    handle_errors,
    project_options,
    score_option,
    selection_options,
)
from pyml.errors import DriftDetected


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.group(cls=PymlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyml")
def cli() -> None:
    """pyml: train and score XGBoost models on dbt feature tables in DuckDB.

    Models are declared in a dbt model's YAML under `config: meta: pyml:`;
    predictions are written back as tables in the `ml` schema.

    Example: dbt build && pyml train && pyml score
    """


@cli.command()
@selection_options
@click.option("--max-memory", metavar="SIZE",
              help="memory budget, e.g. 2GB (default: the spec's max_memory, else none); a "
                   "training set that would not fit trains from disk (XGBoost external "
                   "memory).")
@click.option("--external-memory", "external", is_flag=True, default=None,
              help="train from disk (external memory) whatever the size.")
@click.option("--force", is_flag=True,
              help="retrain a model even if its spec, SQL and data are unchanged.")
@click.option("--num-workers", type=click.IntRange(min=1), default=None,
              help="Spark targets: xgboost.spark workers (default: the spec's num_workers, "
                   "else one per core of the cluster).")
@score_option
@project_options
@handle_errors
def train(models: tuple[str, ...], select: tuple[str, ...], max_memory: str | None,
          external: bool | None, num_workers: int | None, force: bool, score: bool | None,
          project_dir: str | None, profiles_dir: str | None, target: str | None,
          lock_timeout: float) -> None:
    """Train models declared in the dbt project; each run stores a new version.

    With no MODELS and no --select, every declared model is trained. A model whose spec,
    feature SQL and data are those of a stored version (the champion first) is skipped
    (--force retrains it).
    Results go to ml.models, ml.metrics and ml.feature_importance. The new version is a
    challenger; the spec's promote policy (default: auto) may make it the champion.
    Specs with `tune: {on_train: true}` are tuned first (as `pyml tune`).

    Example: pyml train churn --target dev
    """
    from pyml.api import train as run_train
    from pyml.report.text import format_train

    for r in run_train(models, select=select, project_dir=project_dir,
                       profiles_dir=profiles_dir, target=target, log=_log,
                       lock_timeout=lock_timeout, max_memory=max_memory,
                       external=external or None, num_workers=num_workers, force=force,
                       score=score):
        click.echo(format_train(r))


@cli.command()
@selection_options
@click.option("--version", "version", type=INT,
              help="score with this version (default: the champion).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the predictions to a .parquet or .csv file.")
@click.option("--batch-size", type=IntRange(min=1),
              help="rows per batch (default: the spec's score.batch_size, 100000).")
@click.option("--explain", "explain_k", type=IntRange(min=1), metavar="K",
              help="also write each row's top K SHAP contributions to "
                   "ml.<model>_explanations (see `pyml explain`).")
@click.option("--incremental/--no-incremental", default=None,
              help="rescore only new and changed rows (default: the spec's "
                   "score.incremental, false).")
@project_options
@handle_errors
def score(models: tuple[str, ...], select: tuple[str, ...], version: int | None,
          output: Path | None, batch_size: int | None, explain_k: int | None,
          incremental: bool | None, project_dir: str | None, profiles_dir: str | None,
          target: str | None, lock_timeout: float) -> None:
    """Score relations with trained models into ml.<model>_predictions.

    The table is replaced atomically: readers see the old or the new table. With
    --incremental, rows whose features and key are unchanged since the same version last
    scored them keep their prediction (ml.<model>_fingerprints), in the same transaction.

    Example: pyml score churn --output churn.parquet
    """
    from pyml.api import score as run_score
    from pyml.report.text import format_explain, format_score

    results = run_score(models, select=select, version=version, output=output,
                        batch_size=batch_size, explain=explain_k, project_dir=project_dir,
                        profiles_dir=profiles_dir, target=target, log=_log,
                        lock_timeout=lock_timeout, incremental=incremental)
    for r in results:
        click.echo(format_score(r))
    for e in (r.explanation for r in results if r.explanation):
        click.echo(format_explain(e))


@cli.command()
@click.argument("models", nargs=-1)
@project_options
@handle_errors
def models(models: tuple[str, ...], project_dir: str | None, profiles_dir: str | None,
           target: str | None, lock_timeout: float) -> None:
    """List trained models: versions, rows and the headline holdout metric.

    Example: pyml models churn
    """
    from pyml.api import models as run_models

    click.echo(run_models(models, project_dir=project_dir, profiles_dir=profiles_dir,
                          target=target, lock_timeout=lock_timeout))


@cli.command()
@click.argument("model")
@click.option("--limit", "-n", type=IntRange(1, 2**63 - 1), default=10,
              show_default=True)
@project_options
@handle_errors
def predictions(model: str, limit: int, project_dir: str | None, profiles_dir: str | None,
                target: str | None, lock_timeout: float) -> None:
    """Show the top rows of ml.<MODEL>_predictions (highest probability or value first).

    Example: pyml predictions churn --limit 20
    """
    from pyml.api import predictions as run_predictions

    click.echo(run_predictions(model, limit=limit, project_dir=project_dir,
                               profiles_dir=profiles_dir, target=target,
                               lock_timeout=lock_timeout))


@cli.command()
@click.argument("model")
@click.option("--target-column", help="profile against this column (default: the target of "
                                      "the pyml spec declared on MODEL).")
@project_options
@handle_errors
def profile(model: str, target_column: str | None, project_dir: str | None,
            profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Profile a feature relation: column statistics, target association, leak checks.

    MODEL is a dbt model (or a pyml model: its feature relation and target). The result
    is written to ml.profile_<relation> and printed as a table; warnings name the column.

    Example: pyml profile customer_features --target-column churned_next_90d
    """
    from pyml.api import profile as run_profile
    from pyml.report.text import format_profile

    result = run_profile(model, target_column=target_column, project_dir=project_dir,
                         profiles_dir=profiles_dir, target=target, log=_log,
                         lock_timeout=lock_timeout)
    click.echo(format_profile(result))


@cli.command()
@selection_options
@click.option("--top-k", "-k", type=IntRange(min=1), default=5, show_default=True,
              help="features kept per row, largest |contribution| first.")
@click.option("--version", "version", type=INT,
              help="explain this version (default: the champion).")
@click.option("--batch-size", type=IntRange(min=1),
              help="rows per batch (default: the spec's score.batch_size, 100000).")
@project_options
@handle_errors
def explain(models: tuple[str, ...], select: tuple[str, ...], top_k: int, version: int | None,
            batch_size: int | None, project_dir: str | None, profiles_dir: str | None,
            target: str | None, lock_timeout: float) -> None:
    """Write each scored row's top SHAP contributions to ml.<model>_explanations.

    Contributions are exact TreeSHAP values (XGBoost pred_contribs) on the margin
    (log-odds for binary). Per row: sum(contribution) + other_contribution + bias = margin.

    Example: pyml explain churn --top-k 3
    """
    from pyml.api import explain as run_explain
    from pyml.report.text import format_explain

    for e in run_explain(models, select=select, top_k=top_k, version=version,
                         batch_size=batch_size, project_dir=project_dir,
                         profiles_dir=profiles_dir, target=target, log=_log,
                         lock_timeout=lock_timeout):
        click.echo(format_explain(e))


@cli.command()
@selection_options
@click.option("--threshold", type=NumberRange(min=0, min_open=True),
              help="PSI above which a feature counts as drifted (default: the spec's "
                   "drift_threshold, 0.2).")
@click.option("--version", "version", type=INT,
              help="compare with this version's training snapshot (default: the champion).")
@project_options
@handle_errors
def drift(models: tuple[str, ...], select: tuple[str, ...], threshold: float | None,
          version: int | None, project_dir: str | None, profiles_dir: str | None,
          target: str | None, lock_timeout: float) -> None:
    """Compare the relation each model scores with its training data, per feature.

    Reports PSI, the KS statistic (numeric), the share of unseen categories and the null
    share then and now; appends them to ml.drift. Exits with code 2 when any feature's
    PSI is above the threshold (code 1 stays for errors).

    Example: pyml drift churn --threshold 0.25
    """
    from pyml.api import drift as run_drift
    from pyml.report.text import format_drift

    found = None
    try:
        results = run_drift(models, select=select, version=version, threshold=threshold,
                            project_dir=project_dir, profiles_dir=profiles_dir, target=target,
                            log=_log, lock_timeout=lock_timeout, fail_on_drift=True)
    except DriftDetected as e:
        found, results = e, list(e.results)  # the tables are printed first, then the finding
    for r in results:
        click.echo(format_drift(r))
    if found is not None:
        raise found


@cli.command()
@click.argument("model")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write (default: <model>_v<version>_report.html).")
@click.option("--version", "version", type=INT,
              help="report on this version (default: the champion).")
@project_options
@handle_errors
def report(model: str, output: Path | None, version: int | None, project_dir: str | None,
           profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Write one self-contained HTML report of a model version (figures embedded).

    ROC / PR / calibration / lift / confusion matrix (binary) or residuals (regression),
    metrics with 95% intervals, SHAP summary and dependence plots, drift, the data profile
    and the spec.

    Example: pyml report churn --output churn_report.html
    """
    from pyml.api import report as run_report

    path = run_report(model, output=output, version=version, project_dir=project_dir,
                      profiles_dir=profiles_dir, target=target, log=_log,
                      lock_timeout=lock_timeout)
    click.echo(f"wrote {path}")


@cli.command()
@selection_options
@click.option("--n-trials", type=IntRange(min=1),
              help="most trials (default: the spec's tune.n_trials, 30).")
@click.option("--timeout", type=NumberRange(min=0, min_open=True), metavar="SECONDS",
              help="stop starting trials after this long (default: tune.timeout, 600).")
@score_option
@project_options
@handle_errors
def tune(models: tuple[str, ...], select: tuple[str, ...], n_trials: int | None,
         timeout: float | None, score: bool | None, project_dir: str | None,
         profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Search XGBoost parameters with Optuna, then train a version with the best ones.

    Trials train on the train part and stop early on the validation part; the holdout
    is only used to compare the tuned version with the spec's own parameters (the
    version's note). Trials go to ml.trials; the new version is a challenger that the
    spec's promote policy may make champion. Spec key `tune:` sets the budget and space.

    Example: pyml tune churn --n-trials 20 --timeout 60
    """
    from pyml.api import tune as run_tune

    results = run_tune(models, select=select, n_trials=n_trials, timeout=timeout,
                       project_dir=project_dir, profiles_dir=profiles_dir, target=target,
                       log=_log, lock_timeout=lock_timeout, score=score)
    for r in results:
        click.echo(f"{r.name} v{r.version} ({r.task}) {r.status}: {r.decision}")
        if r.note:
            click.echo(f"  note: {r.note}")


@cli.command()
@click.argument("model")
@click.option("--version", "version", type=INT, help="version to promote (default: newest).")
@click.option("--reason", help="why, recorded in ml.model_events.")
@score_option
@project_options
@handle_errors
def promote(model: str, version: int | None, reason: str | None, score: bool | None,
            project_dir: str | None, profiles_dir: str | None, target: str | None,
            lock_timeout: float) -> None:
    """Make a version the champion: the one `pyml score` and `pyml serve` use.

    The previous champion is retired; `pyml rollback` brings it back.

    Example: pyml promote churn --version 3 --reason "reviewed the holdout lift"
    """
    from pyml.api import promote as run_promote

    change = run_promote(model, version=version, reason=reason, project_dir=project_dir,
                         profiles_dir=profiles_dir, target=target, lock_timeout=lock_timeout,
                         score=score, log=_log)
    click.echo("\n".join([change.message, *change.notes]))


@cli.command()
@click.argument("model")
@click.option("--reason", help="why, recorded in ml.model_events.")
@score_option
@project_options
@handle_errors
def rollback(model: str, reason: str | None, score: bool | None, project_dir: str | None,
             profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Retire the champion and bring back the champion it replaced.

    Example: pyml rollback churn --reason "v4 over-predicts new customers"
    """
    from pyml.api import rollback as run_rollback

    change = run_rollback(model, reason=reason, project_dir=project_dir,
                          profiles_dir=profiles_dir, target=target, lock_timeout=lock_timeout,
                          score=score, log=_log)
    click.echo("\n".join([change.message, *change.notes]))


@cli.command()
@click.argument("model")
@click.option("--version", "version", type=INT, help="version to detail (default: champion).")
@project_options
@handle_errors
def show(model: str, version: int | None, project_dir: str | None, profiles_dir: str | None,
         target: str | None, lock_timeout: float) -> None:
    """Show a model: versions with status, metrics, data snapshot, dbt run and events.

    Example: pyml show churn --version 2
    """
    from pyml.api import show as run_show

    click.echo(run_show(model, version=version, project_dir=project_dir,
                        profiles_dir=profiles_dir, target=target, lock_timeout=lock_timeout))


@cli.command()
@click.argument("model")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path),
              help="folder to write model.json, model_card.json and predict.py into.")
@click.option("--version", "version", type=INT, help="version to export (default: champion).")
@project_options
@handle_errors
def export(model: str, output: Path, version: int | None, project_dir: str | None,
           profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Export a version as XGBoost JSON plus a model card, usable without pyml.

    predict.py in the folder encodes records as the card describes and predicts with
    plain xgboost.

    Example: pyml export churn --output churn_export
    """
    from pyml.api import export as run_export

    result = run_export(model, output, version=version, project_dir=project_dir,
                        profiles_dir=profiles_dir, target=target, lock_timeout=lock_timeout)
    click.echo(f"{result.name} v{result.version} -> "
               + ", ".join(str(f) for f in result.files))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind.")
@click.option("--port", default=8000, show_default=True, type=IntRange(0, 65535))
@click.option("--poll-seconds", default=5.0, show_default=True, type=NumberRange(min=0.1),
              help="how often to re-read the registry for promotions (also on SIGHUP).")
@click.option("--max-records", default=1000, show_default=True, type=IntRange(min=1),
              help="most records per request (more: 413).")
@click.option("--max-body-bytes", default=1 << 20, show_default=True,
              type=IntRange(min=1), help="largest request body (more: 413).")
@click.option("--body-timeout", default=10.0, show_default=True, metavar="SECONDS",
              type=NumberRange(min=0, min_open=True),
              help="seconds a request body may take to arrive (more: 408).")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="log every request.")
@project_options
@handle_errors
def serve(host: str, port: int, poll_seconds: float, max_records: int, max_body_bytes: int,
          body_timeout: float, access_log: bool, project_dir: str | None,
          profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Serve the champion of every model over HTTP (FastAPI; docs at /docs).

    POST /models/NAME/predict takes a JSON list of records and returns one prediction per
    record, equal to what `pyml score` writes for the same rows. The DuckDB file is only
    opened for a moment every --poll-seconds, so dbt and pyml can keep writing to it.

    Example: pyml serve --port 8000   (then: curl localhost:8000/models)
    """
    from pyml.api import serve as run_serve

    run_serve(host=host, port=port, poll_seconds=poll_seconds, max_records=max_records,
              max_body_bytes=max_body_bytes, body_timeout=body_timeout, access_log=access_log,
              project_dir=project_dir, profiles_dir=profiles_dir, target=target, log=_log,
              lock_timeout=lock_timeout)


@cli.command()
@click.argument("model")
@click.option("--version", "version", type=INT,
              help="version to translate (default: the one `pyml score` uses).")
@click.option("--dialect",
              help="SQL dialect: duckdb, postgres, snowflake, bigquery, sqlite or spark "
                   "(default: the dbt target's engine, duckdb or spark).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="write a dbt model (.sql) that scores inside `dbt build` instead of printing.")
@project_options
@handle_errors
def sql(model: str, version: int | None, dialect: str | None, output: Path | None,
        project_dir: str | None, profiles_dir: str | None, target: str | None,
        lock_timeout: float) -> None:
    """Print a SELECT that scores MODEL in pure SQL, equal to `pyml score`.

    The query reads what pyml score reads (score.relation, else the feature relation) and
    returns its key columns with the columns of ml.<MODEL>_predictions but scored_at; it is
    generated from the stored model (trees, category mappings, threshold) and matches
    XGBoost to float32 precision. A row with an infinite feature value, which pyml score
    refuses, gets the answer the trees give it (compared with each split like any number).
    With --output it is a dbt model reading that relation with ref(), so `dbt build` scores
    and downstream models can ref it, with <name>.yml beside it describing the model (the
    version it was compiled from) and its columns.

    Example: pyml sql churn --output models/ml/churn_scored_sql.sql
    """
    from pyml.api import sql as run_sql
    from pyml.api import sql_model

    if output is None:
        click.echo(run_sql(model, version=version, dialect=dialect, project_dir=project_dir,
                           profiles_dir=profiles_dir, target=target,
                           lock_timeout=lock_timeout, log=_log), nl=False)
        return
    path = sql_model(model, output, version=version, dialect=dialect, project_dir=project_dir,
                     profiles_dir=profiles_dir, target=target, lock_timeout=lock_timeout,
                     log=_log)
    what = f"{dialect} scoring SQL" if dialect else "scoring SQL"
    click.echo(f"{model}: {what} -> {path} (build it with `dbt build --select {path.stem}`)")


@cli.command()
@click.option("--project-dir", type=click.Path(file_okay=False),
              help="dbt project folder (default: DBT_PROJECT_DIR, cwd or a parent).")
@click.option("--profiles-dir", type=click.Path(file_okay=False),
              help="accepted and unused, as by `dbt deps` (scripts pass it to every command).")
@handle_errors
def init(project_dir: str | None, profiles_dir: str | None) -> None:
    """Add pyml's dbt package (its macros and generic tests) to the project's packages.yml.

    The entry is a local package pointing at the copy installed with pyml, so `dbt deps`
    works offline and the macros follow the installed pyml version. packages.yml is created
    when missing; running it again changes nothing. Call the macros as pyml.<macro>.

    Example: pyml init && dbt deps
    """
    from pyml.dbt.package import init_project

    click.echo(init_project(project_dir).message())


cli.add_command(monitor_command)
cli.add_command(publish_command)
cli.add_command(scaffold_command)
cli.add_command(sources_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="pyml")
