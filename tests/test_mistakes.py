"""Issue 19 fixes for mistakes at the edges: numbers in other scripts' digits, click's exit
code 2 for usage errors, and a request body that stalls half way.

Each test failed before its fix: `?explain=²` was a 500 with a traceback in the server log
(`str.isdigit` accepts '²', `int()` refuses it) and `?explain=５` explained 5 features;
`--version ２`, `--limit ５` and `--max-memory ２GB` were read as 2, 5 and 2 GB; a bad option
value exited with click's 2, which is `pyml drift`'s "drift found"; and `pyml serve` held a
request whose body stopped half way open forever.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyml.dbt.spec import parse_size
from pyml.errors import SpecError
from pyml.serve.app import create_app

from .conftest import DB_ENV, Loans
from .support import error_line, free_port, records, state, stop

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

PYML = str(Path(sys.executable).parent / "pyml")


# --- digits that are not ASCII ----------------------------------------------------------------

@pytest.mark.parametrize("value", ["²", "５", "٣", "1²", "-1", "1.0", " 1", "1001"])
def test_explain_parameter_takes_ascii_digits_only(scored: Loans, value: str) -> None:
    with TestClient(create_app(scored.db, poll_seconds=3600)) as client:
        response = client.post("/models/default_risk/predict", params={"explain": value},
                               json=[records(scored)[0]])
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("query parameter 'explain' must be an integer from 0 to 1000, "
                             "got "), detail
    assert "Traceback" not in response.text


def test_explain_parameter_in_ascii_still_explains(scored: Loans) -> None:
    with TestClient(create_app(scored.db, poll_seconds=3600)) as client:
        response = client.post("/models/default_risk/predict?explain=2",
                               json=[records(scored)[0]])
    assert response.status_code == 200
    assert len(response.json()["predictions"][0]["explanation"]["contributions"]) == 2


@pytest.mark.parametrize(("argv", "option"), [
    (("score", "grade", "--version", "２"), "--version"),
    (("predictions", "grade", "--limit", "５"), "--limit"),
    (("models", "--lock-timeout", "１"), "--lock-timeout"),
])
def test_cli_numbers_take_ascii_digits_only(scored: Loans, argv: tuple[str, ...],
                                            option: str) -> None:
    before = state(scored)
    result = scored.pyml(*argv)
    line = error_line(result.output, result.exit_code)
    assert line.startswith(f"Invalid value for '{option}'"), line
    assert "is not a number written in ASCII digits" in line, line
    assert state(scored) == before


def test_memory_sizes_take_ascii_digits_only() -> None:
    assert parse_size("2GB", "memory budget") == 2 * 10**9
    with pytest.raises(SpecError, match="memory budget must be a size such as 2GB"):
        parse_size("２GB", "memory budget")


# --- exit codes: 1 for every mistake, 2 for drift alone ---------------------------------------

@pytest.mark.parametrize("argv", [
    ("predictions", "grade", "--limit", "0"),
    ("models", "--lock-timeout", "nan"),
    ("score", "--batch-size", "-3"),
    ("train", "--no-such-option"),
    ("no-such-command",),
    ("show",),  # MODEL missing
])
def test_usage_errors_exit_1(scored: Loans, argv: tuple[str, ...]) -> None:
    before = state(scored)
    result = scored.pyml(*argv)
    error_line(result.output, result.exit_code)  # exit 1, one Error: line, last
    assert state(scored) == before


def test_usage_errors_exit_1_from_the_console_script(scored: Loans) -> None:
    done = subprocess.run([PYML, "predictions", "grade", "--limit", "0"], capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].startswith("Error: Invalid value for '--limit'")


def test_help_exits_0(scored: Loans) -> None:
    for argv in (("--help",), ("score", "--help")):
        assert scored.pyml(*argv).exit_code == 0
    bare = subprocess.run([PYML], capture_output=True, text=True, check=False, timeout=60)
    assert bare.returncode == 0 and "Commands:" in bare.stdout + bare.stderr


def test_drift_keeps_2(scored: Loans) -> None:
    scored.sql("update main.loan_features set amount = amount * 10")
    result = scored.pyml("drift", "default_risk")
    assert result.exit_code == 2, result.output


# --- a request body that stalls ---------------------------------------------------------------

@pytest.fixture
def server(scored: Loans) -> Iterator[int]:
    """A real `pyml serve --body-timeout 1` on 127.0.0.1; yields its port."""
    port = free_port()
    proc = subprocess.Popen(
        [PYML, "serve", "--port", str(port), "--poll-seconds", "3600", "--body-timeout", "1",
         "--project-dir", str(scored.dir), "--profiles-dir", str(scored.dir)],
        env={**os.environ, DB_ENV: str(scored.db)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "pyml serve did not come up"
                time.sleep(0.2)
        yield port
    finally:
        stop(proc)


def test_a_stalled_body_gets_408_and_the_connection_closes(server: int) -> None:
    body = b'[{"amount": 1000.0, "income": 50000.0}]'
    with socket.create_connection(("127.0.0.1", server), timeout=8) as sock:
        sock.sendall(b"POST /models/default_risk/predict HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        started = time.monotonic()
        received = b""
        while True:  # read until the server closes (a hang ends at the socket timeout)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                pytest.fail(f"no answer {time.monotonic() - started:.0f}s after the stall: "
                            f"{received!r}")
            if not chunk:
                break
            received += chunk
    assert time.monotonic() - started < 6
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received
    assert b"connection: close" in head.lower()
    assert payload == (b'{"detail":"the request body did not arrive within 1 seconds '
                       b'(pyml serve --body-timeout)"}')
    # The server still answers others.
    response = httpx.post(f"http://127.0.0.1:{server}/models/default_risk/predict",
                          content=body, headers={"content-type": "application/json"},
                          timeout=5)
    assert response.status_code == 200


def test_dbts_environment_variables_pick_the_target_profile_and_manifest(
        scored: Loans, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """dbt reads DBT_TARGET, DBT_PROFILE and DBT_TARGET_PATH; pyml ignored them, so
    `DBT_TARGET=prod pyml train` trained on dev, and with DBT_TARGET_PATH set pyml read the
    old manifest in target/ and trained a spec edit it never saw (an audit)."""
    profiles = scored.dir / "profiles.yml"
    profiles.write_text(profiles.read_text() + f"""\
    prod:
      type: duckdb
      path: "{tmp_path / 'prod.duckdb'}"
      threads: 1
""")
    monkeypatch.setenv("DBT_TARGET", "prod")
    result = scored.pyml("models")
    assert error_line(result.output, result.exit_code).startswith(
        f"database file {tmp_path / 'prod.duckdb'} does not exist"), result.output
    monkeypatch.setenv("DBT_TARGET", "nope")
    result = scored.pyml("models")
    assert "target 'nope' is not in profile 'loans'" in error_line(result.output,
                                                                  result.exit_code)
    monkeypatch.delenv("DBT_TARGET")
    monkeypatch.setenv("DBT_PROFILE", "other")
    result = scored.pyml("models")
    assert error_line(result.output, result.exit_code) == (
        f"profile 'other' (named by DBT_PROFILE) is not in {profiles}: add it or fix the "
        "variable")
    monkeypatch.delenv("DBT_PROFILE")
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "elsewhere"))
    schema = scored.dir / "models" / "schema.yml"
    schema.write_text(schema.read_text().replace("exclude: [loss, grade]\n",
                                                 "exclude: [loss, grade]\n"
                                                 "            threshold: 0.35\n", 1))
    result = scored.ok("sql", "default_risk")
    assert "the YAML's threshold 0.35 differs from v1's 0.5" in result.stderr, result.stderr
    assert (tmp_path / "elsewhere" / "manifest.json").exists()
