"""Where `pyml publish` writes and what else it publishes: `vars: pyml: publish:` in
dbt_project.yml (pyml keeps no config file of its own, and dbt accepts any vars)::

    vars:
      pyml:
        publish:
          path: warehouse_bi.duckdb         # default: <the target's file stem>_bi.duckdb
          relations: [customers_at_risk]    # dbt models or schema.table, besides predictions

With the key present, `pyml score`, `promote`, `rollback`, `train` and `tune` publish after
they write; without it only `pyml publish` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pyml.errors import ProjectError

_KEYS = ("path", "relations")


@dataclass(frozen=True)
class PublishConfig:
    """`vars: pyml: publish:` of a dbt project."""

    configured: bool  # the key is there: the writing commands publish after they write
    path: Path | None = None  # the BI file (relative to the project folder); None: default
    relations: tuple[str, ...] = ()  # dbt model names or schema.table to publish too


def default_path(db_path: Path) -> Path:
    """The BI file beside the target's DuckDB file: `<stem>_bi.duckdb`."""
    return db_path.with_name(f"{db_path.stem}_bi.duckdb")


def publish_config(project_dir: Path) -> PublishConfig:
    """Read `vars: pyml: publish:` from `project_dir`/dbt_project.yml."""
    where = f"{project_dir / 'dbt_project.yml'}: vars: pyml: publish"
    try:
        config = yaml.safe_load((project_dir / "dbt_project.yml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return PublishConfig(False)  # load_project has already said what is wrong with it
    pyml = _mapping(_mapping(config).get("vars")).get("pyml")
    if pyml is None or "publish" not in _mapping(pyml):
        return PublishConfig(False)
    raw = _mapping(pyml)["publish"]
    if raw is None or raw is True:
        return PublishConfig(True)
    if not isinstance(raw, dict):
        raise ProjectError(f"{where} must be a mapping (path:, relations:), not {raw!r}")
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise ProjectError(f"{where} has unknown key {', '.join(unknown)}; the keys are "
                           f"{', '.join(_KEYS)}")
    path = raw.get("path")
    if path is not None and (not isinstance(path, str) or not path.strip()):
        raise ProjectError(f"{where}: path must be a file name such as warehouse_bi.duckdb, "
                           f"not {path!r}")
    relations = raw.get("relations") or []
    if isinstance(relations, str):
        relations = [relations]
    if not isinstance(relations, list) or not all(
            isinstance(r, str) and r.strip() for r in relations):
        raise ProjectError(f"{where}: relations must be a list of dbt model names or "
                           f"schema.table, not {relations!r}")
    resolved = (project_dir / path).expanduser() if path else None
    return PublishConfig(True, resolved, tuple(r.strip() for r in relations))


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}
