"""Ctrl-C while XGBoost builds a data matrix through a Python DataIter (pyml.interrupts).

A KeyboardInterrupt raised inside the callback left XGBoost with half a batch: the run ended in
a check failure blamed on the spec ("accumulated_rows == info.num_row_"), an abort, a segfault,
or trained on and stored a version (found by a docs walk that sent SIGINT at random moments).
Here the signal is sent from inside the callback, where the walk's timing hit it, so the
moment is exact.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import xgboost as xgb

from pyml.interrupts import deferred_sigint, is_interrupt, uninterrupted
from pyml.modelling import fit

from .conftest import Loans


@pytest.fixture(autouse=True)
def _python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler, as a terminal's Ctrl-C meets it: a suite started from a
    shell in the background inherits SIGINT ignored (pyml then has nothing to hold back)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _Batches(xgb.DataIter):
    """Three batches; the first `next` of the first pass sends this process SIGINT."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.parts = [(rng.random((200, 3), dtype=np.float32), rng.random(200))
                      for _ in range(3)]
        self.at, self.calls = 0, 0
        super().__init__()

    def next(self, input_data: Callable[..., None]) -> bool:
        if self.at == len(self.parts):
            return False
        self.calls += 1
        if self.calls == 1:
            os.kill(os.getpid(), signal.SIGINT)
        X, y = self.parts[self.at]
        input_data(data=X, label=y)
        self.at += 1
        return True

    def reset(self) -> None:
        self.at = 0


def test_ctrl_c_in_a_data_iter_is_raised_once_the_matrix_is_built(
        capfd: pytest.CaptureFixture[str]) -> None:
    batches = _Batches()
    with pytest.raises(KeyboardInterrupt):
        uninterrupted(xgb.QuantileDMatrix, batches)
    assert batches.calls >= 3  # every batch went in: the build finished, then the interrupt
    assert "Exception ignored" not in capfd.readouterr().err
    # Python's own handler is back: the next Ctrl-C interrupts at once.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_ctrl_c_nothing_is_raised_and_blocks_nest() -> None:
    with deferred_sigint():
        with deferred_sigint():  # inner: another handler is in place, it leaves it alone
            pass
        matrix = uninterrupted(xgb.QuantileDMatrix, np.ones((4, 2), np.float32),
                               np.arange(4.0))
    assert matrix.num_row() == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_duckdb_query_interruption_counts_as_ctrl_c() -> None:
    import duckdb

    assert is_interrupt(KeyboardInterrupt()) and is_interrupt(RuntimeError("Query interrupted"))
    assert is_interrupt(duckdb.InterruptException("INTERRUPT Error: Interrupted!"))
    assert not is_interrupt(RuntimeError("something else")) and not is_interrupt(ValueError())


def test_train_interrupted_while_the_refit_matrix_is_built(
        scored: Loans, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`pyml train`: Ctrl-C during the refit's QuantileDMatrix (built from the parts by a
    DataIter) gives exit 130, pyml's one line, and the registry as it was."""
    before = scored.sql("select model_name, version, status from ml.models order by all")
    real_next = fit._Parts.next
    sent: list[int] = []

    def next_with_ctrl_c(self: fit._Parts, input_data: Callable[..., None]) -> bool:
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return real_next(self, input_data)

    monkeypatch.setattr(fit._Parts, "next", next_with_ctrl_c)
    result = scored.pyml("train", "default_risk", "--force")
    assert sent and result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == "Interrupted: nothing was written."
    assert "Traceback" not in result.output
    assert "Exception ignored" not in capfd.readouterr().err
    assert scored.sql("select model_name, version, status from ml.models order by all") == before


def test_ctrl_c_after_a_model_was_stored_says_what_was_written(
        scored: Loans, monkeypatch: pytest.MonkeyPatch) -> None:
    """A train of two models, interrupted in the second: the first's new version stays (it
    committed on its own), and the line says so instead of "nothing was written" (a README
    walk found that line after two of three models had been stored)."""
    real_next = fit._Parts.next
    seen: list[int] = []

    def next_with_ctrl_c(self: fit._Parts, input_data: Callable[..., None]) -> bool:
        if id(self) not in seen:
            seen.append(id(self))
            if len(seen) == 2:  # the second model's refit
                os.kill(os.getpid(), signal.SIGINT)
        return real_next(self, input_data)

    monkeypatch.setattr(fit._Parts, "next", next_with_ctrl_c)
    result = scored.pyml("train", "default_risk", "grade", "--force")
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Interrupted: the step in progress was rolled back; written before it: "
        "default_risk v2.")
    assert scored.sql("select model_name, max(version) from ml.models group by all "
                      "order by all") == [("default_risk", 2), ("grade", 1), ("loss_amount", 1)]


def test_a_ctrl_c_after_the_study_names_the_trials_written() -> None:
    """The study's trials commit before the fits that follow it: a Ctrl-C there said
    "nothing was written" while ml.trials held the study (an audit)."""
    from datetime import datetime

    import duckdb

    from pyml.interrupts import forget_written, interrupted_line
    from pyml.store.trials import Trial, record_trials

    forget_written()
    with duckdb.connect() as con:
        record_trials(con, [Trial("m", "m-1a2b", 1, None, {"eta": 0.1}, "logloss", "minimize",
                                  0.5, 3, "complete", 0.1, datetime(2026, 1, 1))])
    assert interrupted_line() == ("Interrupted: the step in progress was rolled back; written "
                                  "before it: ml.trials (study m-1a2b).")
    forget_written()
