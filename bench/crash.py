"""Crash safety: SIGKILL `pyml score`, `train`, `explain` and `profile` at random moments and
at exact ones, then check the file.

    python -m bench.crash --runs 50 [--rows 200000] [--seed 0] [--commands score,train,explain]

Each run copies a known base state of the lending test project's DuckDB file, starts a real
`pyml score`, `train`, `explain` or `profile` process on it, sends SIGKILL after a seeded
random delay drawn over the window of the command's measured clean run in which it works on
the database, and then checks, in this process:

* the file opens read-write (DuckDB replays the WAL the killed process left);
* ml.<model>_predictions is complete and is either the previous table or the new one: its
  row count equals the scored relation's and its checksum, sum(hash(key, probability)),
  equals one of the two checksums measured beforehand from clean runs (the relation's rows
  change between the two, so the two differ); ml.<model>_explanations and
  ml.profile_<relation> likewise (rows and checksum), and a table the command does not
  write is unchanged;
* the registry holds no half-written version: every ml.models row has its ml.metrics rows
  and a booster that XGBoost loads, no per-version table (metrics, importances, evaluation
  tables, snapshots, events) has rows of a version that ml.models lacks, each model has one
  champion, and no pyml temporary table is left in any schema;
* the next `pyml score` succeeds and leaves a complete table scored by the champion (after
  `explain` / `profile`: the next run of the same command leaves the new table).

Where the kill landed is read from the killed process's own log lines (stderr). The tests
(tests/test_crash.py) run a few kills through the same functions.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import xgboost as xgb

MODEL = "default_risk"  # the lending project's binary model
KEY = "loan_id"
RELATION = "main.loan_features"
PREDICTIONS = f"ml.{MODEL}_predictions"
EXPLANATIONS = f"ml.{MODEL}_explanations"
PROFILE = "ml.profile_loan_features"
DB_ENV = "LOANS_DB"  # the lending project's profile reads the file path from it
DB_NAME = "loans.duckdb"
COMMANDS = ("score", "train")  # what random kills alternate between by default
# Commands whose base state and clean runs prepare() measures (the injected kills use all).
PREPARED = ("score", "train", "explain", "profile")
# Besides the predictions: table -> (the command that writes it, rows + a checksum that
# tells its old and new states apart, without the run's timestamp).
TABLES = {
    EXPLANATIONS: ("explain", f"select count(*), coalesce(sum(hash({KEY}, rank, feature, "
                              f"contribution)), 0) from {EXPLANATIONS}"),
    # DuckDB's parallel sums make mean and std differ between runs in the last bits.
    PROFILE: ("profile", "select count(*), coalesce(sum(hash(column_name, null_rate, "
                         "distinct_count, round(mean, 6), round(std, 6), min_value, "
                         f"max_value)), 0) from {PROFILE}"),
}
# A command that has not finished this many times its clean duration is hung: a failure.
HANG_FACTOR = 10.0
BEFORE_FIRST_LINE = 0.3  # s: kill window before a command's first log line
AFTER_LAST_LINE = 0.15  # s: and after its last
ROWS = 500_000  # rows of the bench's relation (the tests use the project's 3,000)
BENCH_ROUNDS = 60  # boosting rounds of the bench's model (its grown rows never stop early)
# Where a kill can land: phase_of's names for random kills, INJECTED's for exact ones.
PHASES = ("opening", "reading", "training", "evaluating", "version txn", "before commit",
          "after commit", "writing", "before swap", "after swap", "closing", "finished")
_ROUND = re.compile(r" round (\d+)/(\d+)")  # train's progress line


@dataclass(frozen=True)
class Clean:
    """A clean run of one command on the base state: how long it took and when it logged."""

    seconds: float  # wall time from start to exit
    lines: tuple[tuple[float, str], ...]  # (seconds since start, stderr line)

    def window(self) -> tuple[float, float]:
        """Kill offsets, in seconds from the run's first log line.

        Before its first line a pyml command only imports Python and reads the dbt project,
        and on a busy machine that part's length varies by seconds, so kills are placed
        relative to the first line: from BEFORE_FIRST_LINE s before it (connecting, loading
        the model, checking the relation) to AFTER_LAST_LINE s after the last one (closing
        the database, which checkpoints the WAL), through reading, training, writing and
        swapping in between.
        """
        if not self.lines:
            return 0.0, self.seconds
        span = self.lines[-1][0] - self.lines[0][0]
        return -BEFORE_FIRST_LINE, span + AFTER_LAST_LINE


@dataclass(frozen=True)
class Base:
    """The base state every run starts from, and what a clean run makes of it."""

    project: Path  # the dbt project (pyml reads its manifest; the DB path comes from env)
    db: Path  # DuckDB file in the base state: closed, no WAL
    rows: int  # rows of the scored relation
    versions: int  # ml.models rows of MODEL in the base state
    old: int  # predictions checksum in the base state
    new: int  # predictions checksum after a clean `pyml score` of the base state
    score_args: tuple[str, ...] = ()  # extra `pyml score` / `explain` arguments (--batch-size)
    in_process: bool = False  # run set-up and the after-kill `pyml score` in this process
    clean: dict[str, Clean] = field(default_factory=dict)  # command -> its clean run
    # TABLES' (rows, checksum) in the base state, and after a clean run of their command.
    old_tables: dict[str, tuple[int, int]] = field(default_factory=dict)
    new_tables: dict[str, tuple[int, int]] = field(default_factory=dict)

    def args(self, command: str) -> tuple[str, ...]:
        """The pyml arguments of a harness command."""
        streams = command in ("score", "explain")
        return (command, MODEL, *(self.score_args if streams else ()))


@dataclass(frozen=True)
class Run:
    """One killed (or, if it was faster than the delay, finished) command and its checks."""

    command: str  # score | train | explain | profile
    offset: float  # planned kill time, seconds from the first log line
    delay: float  # seconds after start when SIGKILL was sent (or the process ended)
    killed: bool  # the process was still running and died of SIGKILL
    phase: str  # where the kill landed, from the process's last log line
    wal: bool  # a WAL was left beside the file (replayed on the next open)
    outcome: str  # old | new: which complete state the file holds ("" if broken)
    problems: tuple[str, ...]  # every failed check; empty when the run survived

    @property
    def survived(self) -> bool:
        """All checks passed."""
        return not self.problems


def env_for(db: Path) -> dict[str, str]:
    """The environment a pyml child process runs with."""
    return {**os.environ, DB_ENV: str(db), "PYTHONUNBUFFERED": "1",
            # XGBoost's OpenMP threads otherwise spin while they wait; on a busy machine that
            # multiplies training time.
            "OMP_WAIT_POLICY": "PASSIVE",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}


def pyml_argv(project: Path, *args: str) -> list[str]:
    """The `pyml` console script of this interpreter's environment, on `project`."""
    return [str(Path(sys.executable).parent / "pyml"), *args, "--project-dir", str(project),
            "--profiles-dir", str(project)]


def run_pyml(project: Path, db: Path, *args: str, in_process: bool = False,
             timeout: float = 600) -> tuple[int, str]:
    """Run pyml to completion on `db`; returns (exit code, output).

    In a child process by default; `in_process` runs the same click command here (what the
    tests' CliRunner does), which saves the seconds a fresh interpreter spends importing.
    """
    if not in_process:
        done = subprocess.run(pyml_argv(project, *args), env=env_for(db), capture_output=True,
                              text=True, timeout=timeout, check=False)
        return done.returncode, done.stdout + done.stderr
    from click.testing import CliRunner

    from pyml.cli import cli

    before = os.environ.get(DB_ENV)
    os.environ[DB_ENV] = str(db)
    try:
        result = CliRunner().invoke(cli, pyml_argv(project, *args)[1:])
    finally:
        if before is None:
            del os.environ[DB_ENV]
        else:
            os.environ[DB_ENV] = before
    return result.exit_code, result.output


def timed_run(project: Path, db: Path, *args: str) -> Clean:
    """Run pyml to completion in a child process, recording when each stderr line came."""
    started = time.monotonic()
    proc = subprocess.Popen(pyml_argv(project, *args), env=env_for(db), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    lines = [(time.monotonic() - started, line.rstrip()) for line in proc.stderr]
    code = proc.wait()
    seconds = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"pyml {' '.join(args)} failed ({code}):\n"
                           + "\n".join(text for _, text in lines))
    return Clean(seconds, tuple(lines))


def predictions_state(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(rows, sum(hash(key, probability))) of the predictions table."""
    rows, checksum = con.execute(
        f"select count(*), coalesce(sum(hash({KEY}, probability)), 0) from {PREDICTIONS}"
    ).fetchall()[0]
    return int(rows), int(checksum)


def table_state(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int]:
    """(rows, checksum) of one of TABLES."""
    (rows, checksum), = con.execute(TABLES[table][1]).fetchall()
    return int(rows), int(checksum)


def copy_db(src: Path, dst: Path) -> None:
    """Copy a closed DuckDB file to `dst`, first removing any file or WAL already there.

    Public: tests/test_crash.py checks copies of the crash base with it.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".wal"):
        target = dst.with_name(dst.name + suffix)
        if target.exists():
            target.unlink()
    shutil.copy2(src, dst)


def grow(db: Path, rows: int) -> None:
    """Repeat the relation's rows under new keys until it has about `rows` rows."""
    con = duckdb.connect(str(db))
    try:
        (n, top), = con.execute(f"select count(*), max({KEY}) from {RELATION}").fetchall()
        copies = max(1, -(-rows // int(n)))
        if copies > 1:
            con.execute(f"create table main.seed_rows as select * from {RELATION}")
            con.execute(f"insert into {RELATION} select s.* replace ({KEY} + r.k * ? as {KEY}) "
                        "from main.seed_rows s, range(1, ?) as r(k)", [int(top), copies])
            con.execute("drop table main.seed_rows")
    finally:
        con.close()


def cap_rounds(project: Path, rounds: int) -> None:
    """Give MODEL's spec a fixed number of boosting rounds (grown rows are repeats, so
    early stopping would never stop it)."""
    schema = project / "models" / "schema.yml"
    text = schema.read_text()
    anchor = "            exclude: [loss, grade]\n"
    if anchor not in text:
        raise RuntimeError(f"{schema}: cannot find the {MODEL} spec to cap its rounds")
    schema.write_text(text.replace(anchor, anchor + f"            num_boost_round: {rounds}\n"
                                   "            early_stopping_rounds: null\n", 1))


def prepare(built: Path, work: Path, *, rows: int | None = None,
            score_args: tuple[str, ...] = (), in_process: bool = False,
            commands: tuple[str, ...] = PREPARED) -> Base:
    """From a built lending project, make the base state and measure clean runs of it.

    Base state: version 1 trained, scored, explained and profiled; then the relation's
    amounts change (as a new dbt run would change them), so a new `pyml score` writes
    different probabilities (and `explain` / `profile` different tables). `rows` grows the
    relation (repeating its rows under new keys) and caps the rounds. `commands`: those
    whose clean runs are measured (only those can be killed).
    """
    project = work / "project"
    shutil.copytree(built, project)
    db = project / DB_NAME
    if rows:
        grow(db, rows)
        cap_rounds(project, BENCH_ROUNDS)
    for args in (("train", MODEL), ("score", MODEL), ("explain", MODEL), ("profile", MODEL)):
        code, output = run_pyml(project, db, *args, in_process=in_process)
        if code != 0:
            raise RuntimeError(f"pyml {' '.join(args)} failed:\n{output}")
    con = duckdb.connect(str(db))
    try:
        _, old = predictions_state(con)
        old_tables = {t: table_state(con, t) for t in TABLES}
        con.execute(f"update {RELATION} set amount = amount * 1.5 where {KEY} % 3 = 0")
        (n,), = con.execute(f"select count(*) from {RELATION}").fetchall()
        (versions,), = con.execute("select count(*) from ml.models where model_name = ?",
                                   [MODEL]).fetchall()
    finally:
        con.close()
    base = Base(project, db, int(n), int(versions), old, 0, score_args, in_process,
                old_tables=old_tables)
    clean: dict[str, Clean] = {}
    new_tables: dict[str, tuple[int, int]] = {}
    new = 0
    for command in commands:
        scratch = work / "clean" / command / DB_NAME
        copy_db(db, scratch)
        clean[command] = timed_run(project, scratch, *base.args(command))
        _, problems = check(scratch, base, command, clean_run=True)
        if problems:
            raise RuntimeError(f"clean pyml {command} fails the checks: {problems}")
        con = duckdb.connect(str(scratch), read_only=True)
        try:
            if command == "score":
                _, new = predictions_state(con)
            new_tables.update({t: table_state(con, t) for t, (c, _) in TABLES.items()
                               if c == command})
        finally:
            con.close()
    if new == old and "score" in commands:
        raise RuntimeError("the old and new predictions have the same checksum")
    same = [t for t, state in new_tables.items() if state == old_tables[t]]
    if same:
        raise RuntimeError(f"the old and new {same[0]} are the same")
    return Base(project, db, int(n), int(versions), old, new, score_args, in_process, clean,
                old_tables, new_tables)


def _per_version_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "select table_name from information_schema.columns where table_schema = 'ml' "
        "and column_name in ('model_name', 'version') group by table_name "
        "having count(*) = 2 order by table_name").fetchall()
    return [str(t) for (t,) in rows if t != "models"]


def check(db: Path, base: Base, command: str, clean_run: bool = False) -> tuple[str, list[str]]:
    """Open the file after a run and check it; returns (old | new, problems)."""
    problems: list[str] = []
    try:
        con = duckdb.connect(str(db))  # read-write: replays the WAL if there is one
    except duckdb.Error as e:
        return "", [f"the file does not open: {e}"]
    try:
        outcome = _check_predictions(con, base, command, problems)
        for table, (writer, _) in TABLES.items():
            if table in base.old_tables:
                state = _check_table(con, base, table, writer == command, problems)
                outcome = state if writer == command else outcome
        versions = check_registry(con, problems)
        if command == "train":
            count = versions.get(MODEL, 0)
            if count == base.versions:
                outcome = "old"
            elif count == base.versions + 1:
                outcome = "new"
            else:
                problems.append(f"{count} versions of {MODEL}; expected {base.versions} or "
                                f"{base.versions + 1}")
        check_no_temp_tables(con, problems)
    except duckdb.Error as e:
        problems.append(f"query failed: {e}")
        outcome = ""
    finally:
        con.close()
    if clean_run and outcome != "new":
        problems.append(f"a clean run left the {outcome or 'broken'} state")
    return (outcome if not problems else ""), problems


def whole(db: Path, rows: int) -> list[str]:
    """The checks that need no known-good checksum (for runs that end on their own): the
    file opens read-write, the predictions table has `rows` rows, every version is whole,
    no temporary table is left. Returns the problems found."""
    problems: list[str] = []
    try:
        con = duckdb.connect(str(db))
    except duckdb.Error as e:
        return [f"the file does not open: {e}"]
    try:
        found, _ = predictions_state(con)
        if found != rows:
            problems.append(f"{PREDICTIONS} has {found} rows; expected {rows}")
        check_registry(con, problems)
        check_no_temp_tables(con, problems)
    finally:
        con.close()
    return problems


def _check_predictions(con: duckdb.DuckDBPyConnection, base: Base, command: str,
                       problems: list[str]) -> str:
    rows, checksum = predictions_state(con)
    if rows != base.rows:
        problems.append(f"{PREDICTIONS} has {rows} rows; {RELATION} has {base.rows}")
    if command != "score":  # only scoring touches the predictions
        if checksum != base.old:
            problems.append(f"{PREDICTIONS} changed during pyml {command}")
        return "old"
    if checksum == base.old:
        return "old"
    if checksum == base.new or base.new == 0:  # base.new == 0: measuring the clean run
        return "new"
    problems.append(f"{PREDICTIONS} is neither the old nor the new table "
                    f"(checksum {checksum})")
    return ""


def _check_table(con: duckdb.DuckDBPyConnection, base: Base, table: str, written: bool,
                 problems: list[str]) -> str:
    """One of TABLES is its old state, or (if the command writes it) its new one."""
    state = table_state(con, table)
    old, new = base.old_tables[table], base.new_tables.get(table)
    if state == old:
        return "old"
    if not written:
        problems.append(f"{table} changed during a command that does not write it")
    elif new is None or state == new:  # None: measuring the clean run
        return "new"
    else:
        problems.append(f"{table} is neither the old nor the new table "
                        f"({state[0]} rows, checksum {state[1]})")
    return ""


def check_registry(con: duckdb.DuckDBPyConnection, problems: list[str]) -> dict[str, int]:
    """Checks every version is whole; returns model name -> number of versions."""
    models = con.execute("select model_name, version, num_trees, booster_format, booster, "
                         "status from ml.models order by 1, 2").fetchall()
    counts: Counter[str] = Counter()
    champions: Counter[str] = Counter()
    for name, version, trees, fmt, blob, status in models:
        counts[name] += 1
        champions[name] += status == "champion"
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(blob))
        except xgb.core.XGBoostError as e:
            problems.append(f"{name} v{version}: booster ({fmt}) does not load: {e}")
            continue
        if booster.num_boosted_rounds() != trees:
            problems.append(f"{name} v{version}: booster has {booster.num_boosted_rounds()} "
                            f"rounds, ml.models says {trees}")
    missing = con.execute(
        "select m.model_name, m.version from ml.models m anti join ml.metrics x "
        "on x.model_name = m.model_name and x.version = m.version").fetchall()
    problems.extend(f"{n} v{v} has no ml.metrics rows" for n, v in missing)
    for table in _per_version_tables(con):
        orphans = con.execute(
            f'select distinct x.model_name, x.version from ml."{table}" x anti join ml.models '
            "m on m.model_name = x.model_name and m.version = x.version").fetchall()
        problems.extend(f"ml.{table} has rows of {n} v{v}, which ml.models lacks"
                        for n, v in orphans)
    problems.extend(f"{n} has {c} champions" for n, c in champions.items() if c != 1)
    return dict(counts)


def check_no_temp_tables(con: duckdb.DuckDBPyConnection, problems: list[str]) -> None:
    left = con.execute("select table_schema, table_name from information_schema.tables "
                       "where starts_with(table_name, '__pyml')").fetchall()
    problems.extend(f"temporary table {s}.{t} left behind" for s, t in left)


def _recover(db: Path, base: Base, problems: list[str], command: str = "score") -> None:
    """The next `pyml score` must succeed and leave a whole table by the champion (after a
    killed explain / profile: the next run of it must leave the new table)."""
    if command in ("explain", "profile"):
        _recover_table(db, base, problems, command)
        return
    code, output = run_pyml(base.project, db, *base.args("score"), in_process=base.in_process)
    if code != 0:
        last = output.strip().splitlines()[-1:] or [""]
        problems.append(f"the next pyml score failed ({code}): {last[0]}")
        return
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows, _ = predictions_state(con)
        (version,), = con.execute(f"select distinct model_version from {PREDICTIONS}"
                                  ).fetchall()
        (champion,), = con.execute("select version from ml.models where model_name = ? "
                                   "and status = 'champion'", [MODEL]).fetchall()
        after: list[str] = []
        check_no_temp_tables(con, after)
    finally:
        con.close()
    if rows != base.rows:
        problems.append(f"after the next pyml score: {rows} rows, expected {base.rows}")
    if version != champion:
        problems.append(f"the next pyml score used v{version}, the champion is v{champion}")
    problems.extend(f"after the next pyml score: {p}" for p in after)


def _recover_table(db: Path, base: Base, problems: list[str], command: str) -> None:
    code, output = run_pyml(base.project, db, *base.args(command), in_process=base.in_process)
    if code != 0:
        last = output.strip().splitlines()[-1:] or [""]
        problems.append(f"the next pyml {command} failed ({code}): {last[0]}")
        return
    con = duckdb.connect(str(db), read_only=True)
    try:
        for table, (writer, _) in TABLES.items():
            if writer == command and table_state(con, table) != base.new_tables[table]:
                problems.append(f"after the next pyml {command}: {table} is not the new table")
        after: list[str] = []
        check_no_temp_tables(con, after)
    finally:
        con.close()
    problems.extend(f"after the next pyml {command}: {p}" for p in after)


def phase_of(command: str, lines: list[str], killed: bool) -> str:
    """Where a run was when it died, from its last pyml log line."""
    if not killed:
        return "finished"
    text = "\n".join(lines)
    if command in ("score", "explain", "profile"):
        if " wrote " in text:
            return "closing"  # table swapped; closing the file (checkpoint) and exiting
        if " scoring " in text or " explaining " in text:
            return "writing"  # streaming into the temporary table, or swapping
        return "opening"  # imports, project, connect, model load, relation checks
    if " stored version " in text:
        return "closing"  # version committed; closing the file (checkpoint) and exiting
    if " promoted to champion" in text or " stays challenger" in text:
        return "version txn"  # promotion decided, the version's transaction not committed
    rounds = _ROUND.findall(text)
    if rounds and rounds[-1][0] == rounds[-1][1]:
        return "evaluating"  # every round done: metrics, SHAP, the version's inserts
    if " split (" in text or rounds:
        return "training"  # fitting (with early stopping, possibly evaluating already)
    if " reading " in text:
        return "reading"
    return "opening"


def kill_run(base: Base, command: str, offset: float, workdir: Path) -> Run:
    """Start `pyml <command>` on a fresh copy of the base state, SIGKILL it `offset` seconds
    after its first log line (a negative offset: that long before the clean run's first
    line), and check what it left."""
    return _run(base, command, workdir, pyml_argv(base.project, *base.args(command)), offset)


# Moments a random kill almost never hits (each lasts milliseconds), reached exactly by a
# child that SIGKILLs itself there: name -> (command, module, function, before | after it).
# score, explain and profile share one writer, whose _swap ends the transaction that built
# the new table.
INJECTED = {
    "before swap": ("score", "pyml.store.writer", "_swap", "before"),
    "after swap": ("score", "pyml.store.writer", "_swap", "after"),
    "explain before swap": ("explain", "pyml.store.writer", "_swap", "before"),
    "explain after swap": ("explain", "pyml.store.writer", "_swap", "after"),
    "profile before swap": ("profile", "pyml.store.writer", "_swap", "before"),
    "profile after swap": ("profile", "pyml.store.writer", "_swap", "after"),
    "before commit": ("train", "pyml.store.lifecycle", "on_version_written", "after"),
    "after commit": ("train", "pyml.store.registry", "write_version", "after"),
}
# What each leaves: the old state or the new one.
INJECTED_OUTCOME = {point: "new" if point.endswith("after swap") or point == "after commit"
                    else "old" for point in INJECTED}
_CHILD = """\
import os, signal, sys
sys.path.insert(0, {root!r})
import importlib
module = importlib.import_module({module!r})
real = getattr(module, {func!r})

def die_{when}(*args, **kwargs):
    if {when!r} == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(module, {func!r}, die_{when})
from pyml.cli import cli
cli({args!r}, prog_name="pyml")
"""


def injected_run(base: Base, point: str, workdir: Path) -> Run:
    """Run a pyml command that SIGKILLs itself at an INJECTED point; check what it left."""
    command, module, func, when = INJECTED[point]
    code = _CHILD.format(root=str(Path(__file__).resolve().parents[1]), module=module,
                         func=func, when=when,
                         args=pyml_argv(base.project, *base.args(command))[1:])
    return _run(base, command, workdir, [sys.executable, "-c", code], None, point)


def _run(base: Base, command: str, workdir: Path, argv: list[str], offset: float | None,
         point: str = "") -> Run:
    db = workdir / DB_NAME
    copy_db(base.db, db)
    clean = base.clean[command]
    hang = max(60.0, clean.seconds * HANG_FACTOR)
    lines: list[str] = []
    first = threading.Event()
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env_for(db), text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    problems: list[str] = []
    if offset is None:  # it kills itself
        at = started + hang
    elif offset < 0:
        at = started + clean.lines[0][0] + offset if clean.lines else started
    else:
        # Wait for the first log line (or the end), then the offset.
        while not first.wait(0.005) and proc.poll() is None:
            if time.monotonic() - started > hang:
                problems.append(f"pyml {command} logged nothing in {hang:.0f}s")
                break
        at = time.monotonic() + offset
    try:
        proc.wait(timeout=max(0.0, at - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    delay = time.monotonic() - started
    try:
        code = proc.wait(timeout=hang)
    except subprocess.TimeoutExpired:  # not even SIGKILL ended it
        proc.kill()
        code = proc.wait()
        problems.append(f"pyml {command} did not end after SIGKILL")
    reader.join(timeout=5)
    killed = code == -signal.SIGKILL
    if not killed and code != 0:
        problems.append(f"pyml {command} exited {code} before the kill: {lines[-1:]}")
    wal = db.with_name(db.name + ".wal").exists()
    outcome, found = check(db, base, command)
    problems.extend(found)
    if point and outcome and outcome != INJECTED_OUTCOME[point]:
        problems.append(f"killed {point}: the {outcome} state, expected the "
                        f"{INJECTED_OUTCOME[point]} one")
    if not problems:
        _recover(db, base, problems, command)
    return Run(command, offset or 0.0, delay, killed,
               point or phase_of(command, lines, killed), wal, outcome, tuple(problems))


def plan(base: Base, runs: int, seed: int, commands: tuple[str, ...] = COMMANDS
         ) -> list[tuple[str, float]]:
    """(command, kill offset) for each run: `commands` alternate; each command's
    window (Clean.window) is cut into as many equal slices as it has runs and each run's
    offset is drawn uniformly (seeded) in its own slice, so even a few runs spread over the
    whole window. The order of the slices is shuffled."""
    rng = random.Random(seed)
    order = [commands[i % len(commands)] for i in range(runs)]
    slices = {c: rng.sample(range(order.count(c)), order.count(c)) for c in commands}
    out = []
    for command in order:
        lo, hi = base.clean[command].window()
        k, n = slices[command].pop(), order.count(command)
        out.append((command, lo + (hi - lo) * (k + rng.random()) / n))
    return out


def run_all(base: Base, runs: list[tuple[str, float]], work: Path, *,
            progress: bool = False, keep: bool = False) -> list[Run]:
    """Every planned run, each on its own copy of the base state."""
    results = []
    for i, (command, offset) in enumerate(runs):
        run = kill_run(base, command, offset, work / f"run{i:03d}")
        results.append(run)
        if progress:
            state = "ok" if run.survived else "FAILED: " + "; ".join(run.problems)
            print(f"run {i + 1:>3} {command:<5} kill at first line {offset:+.2f}s "
                  f"({run.delay:5.2f}s): {run.phase}, {run.outcome or '-'}, "
                  f"{'WAL' if run.wal else 'no WAL'}: {state}", file=sys.stderr)
        if run.survived and not keep:
            shutil.rmtree(work / f"run{i:03d}", ignore_errors=True)
    return results


def table(results: list[Run]) -> str:
    """The summary: per command, runs, killed mid-run, survived, outcomes; then phases."""
    head = ("command", "runs", "killed mid-run", "survived", "WAL replayed", "old", "new")
    rows = []
    commands = [c for c in PREPARED if any(r.command == c for r in results)]
    for command in (*commands, "all"):
        rs = [r for r in results if command in (r.command, "all")]
        rows.append((command, len(rs), sum(r.killed for r in rs), sum(r.survived for r in rs),
                     sum(r.wal for r in rs), sum(r.outcome == "old" for r in rs),
                     sum(r.outcome == "new" for r in rs)))
    lines = [_row(head), _row(tuple("-" * len(h) for h in head))]
    lines += [_row(tuple(str(v) for v in r)) for r in rows]
    lines += ["", _row(("command", "phase at kill", "runs", "survived", "old", "new")),
              _row(("-" * 7, "-" * 13, "-" * 4, "-" * 8, "-" * 3, "-" * 3))]
    phases = sorted({(r.command, r.phase) for r in results},
                    key=lambda cp: (PREPARED.index(cp[0]), PHASES.index(cp[1])))
    for command, phase in phases:
        rs = [r for r in results if (r.command, r.phase) == (command, phase)]
        lines.append(_row((command, phase, str(len(rs)), str(sum(r.survived for r in rs)),
                           str(sum(r.outcome == "old" for r in rs)),
                           str(sum(r.outcome == "new" for r in rs)))))
    return "\n".join(lines)




def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def build_loans(root: Path) -> Path:
    """The tests' lending dbt project, built with `dbt build` (seed + feature model)."""
    from tests.conftest import dbt, write_project

    write_project(root)
    dbt(root, "build")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50,
                        help="random kills (the --commands alternate)")
    parser.add_argument("--commands", default=",".join(COMMANDS),
                        help=f"commands killed at random, of {', '.join(PREPARED)}")
    parser.add_argument("--rows", type=int, default=ROWS,
                        help="rows of the scored and trained relation")
    parser.add_argument("--batch-size", type=int, help="pyml score --batch-size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep every run's files in this folder")
    args = parser.parse_args(argv)
    commands = tuple(args.commands.split(","))
    if not set(commands) <= set(PREPARED):
        parser.error(f"--commands: choose from {', '.join(PREPARED)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pyml-crash-") as tmp:
        work = args.keep or Path(tmp)
        built = build_loans(work / "built")
        score_args = ("--batch-size", str(args.batch_size)) if args.batch_size else ()
        base = prepare(built, work, rows=args.rows, score_args=score_args)
        for command, clean in base.clean.items():
            lo, hi = clean.window()
            print(f"clean pyml {command}: {clean.seconds:.1f}s; kills drawn from "
                  f"{lo:+.2f}s to {hi:+.2f}s around its first log line", file=sys.stderr)
            for t, line in clean.lines:
                print(f"  {t:6.2f}s {line[:100]}", file=sys.stderr)
        results = run_all(base, plan(base, args.runs, args.seed, commands), work,
                          progress=True,
                          keep=args.keep is not None)
        for point in INJECTED:
            run = injected_run(base, point, work / f"at-{point.replace(' ', '-')}")
            print(f"killed exactly {point}: {run.outcome or '-'}, "
                  f"{'WAL' if run.wal else 'no WAL'}: "
                  + ("ok" if run.survived else "FAILED: " + "; ".join(run.problems)),
                  file=sys.stderr)
            results.append(run)
    print(f"{args.runs} SIGKILLs at random moments + {len(INJECTED)} at exact ones "
          f"(the swap, the commit), {base.rows:,} rows, seed {args.seed}, "
          f"{time.monotonic() - started:.0f}s")
    print(table(results))
    failed = [r for r in results if not r.survived]
    for r in failed:
        print(f"FAILED {r.command} killed at {r.delay:.2f}s, first line {r.offset:+.2f}s "
              f"({r.phase}): "
              + "; ".join(r.problems))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
