"""Helpers shared by several test files (fixtures stay in conftest.py).

Test files import from here, from conftest.py and from sql_support.py, never from one
another: a test module is a list of tests, not a library.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import duckdb
import numpy as np
import pytest

from .conftest import SCHEMA_YML, Loans

# Where the default_risk spec of conftest's SCHEMA_YML lives, as error messages name it.
WHERE = "models/schema.yml: model 'default_risk' on model.loans.loan_features"
# The last line of the default_risk spec: specs() in the catalogue add keys after it.
EXCLUDE = "            exclude: [loss, grade]\n"
assert EXCLUDE in SCHEMA_YML

# Set by .ci/run: a test that needs a system package (chromium, PostgreSQL) fails instead of
# skipping when the package is missing, so CI cannot pass without running it.
REQUIRE_SYSTEM_TESTS = "PYML_REQUIRE_SYSTEM_TESTS"


# --- what "unchanged" means -------------------------------------------------------------------

def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def db_state(db: Path) -> Any:
    """Every table and view of the file: kind, comment, columns (with types and comments),
    row count and an order-free hash of the rows.

    A file DuckDB cannot open is compared byte for byte instead.
    """
    if not db.exists():
        return "missing"
    if db.is_dir():
        return "folder"
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error:
        return "sha256 " + hashlib.sha256(db.read_bytes()).hexdigest()
    try:
        state: dict[str, Any] = {}
        for schema, name, kind, comment in con.execute(
                "select schema_name, table_name, 'table', comment from duckdb_tables() "
                "where database_name = current_database() union all "
                "select schema_name, view_name, 'view', comment from duckdb_views() "
                "where database_name = current_database() and not internal "
                "order by 1, 2").fetchall():
            columns = con.execute(
                "select column_name, data_type, comment from duckdb_columns() where "
                "database_name = current_database() and schema_name = ? and table_name = ? "
                "order by column_index", [schema, name]).fetchall()
            rows: Any
            try:
                rows = con.execute(f"select count(*), coalesce(sum(hash(t)), 0)::varchar "
                                   f"from {_ident(schema)}.{_ident(name)} t").fetchone()
            except duckdb.Error as e:  # a view over something dropped still has a state
                rows = str(e).splitlines()[0]
            state[f"{schema}.{name}"] = (kind, comment, tuple(columns), rows)
        return state
    finally:
        con.close()


def files_state(root: Path, db: Path) -> dict[str, str]:
    """Project files by content.

    Not target/ and logs/ (dbt's own), nor the database and its WAL: `db_state` compares
    what they hold (a WAL left by a refused write is discarded by DuckDB's next open).
    """
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (rel.parts[0] in ("target", "logs") or not path.is_file()
                or path.name.startswith(db.name)):
            continue
        out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def state(project: Loans) -> tuple[Any, dict[str, str]]:
    """The database's tables and the project's files, to compare before and after."""
    return db_state(project.db), files_state(project.dir, project.db)


def error_line(output: str, exit_code: int) -> str:
    """The one `Error:` line of a failed command (which must also be its last line)."""
    assert exit_code == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], output
    return errors[0][len("Error: "):]


# --- dbt projects ----------------------------------------------------------------------------

def write_dbt_project(root: Path, files: Mapping[str, str]) -> None:
    """A dbt project's files under `root`: relative path -> text, folders made as
    needed (the DuckDB suite's loans project and the Spark suite's)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def hand_matrix(features: Sequence[Any], frame: Any) -> np.ndarray:
    """A version's float32 input for a pandas frame, built by hand, not by pyml's encoder
    (numbers as float64 -> float32, categories by their training code, else missing)."""
    cols = []
    for f in features:
        if f.kind == "numeric":
            cols.append(frame[f.name].astype("float64").to_numpy().astype(np.float32))
        else:
            code = {c: i for i, c in enumerate(f.categories)}
            cols.append(np.array([code.get(v, np.nan) if isinstance(v, str) else np.nan
                                  for v in frame[f.name]], dtype=np.float32))
    return np.column_stack(cols)


# --- processes and servers --------------------------------------------------------------------

def stop(proc: subprocess.Popen[Any]) -> None:
    """End a server a test started: SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port nothing listens on right now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def records(loans: Loans) -> list[dict[str, Any]]:
    """main.loan_features as JSON-ready records (NaN -> None), in loan_id order."""
    frame = loans.df("select * from main.loan_features order by loan_id")
    return [{k: (None if v != v else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]


def system_package_missing(reason: str) -> NoReturn:
    """Skip a test whose system package is not installed; in CI, fail it instead."""
    if os.environ.get(REQUIRE_SYSTEM_TESTS) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_SYSTEM_TESTS}=1 (set by .ci/run) says this test "
                    "must run: install the package")
    pytest.skip(reason)
