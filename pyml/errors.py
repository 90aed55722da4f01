"""User-facing errors.

Every failure a user can cause is a subclass of :class:`PymlError` whose message says what
is wrong, where (file, model, table, column) and what to do. The CLI prints the message on
one line and exits with code 1; it never shows a traceback for these.
"""

from __future__ import annotations


class PymlError(Exception):
    """Base class of every error that is the user's to fix."""

    exit_code = 1


class ProjectError(PymlError):
    """The dbt project, profile, target or manifest cannot be used."""


class SpecError(PymlError):
    """A `config: meta: pyml:` model spec is invalid."""


class SelectionError(PymlError):
    """A model name or --select matched nothing usable."""


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
