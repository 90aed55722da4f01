"""ml.final_fit: which booster a version scores with, and which one its metrics measured.

With `final_fit: refit` (the default) the booster in ml.models is refitted on every labelled
row after the evaluated fit was measured on the holdout; the evaluated booster is kept here,
because the refitted one has trained on the holdout rows: promotion (pyml.modelling.policy)
scores holdout rows with the evaluated booster only. With `cv_average` or `none` the stored
booster is the evaluated one and `evaluated_booster` is NULL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from pyml.engines.duckdb import qualified, table_exists
from pyml.errors import RegistryError
from pyml.store.names import SCHEMA

if TYPE_CHECKING:  # XGBoost is imported where a booster is loaded (startup time: registry.py)
    import xgboost as xgb

TABLE = qualified(SCHEMA, "final_fit")


@dataclass(frozen=True)
class FinalFit:
    """What a training run says about its stored booster (one ml.final_fit row)."""

    method: str  # refit | cv_average | none
    scores_with: str  # one line: the stored booster, or why it is not a refit
    metrics_from: str  # one line: the booster the holdout metrics measured
    fit_rows: int  # labelled rows the stored booster was fitted on
    rounds: int  # boosting rounds of the stored booster
    evaluated: xgb.Booster | None = None  # the evaluated fit when it is not the stored one


def write_final_fit(con: duckdb.DuckDBPyConnection, name: str, version: int,
                    final: FinalFit) -> None:
    """Insert the row of `name` v`version` (inside the caller's transaction)."""
    blob = None if final.evaluated is None else bytes(final.evaluated.save_raw("ubj"))
    con.execute(f"insert into {TABLE} (model_name, version, method, scores_with, "
                "metrics_from, fit_rows, rounds, evaluated_booster) values "
                "(?, ?, ?, ?, ?, ?, ?, ?)",
                [name, version, final.method, final.scores_with, final.metrics_from,
                 final.fit_rows, final.rounds, blob])


def _row(con: duckdb.DuckDBPyConnection, name: str, version: int) -> dict[str, Any] | None:
    """The version's row as column -> value; None without one. `select *`: a read-only
    command on a registry whose trailing columns an older release lacks still reads it
    (pyml.store.integrity lets those pass; the next write adds them)."""
    if not table_exists(con, SCHEMA, "final_fit"):
        return None
    cur = con.execute(f"select * from {TABLE} where model_name = ? and version = ?",
                      [name, version])
    rows = cur.fetchall()  # all of it: an unfinished result blocks the connection
    if not rows:
        return None
    return dict(zip([d[0] for d in cur.description], rows[0], strict=True))


def final_fit_row(con: duckdb.DuckDBPyConnection, name: str, version: int
                  ) -> dict[str, Any] | None:
    """The version's row without the booster bytes; None for a version trained before
    ml.final_fit existed (or on Spark): its stored booster is the evaluated one."""
    row = _row(con, name, version)
    if row is None:
        return None
    blob = row.pop("evaluated_booster", None)
    row.pop("model_name", None)
    row.pop("version", None)
    return {**row, "has_evaluated_booster": blob is not None}


def evaluated_booster(con: duckdb.DuckDBPyConnection, name: str, version: int
                      ) -> xgb.Booster | None:
    """The booster whose holdout metrics ml.metrics holds, when it is not the stored one
    (a refit); None when the stored booster is the evaluated one.

    A refit version without its evaluated booster is registry damage (RegistryError): its
    stored booster trained on the holdout, so no holdout comparison may use it."""
    row = _row(con, name, version)
    if row is None or row.get("method") != "refit":
        return None
    if row.get("evaluated_booster") is None:
        raise RegistryError(f"model '{name}' version {version} was refitted on all labelled "
                            f"rows but its evaluated booster is missing from {SCHEMA}.final_fit; "
                            f"retrain it with `pyml train {name} --force`")
    import xgboost as xgb

    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(row["evaluated_booster"]))
    except (xgb.core.XGBoostError, TypeError, ValueError) as e:
        raise RegistryError(f"model '{name}' version {version}: the evaluated booster in "
                            f"{SCHEMA}.final_fit is not a valid XGBoost model; retrain it with "
                            f"`pyml train {name}`") from e
    return booster
