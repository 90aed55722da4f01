"""ml.calibrators: each binary version's probability calibration, kept for label-free
performance estimates (pyml.modelling.cbpe).

A calibrator is an isotonic regression stored as its breakpoints: a non-decreasing
piecewise-linear map from predicted to calibrated probability, exact and portable (a pair of
DOUBLE[] columns anyone can apply in SQL or numpy), never a pickled scikit-learn object.
`pyml train` writes it in the transaction that stores the version; versions trained before
the table existed, and multiclass or regression versions, have none.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from pyml.engines.duckdb import first_row, qualified, table_exists
from pyml.store.names import SCHEMA
from pyml.store.schema import CALIBRATORS

TABLE = qualified(SCHEMA, CALIBRATORS.name)


@dataclass(frozen=True)
class Calibrator:
    """An isotonic calibration map fitted on a version's holdout (a row of ml.calibrators)."""

    x: tuple[float, ...]  # breakpoints: predicted probabilities, non-decreasing
    y: tuple[float, ...]  # calibrated probability at each breakpoint, non-decreasing, in [0, 1]
    threshold: float  # the version's decision threshold: positive when p >= threshold
    fitted_rows: int  # holdout rows it was fitted on

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of `prob`: linear between breakpoints, clipped to the
        first/last breakpoint's value outside them (what IsotonicRegression.predict does
        with out_of_bounds='clip')."""
        return np.interp(np.asarray(prob, dtype=np.float64), np.asarray(self.x),
                         np.asarray(self.y))


def write_calibrator(con: duckdb.DuckDBPyConnection, name: str, version: int,
                     calibrator: Calibrator) -> None:
    """Insert `name` v`version`'s calibrator, inside the caller's transaction (ensure_schema
    has created ml.calibrators)."""
    con.execute(f"insert into {TABLE} values (?, ?, ?, ?, ?, ?)",
                [name, version, list(calibrator.x), list(calibrator.y),
                 float(calibrator.threshold), int(calibrator.fitted_rows)])


def load_calibrator(con: duckdb.DuckDBPyConnection, name: str, version: int
                    ) -> Calibrator | None:
    """`name` v`version`'s calibrator; None where it has none (not binary, a holdout
    without both classes, or trained before ml.calibrators existed)."""
    if not table_exists(con, SCHEMA, CALIBRATORS.name):
        return None
    row = first_row(con, f"select x, y, threshold, fitted_rows from {TABLE} "
                         "where model_name = ? and version = ?", [name, version])
    if row is None:
        return None
    return Calibrator(tuple(float(v) for v in row[0]), tuple(float(v) for v in row[1]),
                      float(row[2]), int(row[3]))
