"""Concurrency on one DuckDB file, with real processes.

DuckDB lets one process at a time have a file open for writing, and while it has, no other
process can open the file at all, not even read-only: the open fails with `IO Error: Could
not set lock on file "<db>": Conflicting lock is held in <program> (PID <n>)`. A process
with the file open read-only keeps writers out the same way. pyml opens the file only for
the length of a command, retries a refused open with backoff up to --lock-timeout, and then
fails with one line naming the holder's PID. These tests run what follows from that: a BI
tool polling while `pyml score` rewrites, pyml's own readers behind a writer, two writers
at once, and `pyml serve` answering while score, train and promote write.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import pyml
from bench import crash
from pyml.errors import DatabaseLocked

from .conftest import DB_ENV, N_LOANS, Loans
from .support import free_port, records

PYML = str(Path(sys.executable).parent / "pyml")
LOCK_ERROR = re.compile(r'IO Error: Could not set lock on file "(?P<db>[^"]+)": Conflicting '
                        r"lock is held in (?P<program>.+) \(PID (?P<pid>\d+)\)")

# A BI tool: opens the file read-only for each poll, reads, closes; prints one JSON line a
# poll: ["ok", rows, checksum] or ["error", exception type, first line of its message].
BI_READER = """\
import json, os, sys, time, duckdb
db, stop = sys.argv[1], sys.argv[2]
while not os.path.exists(stop):
    try:
        con = duckdb.connect(db, read_only=True)
        try:
            rows, checksum = con.execute(
                "select count(*), sum(hash(loan_id, probability)) "
                "from ml.default_risk_predictions").fetchone()
        finally:
            con.close()
        print(json.dumps(["ok", rows, str(checksum)]), flush=True)
    except duckdb.Error as e:
        print(json.dumps(["error", type(e).__name__, str(e).splitlines()[0]]), flush=True)
    time.sleep(0.005)
"""

# Holds the file open (read-write, or read-only with argv[3] == "ro") for argv[2] seconds.
HOLDER = """\
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[3] == "ro")
con.execute("select 1").fetchall()
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""

# `pyml ARGS` with its imports done before it is told to go (one line on stdin), so that it
# reaches the database within milliseconds of the moment a test picks.
WARM_PYML = """\
import sys
import pyml.api, pyml.report.text, pyml.verbs.score, pyml.verbs.train
from dbt.config.renderer import ProfileRenderer
from pyml.cli import cli
print("ready", flush=True)
sys.stdin.readline()
cli(sys.argv[1:], prog_name="pyml")
"""



def lock_message(db: Path, pid: int) -> str:
    """pyml's one line when another process holds the file."""
    return (f"Error: database {db} is locked by another process (PID {pid}): close the other "
            "DuckDB client (dbt, a notebook, a BI tool, another pyml) and retry")


@dataclass
class Proc:
    """A child process whose stderr lines are recorded with the time they arrived."""

    popen: subprocess.Popen[str]
    started: float  # time.monotonic() at start
    lines: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, line)
    first: threading.Event = field(default_factory=threading.Event)  # a line arrived
    ended: float = 0.0  # time.monotonic() when it was seen to exit

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait(self, timeout: float = 120) -> int:
        code = self.popen.wait(timeout=timeout)
        self.ended = time.monotonic()
        self._reader.join(timeout=5)
        return code

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def start_reading(self) -> None:
        def read() -> None:
            assert self.popen.stderr is not None
            for line in self.popen.stderr:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.first.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()


def start(argv: list[str], db: Path, *, stdin: bool = False) -> Proc:
    """Start a child with the project's database in its environment."""
    env = crash.env_for(db)
    popen = subprocess.Popen(argv, env=env, text=True, stderr=subprocess.PIPE,
                             stdout=subprocess.PIPE,
                             stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
    proc = Proc(popen, time.monotonic())
    proc.start_reading()
    return proc


def pyml_argv(loans: Loans, *args: str) -> list[str]:
    return [*args, "--project-dir", str(loans.dir), "--profiles-dir", str(loans.dir)]


def start_pyml(loans: Loans, *args: str) -> Proc:
    """`pyml ARGS` through its console script."""
    return start([PYML, *pyml_argv(loans, *args)], loans.db)


def start_warm(loans: Loans, *args: str) -> Proc:
    """`pyml ARGS`, imported and waiting for go()."""
    proc = start([sys.executable, "-c", WARM_PYML, *pyml_argv(loans, *args)], loans.db,
                  stdin=True)
    assert proc.popen.stdout is not None
    assert proc.popen.stdout.readline().strip() == "ready", proc.text()
    return proc


def go(proc: Proc) -> None:
    assert proc.popen.stdin is not None
    proc.popen.stdin.write("go\n")
    proc.popen.stdin.close()


def hold(db: Path, seconds: float, mode: str = "rw") -> subprocess.Popen[str]:
    """A process holding the file open; returns once it has it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds), mode],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def checksum(loans: Loans) -> int:
    (value,), = loans.sql("select sum(hash(loan_id, probability)) "
                          "from ml.default_risk_predictions")
    return int(value)


def two_versions(loans: Loans) -> tuple[int, int]:
    """Train default_risk v2 on changed labels; the checksums of v1's and v2's predictions
    (the table is left with v2's)."""
    loans.sql("update main.loan_features set defaulted = not defaulted where loan_id % 5 = 0")
    loans.ok("train", "default_risk")
    loans.ok("score", "default_risk", "--version", "1")
    v1 = checksum(loans)
    loans.ok("score", "default_risk", "--version", "2")
    v2 = checksum(loans)
    assert v1 != v2
    return v1, v2


# --- a BI tool reading while pyml score rewrites ------------------------------------------

@pytest.mark.slow  # four scores under a polling reader; the next test keeps a fast check
def test_bi_reader_sees_the_old_or_the_new_table_or_a_lock_error(scored: Loans,
                                                                 tmp_path: Path) -> None:
    v1, v2 = two_versions(scored)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", BI_READER, str(scored.db), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    writers = []
    try:
        # Tiny batches keep each write ~0.4 s long, so the reader's opens collide with it.
        for version in (1, 2, 1, 2):
            writer = start_pyml(scored, "score", "default_risk", "--version", str(version),
                                "--batch-size", "10")
            assert writer.wait() == 0, writer.text()
            writers.append(writer)
            time.sleep(0.3)  # the reader gets the file between two runs
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=30)
    polls = [json.loads(line) for line in out.splitlines()]
    seen = [tuple(p[1:]) for p in polls if p[0] == "ok"]
    errors = [tuple(p[1:]) for p in polls if p[0] == "error"]
    assert set(seen) == {(N_LOANS, str(v1)), (N_LOANS, str(v2))}  # whole tables, both
    assert errors, "the reader never collided with a writer"
    pids = {w.pid for w in writers}
    for kind, message in errors:
        match = LOCK_ERROR.fullmatch(message.split(". See also")[0])
        assert kind == "IOException" and match, message
        assert match["db"] == str(scored.db) and int(match["pid"]) in pids
    assert crash.whole(scored.db, N_LOANS) == []


def test_a_bi_tool_holding_the_file_read_only_keeps_pyml_writers_out(scored: Loans) -> None:
    holder = hold(scored.db, 60, "ro")
    try:
        result = scored.pyml("score", "default_risk", "--lock-timeout", "0.5")
        assert (result.exit_code, result.output) == (1, lock_message(scored.db, holder.pid)
                                                     + "\n")
    finally:
        holder.kill()
        holder.wait()
    # Released within the timeout: pyml waits for it, then writes.
    holder = hold(scored.db, 1.0, "ro")
    started = time.monotonic()
    scored.ok("score", "default_risk", "--lock-timeout", "30")
    assert time.monotonic() - started >= 0.5  # it waited for the reader to close
    holder.wait()
    assert crash.whole(scored.db, N_LOANS) == []


# --- pyml's own readers behind a writer ---------------------------------------------------

@pytest.mark.parametrize("command", [("predictions", "default_risk"), ("models",),
                                     ("show", "default_risk")])
def test_pyml_readers_retry_then_name_the_writer(scored: Loans, command: tuple[str, ...]
                                                 ) -> None:
    holder = hold(scored.db, 60)
    try:
        started = time.monotonic()
        result = scored.pyml(*command, "--lock-timeout", "0.6")
        waited = time.monotonic() - started
        assert (result.exit_code, result.output) == (1, lock_message(scored.db, holder.pid)
                                                     + "\n")
        assert waited >= 0.6  # it retried until the timeout before naming the writer
    finally:
        holder.kill()
        holder.wait()
    # A writer that finishes within the timeout: the reader waits, then answers.
    holder = hold(scored.db, 1.0)
    started = time.monotonic()
    result = scored.ok(*command, "--lock-timeout", "30")
    assert time.monotonic() - started >= 0.5
    assert "default_risk" in result.output or "probability" in result.output
    holder.wait()


def test_load_model_retries_then_names_the_writer(scored: Loans) -> None:
    holder = hold(scored.db, 60)
    try:
        with pytest.raises(DatabaseLocked) as raised:
            pyml.load_model("default_risk", project_dir=scored.dir, profiles_dir=scored.dir,
                            lock_timeout=0.3)
        assert "Error: " + str(raised.value) == lock_message(scored.db, holder.pid)
    finally:
        holder.kill()
        holder.wait()
    holder = hold(scored.db, 1.0)
    model = pyml.load_model("default_risk", project_dir=scored.dir, profiles_dir=scored.dir,
                            lock_timeout=30)
    assert model.version == 1
    holder.wait()


class SleepClock:
    """A clock that moves only when its owner sleeps, recording each sleep.

    Put in place of pyml.engines.duckdb's `time`, it makes the lock wait's arithmetic exact
    whatever the machine's load, while the lock itself is a real process's.
    """

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_lock_wait_ends_at_the_timeout(scored: Loans, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    # The backoff used to sleep past the deadline: --lock-timeout 2 waited ~2.6 s.
    from pyml.engines import duckdb as engine

    clock = SleepClock()
    monkeypatch.setattr(engine, "time", clock)
    holder = hold(scored.db, 60)
    try:
        with pytest.raises(DatabaseLocked):
            engine.connect(scored.db, read_only=True, lock_timeout=2.0)
    finally:
        holder.kill()
        holder.wait()
    # Doubling waits from 50 ms, the last one cut to end exactly at the deadline, where one
    # more try is made before giving up.
    assert clock.sleeps == [0.05, 0.1, 0.2, 0.4, 0.8, pytest.approx(0.45)]
    assert clock.now == 102.0


# --- two writers at once ------------------------------------------------------------------

WRITERS = {
    # command: (the first writer, long enough to be caught holding the file)
    "score": ("score", "--batch-size", "10"),
    "train": ("train", "--force"),  # unchanged inputs would train nothing (and not wait)
}
FORCE = {"score": (), "train": ("--force",)}
# The fast suite runs the score pair; train takes the same lock the same way, slower.
COMMANDS = [pytest.param("score"), pytest.param("train", marks=pytest.mark.slow)]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_second_writer_waits_for_the_first(scored: Loans, command: str) -> None:
    versions = len(scored.sql("select * from ml.models"))
    second = start_warm(scored, command, "default_risk", *FORCE[command])
    first = start_pyml(scored, *WRITERS[command])
    assert first.first.wait(60), first.text()  # it has the file open now
    go(second)
    assert (first.wait(), second.wait()) == (0, 0), first.text() + second.text()
    if command == "score":
        # The second reached the database only after the first had finished with it. (train
        # lets go of the file while it fits, so two trains take turns: tests/test_bi.py.)
        assert second.lines[0][0] > first.lines[-1][0], (first.lines, second.lines)
    problems = crash.whole(scored.db, N_LOANS)
    assert problems == []
    added = len(scored.sql("select * from ml.models")) - versions
    assert added == (4 if command == "train" else 0)  # 3 models, then default_risk


# score only: a second train may find the file free while the first one fits, and succeed.
@pytest.mark.parametrize("command", ["score"])
def test_a_second_writer_without_patience_fails_naming_the_first(scored: Loans,
                                                                 command: str) -> None:
    before = {t: scored.sql(f"select count(*) from ml.{t}")[0][0]
              for t in ("models", "metrics", "default_risk_predictions")}
    second = start_warm(scored, command, "default_risk", *FORCE[command], "--lock-timeout",
                        "0")
    first = start_pyml(scored, *WRITERS[command])
    assert first.first.wait(60), first.text()
    go(second)
    assert second.wait() == 1
    assert first.wait() == 0, first.text()
    assert second.text() == lock_message(scored.db, first.pid)  # one line
    assert crash.whole(scored.db, N_LOANS) == []
    after = {t: scored.sql(f"select count(*) from ml.{t}")[0][0] for t in before}
    assert after == before


# --- pyml serve while pyml writes ---------------------------------------------------------

class Client:
    """Posts one record to the server in a loop, recording every answer."""

    def __init__(self, base: str, record: dict[str, Any]) -> None:
        self.base, self.record = base, record
        self.answers: list[tuple[float, int, int | None]] = []  # (time, status, version)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                r = http.post(f"{self.base}/models/default_risk/predict", json=[self.record])
                version = r.json().get("version") if r.status_code == 200 else None
                self.answers.append((time.monotonic(), r.status_code, version))
                time.sleep(0.01)  # a steady load, not one that takes the writers' CPU

    def during(self, proc: Proc) -> int:
        """Answers received while `proc` ran."""
        return sum(proc.started <= t <= proc.ended for t, _, _ in self.answers)


def served_version(base: str) -> int:
    return int(httpx.get(f"{base}/health", timeout=5).json()["models"]["default_risk"])


@pytest.mark.slow  # test_serve's refresh test is the fast suite's check of the same
def test_serve_answers_from_memory_while_pyml_writes(scored: Loans) -> None:
    """Score, train and promote succeed while a polling server answers every request.

    How long the writers take beside the server (its polls must not hold them up) is
    measured by `make bench-serve` (bench/bench_serve.py), not asserted here.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [PYML, *pyml_argv(scored, "serve", "--port", str(port), "--poll-seconds", "0.2")],
        env={**os.environ, DB_ENV: str(scored.db)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    client = Client(base, records(scored)[0])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert served_version(base) == 1
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        client.thread.start()
        scored.describe("default_risk", "v2")  # the same trees, another model: promoted
        for name, args in (("score", ("score", "default_risk")),
                           ("train", ("train", "default_risk")),
                           ("promote", ("promote", "default_risk", "--version", "1"))):
            proc = start_pyml(scored, *args)  # the default --lock-timeout
            assert proc.wait() == 0, proc.text()
            assert client.during(proc) > 0, f"no answer while pyml {name} ran"
            if name == "train":
                # v2 (same rows and trees, a new description: not worse) was promoted by
                # train: the server takes it, and the client gets an answer from it before
                # the promote puts v1 back (on a loaded machine the client's thread may not
                # run in that window otherwise: CI found it so).
                wait_for_version(base, 2)
                deadline = time.monotonic() + 20
                while 2 not in [v for _, _, v in list(client.answers)]:
                    assert time.monotonic() < deadline, "no answer from v2 in 20 s"
                    time.sleep(0.05)
        wait_for_version(base, 1)
        client.stop.set()
        client.thread.join(timeout=15)
    finally:
        client.stop.set()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    statuses = {status for _, status, _ in client.answers}
    assert statuses == {200}
    versions = [v for _, _, v in client.answers]
    assert versions[0] == 1 and 2 in versions and versions[-1] == 1
    assert crash.whole(scored.db, N_LOANS) == []


def wait_for_version(base: str, version: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while served_version(base) != version:
        assert time.monotonic() < deadline, f"the server did not switch to v{version}"
        time.sleep(0.05)
