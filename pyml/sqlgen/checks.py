"""Checks `pyml sql` builds into its query or makes before it: column names the target
dialect keeps whole, and (DuckDB) each feature's type against the rule `pyml score` applies
(pyml.data.encode.SCORING_TYPES)."""

from __future__ import annotations

from pyml.data.encode import SCORING_TYPES, TYPEOF_PATTERNS, scoring_kind, sql_literal
from pyml.engines.duckdb import quote
from pyml.errors import UsageError
from pyml.store.registry import StoredModel
from pyml.tasks import output_columns

# The longest column name each dialect keeps (PostgreSQL: bytes; the others: characters).
# PostgreSQL cuts a longer one without a word, so two classes sharing a 51-byte prefix came
# back as two columns of one name (an audit).
NAME_LIMITS = {"postgres": 63, "snowflake": 255, "bigquery": 300}


def check_name_lengths(stored: StoredModel, dialect: str, where: str) -> None:
    """UsageError when a column of the query has a name longer than the dialect keeps."""
    limit = NAME_LIMITS.get(dialect)
    if limit is None:
        return
    columns = [*stored.key, *(c.name for c in output_columns(stored.task,
                                                             stored.target.classes))]
    for name in columns:
        size = len(name.encode()) if dialect == "postgres" else len(name)
        if size > limit:
            unit = "bytes" if dialect == "postgres" else "characters"
            raise UsageError(f"{where}: column '{name}' is {size} {unit}, longer than the "
                             f"{limit} {dialect} keeps (it would cut the name, and other "
                             "columns could end up with the same one); shorten the label or "
                             "column in the dbt model, or score it with pyml score")


_KIND_TYPES = {"numeric": "double", "boolean": "boolean", "categorical": "varchar"}


def checked_source(stored: StoredModel, source: str) -> str:
    """DuckDB: the source with each feature checked against the types `pyml score` accepts
    for it (SCORING_TYPES). A number retyped to BOOLEAN was cast to 1/0 and scored on
    without a word where `pyml score` refuses it (an audit); now the query stops with one
    line. typeof() is a constant, so DuckDB folds each check away when it plans the query."""
    items = []
    for f in stored.features:
        kind = scoring_kind(f.dtype) or "numeric"
        col = quote(f.name)
        head = (f"model '{stored.name}' v{stored.version}: feature '{f.name}' was {f.dtype} "
                f"({kind}) at training but is ")
        tail = (f" here, and the model reads {SCORING_TYPES[kind]}; cast it back in the dbt "
                "model or retrain")
        # Cast to the kind's type: a retyped column must bind everywhere it is read (the
        # row-ordering CASE compares it) for DuckDB to reach the folded error.
        pattern = sql_literal(TYPEOF_PATTERNS[kind])
        items.append(f"case when regexp_full_match(typeof({col}), {pattern}) then "
                     f"cast({col} as {_KIND_TYPES[kind]}) else error({sql_literal(head)} || "
                     f"typeof({col}) || {sql_literal(tail)}) end as {col}")
    if not items:
        return f"select * from {source}"
    joined = ",\n        ".join(items)
    return f"select * replace (\n        {joined}\n    ) from {source}"
