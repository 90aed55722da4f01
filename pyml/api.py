"""The library API in one call per verb, with dbt-style project options.

The CLI calls these and nothing else; notebooks and orchestrators can too::

    import pyml
    pyml.train(["churn"])                  # same as `pyml train churn`
    pyml.score(select=["customer_features"], output="churn.parquet")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pyml.project import load_project, select_specs
from pyml.score import ScoreResult
from pyml.score import score as _score
from pyml.train import TrainResult
from pyml.train import train as _train

Log = Callable[[str], None]
PathLike = str | Path | None


def train(models: Sequence[str] = (), *, select: Sequence[str] = (),
          project_dir: PathLike = None, profiles_dir: PathLike = None,
          target: str | None = None, log: Log | None = None,
          lock_timeout: float = 5.0) -> list[TrainResult]:
    """Train the named (or dbt-selected, or all) models; each gets a new version."""
    project = load_project(project_dir, profiles_dir, target, log=log)
    specs = select_specs(project, models, select)
    return _train(project, specs, log=log, lock_timeout=lock_timeout)


def score(models: Sequence[str] = (), *, select: Sequence[str] = (),
          version: int | None = None, output: PathLike = None,
          batch_size: int | None = None, project_dir: PathLike = None,
          profiles_dir: PathLike = None, target: str | None = None,
          log: Log | None = None, lock_timeout: float = 5.0) -> list[ScoreResult]:
    """Score the named (or dbt-selected, or all) models into ml.<model>_predictions."""
    project = load_project(project_dir, profiles_dir, target, log=log)
    specs = select_specs(project, models, select)
    return _score(project, specs, version=version,
                  output=Path(output) if output is not None else None,
                  batch_size=batch_size, log=log, lock_timeout=lock_timeout)
