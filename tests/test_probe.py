"""Fixes from the adversarial probe (issue 19, "No silent wrong answers").

Each test failed before its fix. A manifest parsed for another dbt target was reused (pyml
read prod's tables under --target dev); a NaN --lock-timeout or a FIFO as the database hung
pyml; a truncated database file, a feature view over a dropped table, a `$` in a column name
and an out-of-range --limit gave tracebacks; drift compared 0 rows and reported drift, and
crashed on an all-NULL feature; `positive_class: 1` on a BOOLEAN target (or `true` on an
INTEGER one) crashed in Arrow. Where the bug is a class, a hypothesis property test covers
the class (25 examples; a longer run is marked slow).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyml
from pyml.data.encode import Feature, encode_target
from pyml.dbt.spec import parse_specs
from pyml.engines.duckdb import connect
from pyml.errors import DatabaseError, PymlError, SpecError
from pyml.modelling.drift_stats import Counter, snapshot
from pyml.report import figures

from .conftest import DB_ENV, SCHEMA_YML, Loans, dbt
from .support import db_state, error_line

# The checkout whose pyml this suite imported: subprocesses run the same code.
PYML_ROOT = Path(pyml.__file__).resolve().parents[1]
EXCLUDE = "            exclude: [loss, grade]\n"
WHERE = "models/schema.yml: model 'default_risk' on model.loans.loan_features"


# --- helpers ---------------------------------------------------------------------------------

def run_pyml(project: Loans, *args: str, db: Path | None = None, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, so a hang fails the test instead of the suite."""
    env = {**os.environ, DB_ENV: str(db or project.db),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PYML_ROOT),
                                                        os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-c", "from pyml.cli import main; main()", *args,
         "--project-dir", str(project.dir), "--profiles-dir", str(project.dir)],
        env=env, capture_output=True, text=True, timeout=timeout, check=False)


def usage_error(done: subprocess.CompletedProcess[str], option: str) -> None:
    """click refused an option value: exit code 1 like every user mistake (click's own 2 is
    `pyml drift`'s "drift found"), one `Error:` line, no traceback."""
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    assert f"Error: Invalid value for '{option}'" in output, output


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def holding_lock(scored: Loans) -> Iterator[int]:
    """Another process holding the project's DuckDB write lock; yields its PID."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, duckdb\ncon = duckdb.connect(sys.argv[1])\n"
                               "print('locked', flush=True)\ntime.sleep(300)", str(scored.db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


# --- 1. a manifest parsed for another target -------------------------------------------------

TWO_TARGETS = """\
loans:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('LOANS_DB', 'loans.duckdb') }}"
      threads: 1
    prod:
      type: duckdb
      path: "{{ env_var('LOANS_DB', 'loans.duckdb') }}"
      schema: prod
      threads: 1
"""


def test_manifest_parsed_for_another_target_is_not_reused(loans: Loans) -> None:
    """`dbt parse --target prod` leaves a fresh manifest whose nodes live in schema prod;
    `pyml train --target dev` trained on prod.loan_features (1,000 rows) without a word."""
    (loans.dir / "profiles.yml").write_text(TWO_TARGETS)
    dbt(loans.dir, "build", "--target", "prod")
    loans.sql("delete from prod.loan_features where loan_id > 1000")
    dbt(loans.dir, "parse", "--target", "prod")

    result = loans.ok("train", "default_risk", "--target", "dev")
    assert "reading 3,000 labelled rows from main.loan_features" in result.output
    assert loans.sql("select feature_relation from ml.models where model_name = "
                     "'default_risk'") == [("main.loan_features",)]
    loans.ok("score", "default_risk", "--target", "dev")
    assert loans.sql("select count(*) from ml.default_risk_predictions") == [(3000,)]
    # pyml's own parse (for dev) is recorded; asking for prod parses again.
    loans.ok("score", "default_risk", "--target", "prod")
    assert loans.sql("select count(*) from ml.default_risk_predictions") == [(1000,)]


def _invocation(project: Loans) -> str:
    manifest = json.loads((project.dir / "target" / "manifest.json").read_text())
    return str(manifest["metadata"]["invocation_id"])


def test_a_known_manifest_is_not_parsed_again(loans: Loans) -> None:
    """The fix must not re-parse for nothing: the manifest of the `dbt build` that made the
    project (run_results.json says which target) and pyml's own parse are reused."""
    built = _invocation(loans)
    loans.ok("models")
    assert _invocation(loans) == built
    dbt(loans.dir, "parse")  # no run_results.json for it: its target is unknown
    parsed = _invocation(loans)
    loans.ok("models")
    assert _invocation(loans) != parsed  # pyml parsed again, and recorded it
    mine = _invocation(loans)
    assert json.loads((loans.dir / "target" / "pyml_parse.json").read_text())[
        "invocation_id"] == mine
    loans.ok("models")
    assert _invocation(loans) == mine


# --- 2. hangs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "-1", "-inf"])
def test_lock_timeout_nan_or_negative_is_refused(scored: Loans, holding_lock: int,
                                                 value: str) -> None:
    """With the lock held, a NaN timeout busy-waited at 100% CPU forever (a NaN deadline is
    never reached); a negative one was taken as 0. Both are refused; nothing waits."""
    usage_error(run_pyml(scored, "models", "--lock-timeout", value, timeout=60),
                "--lock-timeout")


@pytest.mark.parametrize("value", [math.nan, -1.0, -math.inf])
def test_library_lock_timeout_nan_or_negative_is_refused(scored: Loans, value: float) -> None:
    with pytest.raises(PymlError, match="lock timeout must be a number of seconds >= 0"):
        connect(scored.db, lock_timeout=value)


def test_lock_timeout_inf_waits_as_long_as_it_takes(scored: Loans) -> None:
    """inf is a legal choice (wait for the other writer however long); with no other writer
    it opens at once."""
    done = run_pyml(scored, "models", "--lock-timeout", "inf", timeout=60)
    assert done.returncode == 0 and "default_risk" in done.stdout, done.stderr


@pytest.mark.parametrize(("command", "option"), [
    (("drift", "default_risk", "--threshold", "nan"), "--threshold"),
    (("tune", "default_risk", "--timeout", "nan"), "--timeout"),
    (("serve", "--poll-seconds", "nan"), "--poll-seconds"),
])
def test_nan_float_options_are_refused(scored: Loans, command: tuple[str, ...],
                                       option: str) -> None:
    """click.FloatRange lets NaN through every bound: a NaN drift threshold never alerted
    (psi > nan is false), a NaN tune timeout or poll interval never ends."""
    before = db_state(scored.db)
    usage_error(run_pyml(scored, *command, timeout=60), option)
    assert db_state(scored.db) == before


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))  # the file stays after the socket is closed
    sock.close()


@pytest.mark.parametrize("make", [_fifo, _socket], ids=["fifo", "socket"])
def test_database_path_that_is_not_a_regular_file(loans: Loans, tmp_path: Path,
                                                  make: Any) -> None:
    """Opening a FIFO blocks until a writer appears: `pyml models` hung forever."""
    path = tmp_path / "loans.duckdb"
    make(path)
    done = run_pyml(loans, "models", db=path, timeout=60)
    assert error_line(done.stdout + done.stderr, done.returncode) == (
        f"{path} is not a regular file (a named pipe, device or socket), not a DuckDB "
        "database file: fix the path in your dbt profile")


def test_database_path_that_is_a_device(loans: Loans) -> None:
    done = run_pyml(loans, "models", db=Path("/dev/null"), timeout=60)
    assert error_line(done.stdout + done.stderr, done.returncode).startswith(
        "/dev/null is not a regular file")


# --- 3. tracebacks that are one line now -------------------------------------------------------

def _truncate(db: Path, size: int) -> None:
    with db.open("r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("args", [("models",), ("score", "grade"), ("train", "grade")])
def test_truncated_database(scored: Loans, args: tuple[str, ...]) -> None:
    """A copy cut short opened fine and failed in the first query that read a missing block
    (`Could not read enough bytes`), with a traceback."""
    _truncate(scored.db, scored.db.stat().st_size // 2)
    before = sha256(scored.db)
    result = scored.pyml(*args)
    message = error_line(result.output, result.exit_code)
    assert message.startswith(f"{scored.db} is truncated ("), message
    assert message.endswith("); restore it from a backup or rebuild it with dbt"), message
    assert sha256(scored.db) == before


def _blocks(db: Path) -> tuple[int, int, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("select block_size, used_blocks, total_blocks from "
                          "pragma_database_size() where database_name = current_database()"
                          ).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_duckdb_file_layout_is_what_the_truncation_check_assumes(scored: Loans) -> None:
    """A whole file holds the headers and at least its used blocks, and at most every block
    counted (DuckDB cuts free blocks off the end, and keeps counting them: the first version
    of the check compared with that count and called a healthy file truncated). If a DuckDB
    upgrade changes the layout, the check must change with it."""
    from pyml.engines.duckdb import FILE_HEADERS

    size, (block, used, total) = scored.db.stat().st_size, _blocks(scored.db)
    assert FILE_HEADERS + used * block <= size <= FILE_HEADERS + total * block
    _view_over_dropped_table(scored)  # frees the last blocks: the file shrinks, the count not
    size, (block, used, total) = scored.db.stat().st_size, _blocks(scored.db)
    assert FILE_HEADERS + used * block <= size < FILE_HEADERS + total * block
    connect(scored.db).close()


def _truncated_opens(scored: Loans, tmp_path: Path, cut: float) -> None:
    """A copy cut at any point either refuses to open (one DatabaseError) or holds every
    table whole: no query on it fails."""
    copy = tmp_path / "cut.duckdb"
    shutil.copyfile(scored.db, copy)
    _truncate(copy, int(copy.stat().st_size * cut))
    try:
        with pytest.raises(DatabaseError) as refused:
            connect(copy, read_only=True).close()
        assert "\n" not in str(refused.value)
    finally:
        copy.unlink(missing_ok=True)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(min_value=0.0, max_value=0.9999, allow_nan=False))
def test_any_truncation_is_one_database_error(scored: Loans, tmp_path: Path, cut: float
                                              ) -> None:
    _truncated_opens(scored, tmp_path, cut)


@pytest.mark.slow
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(min_value=0.0, max_value=0.99999, allow_nan=False))
def test_any_truncation_is_one_database_error_long(scored: Loans, tmp_path: Path, cut: float
                                                   ) -> None:
    _truncated_opens(scored, tmp_path, cut)


def _view_over_dropped_table(project: Loans) -> None:
    project.sql("create table main.base as select * from main.loan_features")
    project.sql("drop table main.loan_features")
    project.sql("create view main.loan_features as select * from main.base")
    project.sql("drop table main.base")


@pytest.mark.parametrize("args", [("score", "grade"), ("train", "grade"), ("drift", "grade"),
                                  ("profile", "grade"), ("explain", "grade")])
def test_feature_view_over_a_dropped_table(scored: Loans, args: tuple[str, ...]) -> None:
    """The view keeps its columns in the catalog; the first query on it raised DuckDB's
    CatalogException with a traceback."""
    _view_over_dropped_table(scored)
    before = db_state(scored.db)
    result = scored.pyml(*args)
    assert error_line(result.output, result.exit_code) == (
        "view main.loan_features cannot be read (Catalog Error: Table with name base does not "
        "exist!): rebuild it with `dbt build --select loan_features`")
    assert db_state(scored.db) == before


def test_report_with_dollars_in_column_names(loans: Loans) -> None:
    """matplotlib parsed `_$_per_$_` in a label as TeX and the report crashed."""
    loans.sql('alter table main.loan_features rename column income to "income_$_per_$_k"')
    loans.sql('alter table main.loan_features rename column region to "$region$"')
    loans.ok("train", "default_risk")
    out = loans.dir / "report.html"
    loans.ok("report", "default_risk", "--output", str(out))
    assert "income_$_per_$_k" in out.read_text()


# Mostly TeX's special characters (a `$...$` pair is what crashed), some arbitrary text.
LABEL = st.one_of(
    st.text(st.sampled_from("$$_^\\{}%#&~ ab1"), min_size=1, max_size=12),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=16))


def _draw_all(names: list[str], rng: np.random.Generator) -> None:
    k = len(names)
    shap = rng.normal(size=(20, k))
    values = rng.normal(size=(20, k))
    assert figures.importance_bar(names, list(rng.random(k)), names[0], names[-1])
    assert figures.drift_bars(names, list(rng.random(k)), 0.2)
    assert figures.beeswarm(names, shap, values, [j % 2 == 1 for j in range(k)])
    assert figures.dependence(names[0], shap[:, 0], values[:, 0], ())
    assert figures.dependence(names[0], shap[:, 0], rng.integers(0, k, 20).astype(float),
                              names)
    assert figures.confusion(5, 3, 2, 7, [names[0], names[-1]], 0.5)


# A label in a script the bundled font lacks draws as a box, with a warning: fine for this test.
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
@settings(max_examples=25, deadline=None)
@given(names=st.lists(LABEL, min_size=2, max_size=4, unique=True))
def test_figures_draw_any_label_as_plain_text(names: list[str]) -> None:
    """Column names and class labels are data: any text draws (no TeX, no crash)."""
    _draw_all(names, np.random.default_rng(0))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(names=st.lists(LABEL, min_size=2, max_size=6, unique=True))
def test_figures_draw_any_label_as_plain_text_long(names: list[str]) -> None:
    _draw_all(names, np.random.default_rng(1))


def test_predictions_limit_beyond_bigint(scored: Loans) -> None:
    """A limit past BIGINT overflowed in DuckDB with a traceback; click bounds it now, and the
    largest legal limit works."""
    usage_error(run_pyml(scored, "predictions", "grade", "--limit", "99999999999999999999",
                         timeout=60), "--limit")
    result = scored.ok("predictions", "grade", "--limit", str(2**63 - 1))
    assert "loan_id" in result.output


# --- 4. drift on an empty relation, and on an all-NULL feature ---------------------------------

def test_drift_on_an_empty_relation(scored: Loans) -> None:
    """Drift compared 0 rows, reported every feature drifted and exited 2."""
    scored.sql("delete from main.loan_features")
    before = db_state(scored.db)
    result = scored.pyml("drift", "default_risk")
    assert error_line(result.output, result.exit_code) == (
        "model 'default_risk' v1: main.loan_features is empty; nothing to compare (did `dbt "
        "build` run?)")
    assert db_state(scored.db) == before


NULL = "set income = null"
# (update before training, update after, drift's exit code, income drifted, NULL share now)
ALL_NULL_CASES = {
    # A new column, not backfilled yet: all NULL when trained and now. No PSI/KS to speak
    # of: PSI against the all-missing bin is 0, KS is NULL, the null shares say why.
    "null-then-null": (NULL, None, 0, False, 1.0),
    # Backfilled since: every row moved out of the NULL bin, which is drift.
    "null-then-backfilled": (NULL, "set income = amount * 3", 2, True, 0.0),
    # A pipeline break NULLs a column the model trained on: drift, no KS (no values now).
    "values-then-null": (None, NULL, 2, True, 1.0),
}


@pytest.mark.parametrize("case", ALL_NULL_CASES, ids=list(ALL_NULL_CASES))
def test_drift_and_report_with_an_all_null_feature(loans: Loans, case: str) -> None:
    """`operands could not be broadcast` in PSI: the training snapshot of an all-NULL
    numeric feature has no bins, the counter now had one."""
    at_train, now, code, drifted, null_now = ALL_NULL_CASES[case]
    if at_train:
        loans.sql(f"update main.loan_features {at_train}")
    loans.ok("train", "default_risk")
    if now:
        loans.sql(f"update main.loan_features {now}")
    result = loans.pyml("drift", "default_risk")
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    stats = dict(loans.sql("select metric, value from ml.drift where model_name = "
                           "'default_risk' and feature = 'income'"))
    assert stats.get("ks") is None  # no KS: one side has no values
    assert (stats["psi"] > 0.2) is drifted
    if at_train:
        assert stats["null_share_train"] == 1.0
    else:  # the loan book's unknown incomes (2%) among the training rows
        assert 0 < stats["null_share_train"] < 0.1
    assert stats["null_share_now"] == null_now
    out = loans.dir / "report.html"
    loans.ok("report", "default_risk", "--output", str(out))
    assert out.exists()


def _drift_of(train: list[float | None], now: list[float | None]) -> Any:
    X = np.array([[np.nan if v is None else v] for v in train], dtype=np.float32)
    snap = snapshot([Feature("x", "numeric", "DOUBLE")], X)[0]
    counter = Counter(snap)
    counter.add(pa.array(now, type=pa.float64()))
    return counter.result()


VALUES = st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1,
                  max_size=60)


def _check_drift_property(train: list[float | None], now: list[float | None]) -> None:
    result = _drift_of(train, now)
    assert math.isfinite(result.psi) and result.psi >= -1e-12
    assert result.null_share_train == sum(v is None for v in train) / len(train)
    assert result.null_share_now == sum(v is None for v in now) / len(now)
    if all(v is None for v in train) or all(v is None for v in now):
        assert result.ks is None
    else:
        assert result.ks is not None and 0 <= result.ks <= 1
    if train == now:
        assert result.psi == pytest.approx(0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(train=VALUES, now=VALUES)
def test_drift_statistics_on_any_null_mix(train: list[float | None],
                                          now: list[float | None]) -> None:
    """Numeric drift statistics for any mix of NULLs and values on either side, all-NULL
    included: finite PSI, KS only when both sides have values, the null shares."""
    _check_drift_property(train, now)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(train=VALUES, now=VALUES)
def test_drift_statistics_on_any_null_mix_long(train: list[float | None],
                                               now: list[float | None]) -> None:
    _check_drift_property(train, now)


# --- 5. booleans and integers in positive_class ------------------------------------------------

@pytest.mark.parametrize(("positive", "classes"), [(1, "[false, true]"),
                                                    (0, "[true, false]")])
def test_positive_class_number_on_a_boolean_target(loans: Loans, positive: int,
                                                   classes: str) -> None:
    """`positive_class: 1` names `true` (1 = true in SQL's and Python's eyes, as YAML users
    write it); pyarrow refused the classes [False, 1]."""
    loans.write_schema(SCHEMA_YML.replace(
        EXCLUDE, EXCLUDE + f"            positive_class: {positive}\n"))
    loans.ok("train", "default_risk")
    loans.ok("score", "default_risk")
    assert loans.sql("select classes, target_type from ml.models where model_name = "
                     "'default_risk'") == [(classes, "BOOLEAN")]
    types = dict(loans.sql("select column_name, data_type from information_schema.columns "
                           "where table_name = 'default_risk_predictions'"))
    assert types["prediction"] == "BOOLEAN"
    # probability is P(defaulted = the positive class): higher where that is what happened
    [(p_pos, p_neg)] = loans.sql(
        "select avg(probability) filter (where f.defaulted = ?::boolean), avg(probability) "
        "filter (where f.defaulted <> ?::boolean) from ml.default_risk_predictions p join "
        "main.loan_features f using (loan_id)", [positive, positive])
    assert p_pos > p_neg


def test_positive_class_true_on_an_integer_target(loans: Loans) -> None:
    loans.replace_features("select * replace (defaulted::integer as defaulted)")
    loans.write_schema(SCHEMA_YML.replace(EXCLUDE, EXCLUDE + "            positive_class: true\n"))
    loans.ok("train", "default_risk")
    loans.ok("score", "default_risk")
    assert loans.sql("select classes, target_type from ml.models where model_name = "
                     "'default_risk'") == [("[0, 1]", "INTEGER")]
    [(kind,)] = loans.sql("select data_type from information_schema.columns where table_name "
                          "= 'default_risk_predictions' and column_name = 'prediction'")
    assert kind == "BIGINT"  # integer labels come out as BIGINT, as they did before
    assert loans.sql("select distinct prediction from ml.default_risk_predictions order by 1"
                     ) == [(0,), (1,)]


def test_positive_class_two_on_a_boolean_target_is_refused(loans: Loans) -> None:
    loans.write_schema(SCHEMA_YML.replace(EXCLUDE, EXCLUDE + "            positive_class: 2\n"))
    before = db_state(loans.db)
    result = loans.pyml("train", "default_risk")
    assert error_line(result.output, result.exit_code) == (
        f"{WHERE}: positive_class 2 is not a value of the target (values: [False, True])")
    assert db_state(loans.db) == before


# DuckDB type -> (Arrow type, the two label pairs a column of it may hold)
TARGETS: dict[str, tuple[pa.DataType, list[tuple[Any, Any]]]] = {
    "BOOLEAN": (pa.bool_(), [(False, True)]),
    "INTEGER": (pa.int32(), [(0, 1), (1, 2), (-1, 7)]),
    "BIGINT": (pa.int64(), [(0, 1), (3, 4)]),
    "VARCHAR": (pa.string(), [("a", "b"), ("0", "1"), ("false", "true")]),
}
POSITIVE = [None, True, False, 0, 1, 2, 7, -1, 0.0, 1.0, "1", "true", "a", "b", 3]


def _check_positive_class(dtype: str, pair: int, picks: list[int], positive: Any) -> None:
    arrow_type, pairs = TARGETS[dtype]
    labels = pairs[pair % len(pairs)]
    values = [labels[i] for i in picks] + list(labels)  # both classes present
    raw: dict[str, Any] = {"name": "m", "task": "binary", "target": "y", "key": "id"}
    if positive is not None:
        raw["positive_class"] = positive
    [spec] = parse_specs(raw, feature_model="model.p.f", schema="main", relation="f",
                         source_file="models/f.yml")
    col = pa.chunked_array([pa.array(values, type=arrow_type)])
    own = sorted(set(values))
    match = [c for c in own if positive is not None and c == positive]
    if positive is not None and not match:
        with pytest.raises(SpecError, match="is not a value of the target"):
            encode_target(spec, dtype, col)
        return
    y, target = encode_target(spec, dtype, col)
    expected = own if not match else [c for c in own if c is not match[0]] + match
    assert list(target.classes) == expected
    # the column's own values, of its own type: what the prediction column is made of
    assert [type(c) for c in target.classes] == [type(c) for c in own]
    assert target.arrow_type() == pa.array(own).type
    assert list(y) == [expected.index(v) for v in values]


@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from(sorted(TARGETS)), pair=st.integers(0, 5),
       picks=st.lists(st.integers(0, 1), max_size=8), positive=st.sampled_from(POSITIVE))
def test_positive_class_over_target_types(dtype: str, pair: int, picks: list[int],
                                          positive: Any) -> None:
    """Any positive_class against any label type: the stored classes are the column's own
    values with the named one last, or a SpecError naming the values allowed."""
    _check_positive_class(dtype, pair, picks, positive)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(dtype=st.sampled_from(sorted(TARGETS)), pair=st.integers(0, 5),
       picks=st.lists(st.integers(0, 1), max_size=8), positive=st.sampled_from(POSITIVE))
def test_positive_class_over_target_types_long(dtype: str, pair: int, picks: list[int],
                                               positive: Any) -> None:
    _check_positive_class(dtype, pair, picks, positive)


def test_wait_is_bounded_with_a_lock_held(scored: Loans, holding_lock: int) -> None:
    """The backoff still ends at --lock-timeout (the connect loop gained a completeness
    check after a successful open; a failed open must keep retrying, not fall through)."""
    started = time.monotonic()
    result = scored.pyml("models", "--lock-timeout", "0.5")
    assert error_line(result.output, result.exit_code).startswith(
        f"database {scored.db} is locked by another process (PID {holding_lock})")
    assert time.monotonic() - started < 30
