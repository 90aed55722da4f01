"""User-facing errors.

Every failure a user can cause is a subclass of :class:`PymlError` whose message says what
is wrong, where (file, model, table, column) and what to do. The CLI prints the message on
one line and exits with the error's `exit_code` (1, or 2 for drift found); it never shows a
traceback for these. Messages name parameters as both the CLI and Python spell them ("output
file X", not "--output X"), because a library caller never typed the flag.

A bug in pyml itself is an :class:`InternalError`, deliberately not a `PymlError`: it is not
the user's to fix, so it keeps its traceback for the bug report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PymlError(Exception):
    """Base class of every error that is the user's to fix."""

    exit_code = 1  # the CLI's exit status for this error


class UsageError(PymlError):
    """Arguments that do not go together, or a value outside the allowed choices."""


class OutputError(PymlError):
    """An output file or folder cannot be used or written (wrong kind, missing folder, refused)."""


class ProjectError(PymlError):
    """The dbt project, profile, target or manifest cannot be used."""


class SpecError(PymlError):
    """A `config: meta: pyml:` model spec is invalid."""


class OutputNameClash(SpecError):
    """Two columns pyml would write get one name: a key column named like an output column,
    or two classes whose `probability_<class>` columns differ only in case."""


class SelectionError(PymlError):
    """A model name or --select matched nothing usable."""


class EngineError(PymlError):
    """The dbt target's engine cannot run this: a verb that runs on DuckDB targets only for
    now, or a Spark target without pyml's Spark extra installed."""


class DatabaseError(PymlError):
    """The DuckDB file is missing, unreadable, or a query on it failed."""


class DatabaseLocked(DatabaseError):
    """Another process holds the DuckDB write lock."""


class RelationNotFound(DatabaseError):
    """A table or view that a spec names does not exist (yet)."""


class DataError(PymlError):
    """The rows themselves cannot be used (empty, one class, infinite values, ...)."""


class SchemaMismatch(DataError):
    """The relation to score does not match the schema the model was trained on."""


class ModelNotFound(PymlError):
    """No trained version exists for a model name (or the asked version is missing)."""


class RegistryError(PymlError):
    """A registry row is unusable (e.g. a corrupt booster)."""


class RegistryDamaged(RegistryError):
    """The ml schema's tables contradict each other (a table, column or rows removed or
    changed by hand); pyml refuses to read or write it rather than repair it."""


class LifecycleError(PymlError):
    """A promotion or rollback that the version history does not allow."""


class SqlGenError(PymlError):
    """A stored model cannot be written as SQL (or as a dbt model)."""


class DriftDetected(PymlError):
    """A feature's PSI is above the threshold: a finding rather than a failure.

    Raised after the drift results were written to ml.drift; it carries them, so the caller
    can still report them. The CLI prints the message as it is and exits with code 2.
    """

    exit_code = 2  # 1 stays for errors: a scheduler can tell "drifted" from "broken"

    def __init__(self, message: str, results: Sequence[Any]) -> None:
        super().__init__(message)
        self.results = tuple(results)  # the DriftResult of every model checked


class InternalError(Exception):
    """A bug in pyml (not a PymlError: there is nothing for the user to fix)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} (a bug in pyml, not in your project or data: please "
                         "report it to the pyml maintainers with this traceback)")
