"""The command line's option types, shared options and group: what `pyml.cli` parses with.

Kept apart from `pyml.cli` (which holds the commands) so the commands module stays small.
Two rules live here:

- numbers on the command line are ASCII: Python's `int()` and `float()` also read other
  scripts' digits ('２', '٣'), and `str.isdigit` accepts '²', which `int()` then refuses, so
  each type refuses anything but ASCII text before it converts;
- every user mistake exits with code 1. click exits with 2 for a usage error (an unknown
  option, a value out of range), which is also `pyml drift`'s "drift found"; a scheduler could
  not tell a typo from drift. `PymlGroup` gives click's usage errors code 1 and keeps 2 for
  drift alone.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from pyml.errors import DriftDetected, PymlError
from pyml.interrupts import forget_written, interrupted_line, is_interrupt

F = TypeVar("F", bound=Callable[..., Any])


def _ascii(kind: click.ParamType, value: Any, param: click.Parameter | None,
           ctx: click.Context | None) -> None:
    if isinstance(value, str) and not value.isascii():
        kind.fail(f"{value!r} is not a number written in ASCII digits.", param, ctx)


class NumberRange(click.FloatRange):
    """click.FloatRange that also refuses NaN, which passes every range comparison (a NaN
    --lock-timeout spun forever; a NaN threshold never alerts), and non-ASCII digits."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        _ascii(self, value, param, ctx)
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


class IntRange(click.IntRange):
    """click.IntRange that refuses non-ASCII digits ('２' is not 2 on this command line)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        _ascii(self, value, param, ctx)
        return super().convert(value, param, ctx)


class Int(click.types.IntParamType):
    """click's INT that refuses non-ASCII digits."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        _ascii(self, value, param, ctx)
        return super().convert(value, param, ctx)


INT = Int()  # any integer, in ASCII digits


@contextlib.contextmanager
def _user_mistake() -> Iterator[None]:
    try:
        yield
    except click.UsageError as e:
        # Bare `pyml` prints its help, as --help does: no mistake. 2 is `pyml drift`'s.
        help_only = isinstance(e, click.exceptions.NoArgsIsHelpError)
        e.exit_code = 0 if help_only else 1  # type: ignore[misc]  # click's is a class default
        raise


class PymlGroup(click.Group):
    """The `pyml` group: click's usage errors (bad option, bad value, unknown command) exit
    with code 1 like every other user mistake; `--help` still exits 0."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        with _user_mistake():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _user_mistake():
            return super().invoke(ctx)


def project_options(func: F) -> F:
    """--project-dir / --profiles-dir / --target, as in dbt."""
    for option in reversed([
        click.option("--project-dir", type=click.Path(file_okay=False),
                     help="dbt project folder (default: DBT_PROJECT_DIR, cwd or a parent)."),
        click.option("--profiles-dir", type=click.Path(file_okay=False),
                     help="folder of profiles.yml (default: DBT_PROFILES_DIR, cwd, ~/.dbt)."),
        click.option("--target", "-t",
                     help="profile target (default: DBT_TARGET, else the profile's target)."),
        click.option("--lock-timeout", type=NumberRange(min=0), default=5.0, show_default=True,
                     help="seconds to wait for another process's DuckDB write lock."),
    ]):
        func = option(func)
    return func


def selection_options(func: F) -> F:
    """MODEL... names and dbt --select on feature models."""
    func = click.option("--select", "-s", multiple=True,
                        help="dbt selection of feature models (e.g. customer_features, "
                             "+tag:ml, path:models/features); their specs are added to the "
                             "MODELS named, as dbt's selectors add up.")(func)
    return click.argument("models", nargs=-1)(func)


class _Failed(click.ClickException):
    """A PymlError for click: one line on stderr, the error's own exit code."""

    def __init__(self, error: PymlError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click's is a class default
        # Drift found is a finding, not a failure: its line carries no "Error: ".
        self.prefix = "" if isinstance(error, DriftDetected) else "Error: "

    def show(self, file: Any = None) -> None:
        click.echo(self.prefix + self.message, err=True)


def handle_errors(func: F) -> F:
    """Turn PymlError into one clear line and its exit code (1; drift: 2), no traceback."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        forget_written()
        try:
            return func(*args, **kwargs)
        except PymlError as e:
            raise _Failed(e) from e
        except (KeyboardInterrupt, Exception) as e:
            # Ctrl-C, or DuckDB's "Query interrupted" when it came during a query; the
            # transaction in progress rolled back on the way out.
            if not is_interrupt(e):
                raise
            click.echo(interrupted_line(), err=True)
            sys.exit(130)
    return wrapper  # type: ignore[return-value]


# promote, rollback, tune: what to do about the predictions the old champion wrote.
score_option = click.option(
    "--score/--no-score", default=None,
    help="rescore (pyml score) as soon as the champion changes (default: the spec's "
         "promote.score, false: print which tables are stale and the command to fix them).")
