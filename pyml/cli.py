"""The `pyml` command line: parse options, call the library, print. Nothing else lives here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pyml import __version__
from pyml.errors import PymlError

F = TypeVar("F", bound=Callable[..., Any])


def _log(message: str) -> None:
    click.echo(message, err=True)


def project_options(func: F) -> F:
    """--project-dir / --profiles-dir / --target, as in dbt."""
    for option in reversed([
        click.option("--project-dir", type=click.Path(file_okay=False),
                     help="dbt project folder (default: DBT_PROJECT_DIR, cwd or a parent)."),
        click.option("--profiles-dir", type=click.Path(file_okay=False),
                     help="folder of profiles.yml (default: DBT_PROFILES_DIR, cwd, ~/.dbt)."),
        click.option("--target", "-t", help="profile target (default: the profile's target)."),
        click.option("--lock-timeout", type=float, default=5.0, show_default=True,
                     help="seconds to wait for another process's DuckDB write lock."),
    ]):
        func = option(func)
    return func


def selection_options(func: F) -> F:
    """MODEL... names and dbt --select on feature models."""
    func = click.option("--select", "-s", multiple=True,
                        help="dbt selection of feature models (e.g. customer_features, "
                             "+tag:ml, path:models/features).")(func)
    return click.argument("models", nargs=-1)(func)


def handle_errors(func: F) -> F:
    """Turn PymlError into one clear line and exit code 1 (no traceback)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PymlError as e:
            raise click.ClickException(str(e)) from e
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing was written.", err=True)
            sys.exit(130)
    return wrapper  # type: ignore[return-value]


def _load(project_dir: str | None, profiles_dir: str | None, target: str | None) -> Any:
    from pyml.project import load_project

    return load_project(project_dir, profiles_dir, target, log=_log)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyml")
def cli() -> None:
    """pyml: train and score XGBoost models on dbt feature tables in DuckDB.

    Models are declared in a dbt model's YAML under `config: meta: pyml:`;
    predictions are written back as tables in the `ml` schema.

    Example: dbt build && pyml train && pyml score
    """


@cli.command()
@selection_options
@project_options
@handle_errors
def train(models: tuple[str, ...], select: tuple[str, ...], project_dir: str | None,
          profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Train models declared in the dbt project; each run stores a new version.

    With no MODELS and no --select, every declared model is trained.
    Results go to ml.models, ml.metrics and ml.feature_importance.

    Example: pyml train churn --target dev
    """
    from pyml.api import train as run_train

    results = run_train(models, select=select, project_dir=project_dir,
                        profiles_dir=profiles_dir, target=target, log=_log,
                        lock_timeout=lock_timeout)
    for r in results:
        click.echo(f"{r.name} v{r.version} ({r.task}): {r.rows[0]:,} train / {r.rows[1]:,} "
                   f"validation / {r.rows[2]:,} holdout rows, {r.num_trees} trees, "
                   f"{r.seconds:.1f}s")
        for m in r.metrics:
            base = "" if m.baseline is None else f"   (baseline {m.baseline:.4f})"
            click.echo(f"  holdout {m.name:<14} {m.value:.4f}{base}")


@cli.command()
@selection_options
@click.option("--version", "version", type=int, help="score with this version (default: latest).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the predictions to a .parquet or .csv file.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="rows per batch (default: the spec's score.batch_size, 100000).")
@project_options
@handle_errors
def score(models: tuple[str, ...], select: tuple[str, ...], version: int | None,
          output: Path | None, batch_size: int | None, project_dir: str | None,
          profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Score relations with trained models into ml.<model>_predictions.

    The table is replaced atomically: readers see the old or the new table.

    Example: pyml score churn --output churn.parquet
    """
    from pyml.api import score as run_score

    results = run_score(models, select=select, version=version, output=output,
                        batch_size=batch_size, project_dir=project_dir,
                        profiles_dir=profiles_dir, target=target, log=_log,
                        lock_timeout=lock_timeout)
    for r in results:
        extra = f" and {r.output}" if r.output else ""
        click.echo(f"{r.name} v{r.version}: {r.rows:,} rows -> {r.table}{extra} "
                   f"({r.seconds:.1f}s)")


@cli.command()
@click.argument("models", nargs=-1)
@project_options
@handle_errors
def models(models: tuple[str, ...], project_dir: str | None, profiles_dir: str | None,
           target: str | None, lock_timeout: float) -> None:
    """List trained models: versions, rows and the headline holdout metric.

    Example: pyml models churn
    """
    from pyml.reports import models_table

    project = _load(project_dir, profiles_dir, target)
    click.echo(models_table(project, models, lock_timeout=lock_timeout))


@cli.command()
@click.argument("model")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=10, show_default=True)
@project_options
@handle_errors
def predictions(model: str, limit: int, project_dir: str | None, profiles_dir: str | None,
                target: str | None, lock_timeout: float) -> None:
    """Show the top rows of ml.<MODEL>_predictions (highest probability or value first).

    Example: pyml predictions churn --limit 20
    """
    from pyml.reports import top_predictions

    project = _load(project_dir, profiles_dir, target)
    click.echo(top_predictions(project, model, limit, lock_timeout=lock_timeout))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="pyml")
