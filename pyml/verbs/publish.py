"""`pyml publish`: the prediction tables (and the relations users list) copied where BI tools
read them without ever holding a lock that dbt or pyml needs (pyml.store.publish).

`publish_configured` is what score, promote, rollback, train and tune call after they write,
when dbt_project.yml has `vars: pyml: publish:` (pyml.dbt.publishing).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyml.dbt.project import all_specs, resolve_relation
from pyml.dbt.publishing import default_path, publish_config
from pyml.engines.duckdb import table_exists
from pyml.errors import OutputError, PymlError, RelationNotFound, SpecError
from pyml.session import Session
from pyml.store.publish import Published, predictions_relation
from pyml.store.publish import publish as write_bi

__all__ = ["Published", "describe", "publish", "publish_configured"]


def publish(session: Session, models: Sequence[str] = (), select: Sequence[str] = (), *,
            path: str | Path | None = None, relations: Sequence[str] | None = None,
            when_any: bool = False) -> Published | None:
    """Publish the predictions of the named (or dbt-selected; default: every model that has
    been scored) models and `relations` (default: the configured ones) to the BI file
    (`path`; default: the configured one, else `<target file stem>_bi.duckdb`).

    With nothing to publish: an error, or None if `when_any`, which also skips (with a log
    line) listed relations that do not exist yet."""
    session.require_duckdb("pyml publish")
    project = session.project
    config = publish_config(project.project_dir)
    target = Path(path) if path is not None else (config.path or default_path(project.db_path))
    if target.resolve() == project.db_path.resolve():
        raise OutputError(f"cannot publish to {target}: it is the target's own DuckDB file; "
                          "choose another path (default: "
                          f"{default_path(project.db_path).name})")
    named = bool(models or select)
    specs = session.specs(models, select) if named else all_specs(project)
    listed = list(relations) if relations is not None else list(config.relations)
    extra = []
    for ref in listed:
        try:
            extra.append(resolve_relation(project, ref))
        except SpecError:
            raise SpecError(f"cannot publish '{ref}': it is neither a dbt model of this "
                            "project nor schema.table; name a model that `dbt ls` lists, "
                            "or write schema.table") from None
    with session.database(read_only=True) as con:
        chosen = []
        for spec in specs:
            table = predictions_relation(spec.name)
            if table_exists(con, *table):
                chosen.append(table)
            elif named:
                raise RelationNotFound(f"{spec.name} has no predictions to publish "
                                       f"({'.'.join(table)} is missing); run "
                                       f"`pyml score {spec.name}` first")
        for table in extra:
            if table in chosen:
                continue
            if when_any and not table_exists(con, *table):
                # After score or train, a mart not built yet is no reason to fail them.
                session.log(f"not published: {'.'.join(table)} does not exist yet (build it, "
                            "then `pyml publish`)")
                continue
            chosen.append(table)
        if not chosen and when_any:
            return None
        return write_bi(con, chosen, target)


def describe(result: Published) -> str:
    """The one line a publish prints."""
    count = len(result.tables)
    # The BI file lists exactly what was published: said, so that `pyml publish churn` does
    # not drop the other tables a dashboard reads without a word (an audit).
    removed = (f"; no longer in it: {', '.join(result.removed)}" if result.removed else "")
    return (f"published {count} table{'s' if count != 1 else ''} ({result.rows:,} rows) to "
            f"{result.path} in {result.seconds:.1f}s{removed}")


def publish_configured(session: Session, done: str) -> Published | None:
    """Publish everything if dbt_project.yml asks for it (else None), logging one line.

    `done` (e.g. 'scored churn') prefixes the error if publishing fails: what the command
    wrote is committed by then, and the BI file is as it was."""
    if not publish_config(session.project.project_dir).configured:
        return None
    if session.engine != "duckdb":
        session.log("not published: vars: pyml: publish works on DuckDB targets only for now")
        return None
    try:
        result = publish(session, when_any=True)
    except PymlError as e:
        raise PymlError(f"{done}, but publishing failed (the BI file is unchanged; "
                        f"`pyml publish` retries): {e}") from e
    if result is not None:
        session.log(describe(result))
    return result
