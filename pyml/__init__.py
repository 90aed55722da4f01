"""pyml: SQL-first feature and scoring toolkit — dbt + DuckDB + XGBoost.

Library API (the CLI is a thin shell over it)::

    import pyml
    pyml.train(["churn"])                         # = pyml train churn
    pyml.score(["churn"], output="churn.parquet") # = pyml score churn -o churn.parquet
    model = pyml.load_model("churn")              # predicts on pandas DataFrames
    model.predict(df)
"""

from __future__ import annotations

__version__ = "0.1.0"

from pyml.api import score, train
from pyml.errors import PymlError
from pyml.model import LoadedModel, load_model
from pyml.project import Project, load_project, select_specs
from pyml.score import ScoreResult
from pyml.spec import ModelSpec
from pyml.train import TrainResult

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
