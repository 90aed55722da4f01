"""What a first-time user meets before any model: the install's metadata and the files the
README's commands leave in the checkout (issue 17's polish list)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_licence_metadata_is_pep_639() -> None:
    # A TOML table (`license = {text = ...}`) made setuptools print a deprecation banner per
    # build step of `make demo`'s install; an SPDX string needs setuptools 77.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"][0]


def test_readme_outputs_are_ignored_and_the_sources_file_is_not() -> None:
    outputs = ["churn.html", "churn.parquet", "churn.csv", "churn_export/model.json",
               "models/ml/churn_scored_sql.sql", "models/ml/churn_scored_sql.yml"]
    done = subprocess.run(["git", "check-ignore", *outputs], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.stdout.split() == outputs
    kept = ["models/ml/_ml__sources.yml", "seeds/raw_customers.csv", "docs/cli.md"]
    done = subprocess.run(["git", "check-ignore", *kept], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 1 and done.stdout == ""  # none of them ignored
