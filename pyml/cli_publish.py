"""`pyml publish`: its click command (cli.py registers it; it stays out of cli.py for size)."""

from __future__ import annotations

from pathlib import Path

import click

from pyml.cliopts import handle_errors, project_options, selection_options


@click.command()
@selection_options
@click.option("--path", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="the BI file (default: vars: pyml: publish: path in dbt_project.yml, "
                   "else <target file stem>_bi.duckdb beside the target's file).")
@click.option("--relation", "relations", multiple=True,
              help="a dbt model or schema.table to publish too (repeatable; default: vars: "
                   "pyml: publish: relations).")
@project_options
@handle_errors
def publish(models: tuple[str, ...], select: tuple[str, ...], path: Path | None,
            relations: tuple[str, ...], project_dir: str | None, profiles_dir: str | None,
            target: str | None, lock_timeout: float) -> None:
    """Copy predictions (and chosen relations) to a BI file that dashboards read.

    Superset, Metabase, Evidence or a notebook open the BI file read-only and never block
    dbt or pyml, which keep the main file. Each table goes to a Parquet file replaced
    atomically; the BI file holds one view per table, with its comments. With `vars: pyml:
    publish:` in dbt_project.yml, score, promote, rollback, train and tune republish on
    their own.

    Example: pyml publish --relation customers_at_risk
    """
    from pyml.api import publish as run_publish
    from pyml.verbs.publish import describe

    result = run_publish(models, select=select, path=path, relations=relations or None,
                         project_dir=project_dir, profiles_dir=profiles_dir, target=target,
                         lock_timeout=lock_timeout, log=lambda m: click.echo(m, err=True))
    click.echo(describe(result))
