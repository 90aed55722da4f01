"""pyml: SQL-first feature and scoring toolkit — dbt + DuckDB + XGBoost.

Library API (the CLI is a thin shell over it)::

    import pyml
    pyml.train(["churn"])                         # = pyml train churn
    pyml.score(["churn"], output="churn.parquet") # = pyml score churn -o churn.parquet
    model = pyml.load_model("churn")              # predicts on pandas DataFrames
    model.predict(df)

Importing `pyml` (or `pyml.cli`) loads nothing but this file: each name below is imported
on first use (PEP 562), so `pyml --help` does not pay for XGBoost, DuckDB or dbt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "train": "pyml.api", "score": "pyml.api", "explain": "pyml.api", "drift": "pyml.api",
    "monitor": "pyml.api",
    "profile": "pyml.api", "tune": "pyml.api", "promote": "pyml.api", "rollback": "pyml.api",
    "show": "pyml.api", "models": "pyml.api", "predictions": "pyml.api",
    "sql": "pyml.api", "sql_model": "pyml.api", "publish": "pyml.api",
    "Session": "pyml.session", "open_session": "pyml.session",
    "PymlError": "pyml.errors", "DriftDetected": "pyml.errors",
    "LoadedModel": "pyml.modelling.model", "load_model": "pyml.modelling.model",
    "Project": "pyml.dbt.project", "load_project": "pyml.dbt.project",
    "select_specs": "pyml.dbt.project",
    "ModelSpec": "pyml.dbt.spec",
    "ScoreResult": "pyml.verbs.score", "TrainResult": "pyml.verbs.train",
}

if TYPE_CHECKING:
    from pyml.api import score, train
    from pyml.dbt.project import Project, load_project, select_specs
    from pyml.dbt.spec import ModelSpec
    from pyml.errors import PymlError
    from pyml.modelling.model import LoadedModel, load_model
    from pyml.verbs.score import ScoreResult
    from pyml.verbs.train import TrainResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "LoadedModel",
    "ModelSpec",
    "Project",
    "PymlError",
    "ScoreResult",
    "TrainResult",
    "__version__",
    "load_model",
    "load_project",
    "score",
    "select_specs",
    "train",
]
