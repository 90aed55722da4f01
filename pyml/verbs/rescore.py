"""After the champion changes (promote, rollback, a training that promotes): rescore at once,
or say which output tables the old champion wrote and the command that rewrites them.

`score` (the `--score` / `--no-score` flags) decides; None: the spec's `promote.score`.
Nothing is ever silently stale (pyml.store.staleness).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyml.errors import PymlError, SelectionError, SpecError
from pyml.session import Session

__all__ = ["after_champion_change"]


def _wanted(session: Session, names: Sequence[str], score: bool | None) -> list[str]:
    """The models to rescore now: all with --score, none with --no-score, else those whose
    spec says promote.score."""
    if score is False or not names:
        return []
    try:
        specs = session.specs(names)
    except (SelectionError, SpecError):
        if score:  # asked for by name: say why it cannot
            raise
        return []  # a model no longer declared (or a broken spec) cannot say promote.score
    return [s.name for s in specs if score or s.promote.score]


def hints(session: Session, names: Sequence[str]) -> list[str]:
    """The staleness lines of the named models' output tables (DuckDB or Spark)."""
    if session.engine == "spark":
        from pyml.store.spark_registry import stale_hints as spark_hints

        return spark_hints(session.spark(), names)
    from pyml.store.staleness import stale_hints

    with session.database(read_only=True) as con:
        return stale_hints(con, names)


def after_champion_change(session: Session, names: Sequence[str], score: bool | None,
                          done: str) -> list[str]:
    """Rescore the models that want it, then return one `stale:` line per output table
    still written by another version than the champion. `done` (e.g. 'churn: v3 is now
    the champion (was v2)') prefixes the error if rescoring fails: the change itself is
    committed by then."""
    rescore = _wanted(session, names, score)
    if rescore:
        try:
            if session.engine == "spark":
                from pyml.spark.score import score as spark_score

                results = spark_score(session, session.specs(rescore))
            else:
                from pyml.verbs.score import score as duckdb_score

                results = duckdb_score(session, session.specs(rescore))
        except PymlError as e:
            message = f"{done}, but rescoring failed: {e}"
            try:
                failure = type(e)(message)
            except TypeError:  # a subclass with its own constructor
                failure = PymlError(message)
            raise failure from e
        for r in results:
            session.log(f"[{r.name}] rescored {r.table} with v{r.version} ({r.rows:,} rows)")
    return [f"stale: {h}" for h in hints(session, names)]
