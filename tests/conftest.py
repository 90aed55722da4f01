"""Shared fixtures: a small lending dbt project, built once, copied for every test.

The project is deliberately not the demo: other names, other columns, a boolean, a numeric
and a string target, so nothing in pyml can lean on the demo's shapes. `dbt build` runs once
per session; each test gets its own copy of the project folder and DuckDB file, so a test
may rewrite YAML, drop tables or corrupt files without touching any other.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner, Result

# dbt must never phone home from a test run (set before dbt is imported anywhere).
os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
# XGBoost's OpenMP threads otherwise spin while they wait; on a busy two-core runner the
# spinning threads starve the rest of the suite (measured: twice the wall time).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pyml.cli import cli

DB_ENV = "LOANS_DB"
N_LOANS = 3000

DBT_PROJECT_YML = """\
name: loans
version: "1.0.0"
config-version: 2
profile: loans
model-paths: ["models"]
seed-paths: ["seeds"]
target-path: "target"
models:
  loans:
    +materialized: table
seeds:
  loans:
    raw_loans:
      +column_types:
        region: varchar
        income: double
"""

PROFILES_YML = """\
loans:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('LOANS_DB', 'loans.duckdb') }}"
      threads: 1
"""

LOAN_FEATURES_SQL = """\
with loans as (
    select * from {{ ref('raw_loans') }}
),

final as (
    select
        cast(loan_id as integer) as loan_id,
        nullif(region, '') as region,
        cast(amount as double) as amount,
        cast(income as double) as income,
        cast(term_months as integer) as term_months,
        grade,
        defaulted = 1 as defaulted,
        cast(loss as double) as loss
    from loans
)

select * from final
"""

# The pyml specs on loan_features, by name, as YAML list items: this project declares all
# three, the Spark suite's (tests/spark/conftest.py) the first two.
LOAN_SPECS = {
    "default_risk": """\
          - name: default_risk
            description: Probability that a loan defaults.
            task: binary
            target: defaulted
            key: loan_id
            exclude: [loss, grade]
""",
    "loss_amount": """\
          - name: loss_amount
            task: regression
            target: loss
            key: [loan_id]
            exclude: [defaulted, grade]
            split: {method: random, test_fraction: 0.25, seed: 3}
""",
    "grade": """\
          - name: grade
            task: multiclass
            target: grade
            key: loan_id
            exclude: [defaulted, loss]
""",
}

SCHEMA_YML = """\
version: 2
models:
  - name: loan_features
    description: One row per loan, ready to train on.
    config:
      meta:
        pyml:
""" + "".join(LOAN_SPECS.values())

# Features every spec above trains on (the columns left after key, target and exclude).
FEATURES = ("region", "amount", "income", "term_months")
SPECS = ("default_risk", "loss_amount", "grade")


def write_loans_csv(path: Path, n: int = N_LOANS, seed: int = 7) -> None:
    """A deterministic loan book with real signal in every target."""
    rng = np.random.default_rng(seed)
    regions = np.array(["north", "south", "east", "west", ""])
    region = rng.choice(regions, size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    amount = np.round(rng.lognormal(9.0, 0.6, n), 2)
    income = np.round(rng.lognormal(10.6, 0.4, n), 2)
    term = rng.choice([12, 36, 60], size=n)
    region_risk = {"north": -0.3, "south": 0.4, "east": 0.0, "west": 0.2, "": 0.1}
    risk = (2.5 * amount / income + 0.02 * term
            + np.array([region_risk[r] for r in region]) + rng.normal(0, 0.5, n))
    defaulted = (rng.random(n) < 1 / (1 + np.exp(-(risk - 1.8) * 2))).astype(int)
    loss = np.round(np.where(defaulted == 1, amount * rng.uniform(0.3, 0.9, n),
                             amount * 0.01 * rng.random(n)), 2)
    cuts = np.quantile(risk, [1 / 3, 2 / 3])
    grade = np.where(risk < cuts[0], "A", np.where(risk < cuts[1], "B", "C"))
    income_text = [f"{v:.2f}" for v in income]
    for i in rng.choice(n, size=n // 50, replace=False):
        income_text[i] = ""  # some incomes unknown: NULL in DuckDB, missing in XGBoost
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["loan_id", "region", "amount", "income", "term_months", "grade",
                    "defaulted", "loss"])
        for i in range(n):
            w.writerow([i + 1, region[i], f"{amount[i]:.2f}", income_text[i], term[i],
                        grade[i], defaulted[i], f"{loss[i]:.2f}"])


def write_project(root: Path) -> None:
    """The lending project's files (no build)."""
    from .support import write_dbt_project  # support imports this module

    write_dbt_project(root, {"dbt_project.yml": DBT_PROJECT_YML, "profiles.yml": PROFILES_YML,
                             "models/loan_features.sql": LOAN_FEATURES_SQL,
                             "models/schema.yml": SCHEMA_YML})
    (root / "seeds").mkdir()
    write_loans_csv(root / "seeds" / "raw_loans.csv")


def dbt(root: Path, *args: str) -> None:
    """Run dbt on a project in a child process.

    Not in-process: dbt-duckdb keeps the database open in the calling process after the
    command ends, which would leave a WAL beside the file we copy and block read-only opens.
    """
    env = {**os.environ, DB_ENV: str(root / "loans.duckdb")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), *args, "--quiet", "--project-dir", str(root),
         "--profiles-dir", str(root)], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"dbt {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="session")
def built_loans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lending project after one `dbt build` (seed + model) for the whole session."""
    root = tmp_path_factory.mktemp("loans_built") / "loans"
    write_project(root)
    dbt(root, "build")
    assert not (root / "loans.duckdb.wal").exists()
    return root


@dataclass
class Loans:
    """A private, built copy of the lending project, with helpers to drive and inspect it."""

    dir: Path  # project folder (also holds profiles.yml)
    db: Path  # its DuckDB file

    def pyml(self, *args: str) -> Result:
        """Run `pyml ARGS --project-dir ... --profiles-dir ...` in-process."""
        argv = list(args)
        if argv and argv[0] not in ("--version", "--help"):
            argv += ["--project-dir", str(self.dir), "--profiles-dir", str(self.dir)]
        return CliRunner().invoke(cli, argv)

    def ok(self, *args: str) -> Result:
        """Run pyml and assert it succeeded."""
        result = self.pyml(*args)
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    def sql(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement on the project's database (connection closed at once)."""
        con = duckdb.connect(str(self.db))
        try:
            return con.execute(query, params or []).fetchall()
        finally:
            con.close()

    def df(self, query: str) -> Any:
        """A query's result as a pandas DataFrame."""
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.sql(query).df()
        finally:
            con.close()

    def replace_features(self, select: str) -> None:
        """Rebuild main.loan_features as `<select> from` its rows, as a new dbt run would."""
        self.sql("create table main.old_features as select * from main.loan_features")
        self.sql("drop table main.loan_features")
        self.sql(f"create table main.loan_features as {select} from main.old_features")
        self.sql("drop table main.old_features")

    def write_schema(self, text: str) -> None:
        """Replace models/schema.yml (newer than the manifest, so pyml re-parses)."""
        (self.dir / "models" / "schema.yml").write_text(text)

    def describe(self, model: str, text: str) -> None:
        """Give spec `model` the description `text` and a seed from it: a spec edit that
        keeps the booster, so the next `pyml train` stores another model (not the same one,
        which pyml would skip or never promote) that the auto policy compares and promotes
        when not worse."""
        path = self.dir / "models" / "schema.yml"
        entry = f"          - name: {model}\n"
        lines = path.read_text().splitlines(keepends=True)
        at = lines.index(entry) + 1
        while at < len(lines) and lines[at].startswith(("            description:",
                                                        "            params: {seed:")):
            del lines[at]
        # A description alone is no training input (it is read on every run); XGBoost's seed
        # is one, and without row or column sampling it leaves the trees as they were.
        seed = 1 + zlib.crc32(text.encode()) % 1_000_000
        lines[at:at] = [f"            description: {text}\n",
                        f"            params: {{seed: {seed}}}\n"]
        self.write_schema("".join(lines))


@pytest.fixture
def loans(built_loans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Loans:
    """A fresh copy of the built project for one test (copy2 keeps the manifest fresh)."""
    root = tmp_path / "loans"
    shutil.copytree(built_loans, root)
    monkeypatch.setenv(DB_ENV, str(root / "loans.duckdb"))
    return Loans(root, root / "loans.duckdb")


@pytest.fixture(scope="session")
def trained_loans(built_loans: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built project after one `pyml train` and `pyml score` of all three specs."""
    root = tmp_path_factory.mktemp("loans_trained") / "loans"
    shutil.copytree(built_loans, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DB_ENV, str(root / "loans.duckdb"))
        project = Loans(root, root / "loans.duckdb")
        project.ok("train")
        project.ok("score")
    return root


@pytest.fixture
def scored(trained_loans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Loans:
    """A fresh copy of the trained and scored project for one test."""
    root = tmp_path / "loans"
    shutil.copytree(trained_loans, root)
    monkeypatch.setenv(DB_ENV, str(root / "loans.duckdb"))
    return Loans(root, root / "loans.duckdb")
