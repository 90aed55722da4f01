"""`pyml sql --dialect postgres` runs in a real PostgreSQL server and scores like `pyml score`.

The test starts its own server (initdb + pg_ctl in a temp folder, a free port, Unix socket
only, as the `postgres` user when run as root) and talks to it with psql. It skips, saying
why, only when PostgreSQL is not installed (`apt-get install postgresql`; .ci/run does it),
and in CI (PYML_REQUIRE_SYSTEM_TESTS=1) it fails instead.
"""

from __future__ import annotations

import glob
import io
import math
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from pyml.data.encode import Feature
from pyml.engines.duckdb import quote
from pyml.sqlgen.compile import scoring_sql
from tests.sql_support import (
    make_table,
    max_errors,
    random_booster,
    reference,
    stored_model,
    train,
)
from tests.support import system_package_missing

TOL = 0.0  # bit for bit: REAL arithmetic is float32, expf is computed as glibc does
PG_TYPES = {"BIGINT": "bigint", "INTEGER": "integer", "DOUBLE": "double precision",
            "VARCHAR": "text", "BOOLEAN": "boolean"}


def _bindir() -> Path | None:
    """Where initdb, pg_ctl and psql live (Debian keeps them out of PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.insert(0, str(Path(found).resolve().parent))
    for folder in candidates:
        if all((Path(folder) / tool).exists() for tool in ("initdb", "pg_ctl", "psql")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    """A running throwaway server."""

    bindir: Path  # initdb, pg_ctl, psql
    socket_dir: Path  # where its Unix socket is
    port: int  # its port (names the socket)

    def psql(self, sql: str) -> str:
        """Run SQL (from stdin, so a large query fits) and return what psql printed."""
        done = subprocess.run(
            [str(self.bindir / "psql"), "-h", str(self.socket_dir), "-p", str(self.port),
             "-U", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            input=sql, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def load(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        """Copy a DuckDB table into schema main (COPY text format: \\N is NULL)."""
        cols = con.execute(f"describe {table}").fetchall()
        rows = io.StringIO()
        for row in con.execute(f"select * from {table}").fetchall():
            rows.write("\t".join(_copy_text(v) for v in row) + "\n")
        ddl = ", ".join(f"{quote(c[0])} {PG_TYPES[c[1]]}" for c in cols)
        self.psql(f"drop table if exists main.{table}; create table main.{table} ({ddl});\n"
                  f"copy main.{table} from stdin;\n{rows.getvalue()}\\.\n")

    def query(self, sql: str, key: Sequence[str] = ("id",)) -> pd.DataFrame:
        """A query's result, ordered by key; floats parsed exactly."""
        out = self.psql(f"copy ({sql.strip().rstrip(';')}) to stdout with (format csv, header);")
        # pandas 3 parses floats exactly (shortest round-trip text from PostgreSQL 12+).
        frame = pd.read_csv(io.StringIO(out), keep_default_na=False, na_values=[""])
        return frame.sort_values(list(key)).reset_index(drop=True)


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    text = str(value)
    for raw, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        text = text.replace(raw, escaped)
    return text


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bindir = _bindir()
    if bindir is None:
        system_package_missing("PostgreSQL is not installed here (Debian: apt-get install "
                               "postgresql; .ci/run installs it): the PostgreSQL parity of "
                               "`pyml sql --dialect postgres` is not checked")
    root = Path(tempfile.mkdtemp(prefix="pyml_pg_"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}"

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses='' -c fsync=off", "start")
        server = Postgres(bindir, root, port)
        server.psql("create schema main;")
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def rows(postgres: Postgres) -> tuple[duckdb.DuckDBPyConnection, list[Feature]]:
    """100,000 rows (NULLs, NaN, unseen and awkward categories) in DuckDB and PostgreSQL."""
    con = duckdb.connect()
    features = make_table(con, 100_000)
    postgres.load(con, "features")
    return con, features


# Multiclass runs one tree sum per class in PostgreSQL (~20 s here): kept out of `make test`,
# whose sqlgen tests check the same multiclass SQL on DuckDB and SQLite.
@pytest.mark.parametrize("task", ["binary", pytest.param("multiclass", marks=pytest.mark.slow),
                                  "regression"])
def test_postgres_matches_pyml_score_on_100k_rows(
        task: str, postgres: Postgres,
        rows: tuple[duckdb.DuckDBPyConnection, list[Feature]]) -> None:
    con, features = rows
    stored = train(con, task, features, rounds=30, depth=6)
    got = postgres.query(scoring_sql(stored, dialect="postgres"))
    errors = max_errors(reference(con, stored), got, task)
    assert max(errors.values()) <= TOL, errors
    if task == "regression":
        assert errors["prediction"] == 0.0  # REAL sums are XGBoost's float32 sums


def test_postgres_random_forest_with_odd_names(postgres: Postgres) -> None:
    con = duckdb.connect()
    features = make_table(con, 5000, table="odd")
    con.execute('alter table odd rename column id to "Loan ""ID"""')
    booster = random_booster(np.random.default_rng(11), "multiclass", features, trees=24,
                             depth=5, thresholds=[-1.0, 0.0, 0.3, 12.5, 20.0], parallel=2)
    stored = stored_model(booster, "multiclass", features, table="odd", key=('Loan "ID"',))
    postgres.load(con, "odd")
    got = postgres.query(scoring_sql(stored, dialect="postgres"), ['Loan "ID"'])
    errors = max_errors(reference(con, stored, "odd"), got, "multiclass")
    assert max(errors.values()) <= TOL, errors
