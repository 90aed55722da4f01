"""pyml: SQL-first feature and scoring toolkit — dbt + DuckDB + XGBoost.

Library API (the CLI is a thin shell over it)::

    import pyml
    project = pyml.load_project()                 # dbt project, profile, target, manifest
    pyml.train(project, pyml.select_specs(project, ["churn"]))
    pyml.score(project, pyml.select_specs(project, ["churn"]))
    model = pyml.load_model("churn")              # predicts on pandas DataFrames
"""

from __future__ import annotations

__version__ = "0.1.0"

from pyml.errors import PymlError
from pyml.model import LoadedModel, load_model
from pyml.project import Project, load_project, select_specs
from pyml.score import ScoreResult, score
from pyml.spec import ModelSpec
from pyml.train import TrainResult, train

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
