"""`pyml scaffold`: its click command (cli.py registers it; it stays out of cli.py for size)."""

from __future__ import annotations

from pathlib import Path

import click

from pyml.cliopts import handle_errors, project_options


@click.command()
@click.argument("relations", nargs=-1, required=True)
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="folder for the model and its YAML (default: models/staging).")
@click.option("--force", is_flag=True, help="replace files that exist.")
@project_options
@handle_errors
def scaffold(relations: tuple[str, ...], output_dir: Path | None, force: bool,
             project_dir: str | None, profiles_dir: str | None, target: str | None,
             lock_timeout: float) -> None:
    """Write a cleansing staging model and its YAML for each raw RELATION.

    RELATION is a dbt source (source.table) or a table of the target's DuckDB file
    (schema.table). Each column is profiled in SQL (missing markers such as '?' and 'N/A',
    case and whitespace variants of categories, date formats, '$1,234.50' amounts,
    sentinels like -1/9999, duplicates) and cleaned with pyml's macros; the YAML says what
    was found and carries the tests the data passes. Existing files are kept unless --force.

    Example: pyml init && dbt deps && pyml scaffold raw.customers && dbt build
    """
    from pyml.dbt.scaffold import scaffold as write_scaffold
    from pyml.session import open_session

    session = open_session(project_dir, profiles_dir, target, lock_timeout=lock_timeout,
                           log=lambda m: click.echo(m, err=True))
    session.require_duckdb("pyml scaffold")
    with session.database(read_only=True) as con:
        paths = write_scaffold(session.project, con, list(relations), output_dir=output_dir,
                               force=force)
    for path in paths:
        click.echo(f"wrote {path}")
    click.echo("next: dbt build --select " + " ".join(
        sorted({p.stem for p in paths if p.suffix == ".sql"})))
