"""Ctrl-C where Python cannot take it: inside XGBoost's calls back into Python.

XGBoost builds every QuantileDMatrix (from numpy too) and ExtMemQuantileDMatrix by calling a
Python `DataIter` from C++. A KeyboardInterrupt raised inside that callback is not one XGBoost
can pass on (it catches `Exception` only): ctypes prints "Exception ignored", C++ goes on with
half a batch, and the run ends in a check failure blamed on the spec, an abort or a segfault,
or trains on and stores a version after the user pressed Ctrl-C (found by a docs walk). Such
a build runs under `uninterrupted`: a Ctrl-C is noted, and raised as KeyboardInterrupt once
the build has returned, where the CLI turns it into its one "Interrupted" line.

Layer 0: imports nothing from pyml.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

INTERRUPTED = "Interrupted: nothing was written."
# What this command committed before a Ctrl-C (a multi-model train or score keeps the models
# it finished: each commits on its own); the CLI clears it when a command starts.
_written: list[str] = []


def note_written(what: str) -> None:
    """Record a committed write ("churn v8", "ml.churn_predictions") for the Ctrl-C line.
    Only the CLI clears the list: a library caller's long session keeps the last 100."""
    _written.append(what)
    del _written[:-100]


def forget_written() -> None:
    """A command starts: nothing of it is written yet."""
    _written.clear()


def interrupted_line() -> str:
    """What a Ctrl-C prints: that nothing was written, or what was before the interrupted
    step (which rolled back). A docs walk found "nothing was written" after a `pyml train`
    of three models had stored two."""
    if not _written:
        return INTERRUPTED
    return (f"Interrupted: the step in progress was rolled back; written before it: "
            f"{', '.join(_written)}.")


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold SIGINT for the block and raise KeyboardInterrupt after it if one came. A no-op
    off the main thread (Python delivers signals there only) and where another handler than
    Python's own is in place (an outer block, a server's)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pending: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def uninterrupted(build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`build(*args, **kwargs)` (an XGBoost data matrix) with Ctrl-C held until it returns."""
    with deferred_sigint():
        return build(*args, **kwargs)


def is_interrupt(error: BaseException) -> bool:
    """Whether `error` is Ctrl-C: KeyboardInterrupt, or DuckDB's query interruption (which
    DuckDB raises in its place when the signal arrives during a query)."""
    if isinstance(error, KeyboardInterrupt):
        return True
    duckdb: Any = sys.modules.get("duckdb")  # loaded when DuckDB raised it; never imported here
    if duckdb is not None and isinstance(error, duckdb.InterruptException):
        return True
    return isinstance(error, RuntimeError) and str(error) == "Query interrupted"
