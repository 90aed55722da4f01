"""`pyml sources`: its click command (cli.py registers it; it stays out of cli.py for size)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from pyml.cliopts import handle_errors, project_options

if TYPE_CHECKING:
    from pyml.session import Session


@click.command()
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="the YAML file to write (default: models/ml/_ml__sources.yml in the "
                   "project).")
@click.option("--force", is_flag=True, help="replace a file that `pyml sources` did not write.")
@project_options
@handle_errors
def sources(output: Path | None, force: bool, project_dir: str | None,
            profiles_dir: str | None, target: str | None, lock_timeout: float) -> None:
    """Declare every ml table as a dbt source, with descriptions and tests.

    Writes a dbt sources YAML for the registry tables (ml.models, ml.metrics, ...), each
    model's predictions and every other ml table in the database (explanations,
    fingerprints, profiles), with the table and column descriptions pyml also stores as
    DuckDB COMMENTs, key tests (pyml.key_is_unique, passing while a table does not exist
    yet), the stale-predictions test and freshness on the written-at columns. Rerun it
    after training or scoring a new model; `dbt docs generate` then shows every table.

    Example: pyml train && pyml score && pyml sources && dbt docs generate
    """
    from pyml.session import open_session
    from pyml.verbs.sources import session_for_sources, write_sources

    def log(message: str) -> None:
        click.echo(message, err=True)

    def open_() -> Session:
        return open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                            log=log)

    with session_for_sources(open_, project_dir, output, force=force, log=log) as session:
        result = write_sources(session, output, force=force)
    click.echo(result.message())
