"""Security: hostile names never reach SQL unquoted, stored bytes are never executed, and
`pyml serve` is local by default, bounded, and tells clients nothing about the machine.

Hostile text comes from every door a user has: the YAML spec (model, column, key and
relation names), column names and category values in the data itself, command-line
arguments, and HTTP paths, fields and values. Each test proves that nothing executed: every
table of the DuckDB file is byte-for-byte the same as before (see tests/support.py, state).
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pyml
from pyml.cli import cli
from pyml.errors import RegistryError
from pyml.serve.app import MAX_BODY_BYTES, MAX_RECORDS, create_app

from .conftest import SCHEMA_YML, Loans
from .support import EXCLUDE, WHERE, error_line, state

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

DROP = 'x"; drop table ml.models; --'  # closes a double-quoted identifier, then a statement
DROP_VALUE = "north'); drop table ml.models; --"  # the same for a single-quoted literal
DROP_RELATION = 'main.x"; drop schema ml cascade; --'  # schema.table with one dot
COLUMNS = "loan_id, region, amount, income, term_months, grade, defaulted, loss"


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML string


# --- hostile names in the YAML spec -------------------------------------------------------------

SPEC_CASES = [
    ("model-name", ("name: default_risk", f"name: {_yaml_str(DROP)}"), ("train",),
     f"models/schema.yml: model '{DROP}' on model.loans.loan_features: name '{DROP}' is not "
     "a valid model name; use lower-case letters, digits and underscores, starting with a "
     "letter (at most 63 characters)"),
    ("target", ("target: defaulted", f"target: {_yaml_str(DROP)}"), ("train", "default_risk"),
     f"{WHERE}: target column '{DROP}' is not in main.loan_features; columns are: {COLUMNS}"),
    ("key", ("key: loan_id", f"key: {_yaml_str(DROP)}"), ("train", "default_risk"),
     f"{WHERE}: key column '{DROP}' is not in main.loan_features; columns are: {COLUMNS}"),
    ("feature", (EXCLUDE, f"            features: [amount, {_yaml_str(DROP)}]\n"),
     ("train", "default_risk"),
     f"{WHERE}: feature '{DROP}' is not in main.loan_features; columns are: {COLUMNS}"),
    ("exclude", ("exclude: [loss, grade]", f"exclude: [loss, {_yaml_str(DROP)}]"),
     ("train", "default_risk"),
     f"{WHERE}: exclude column '{DROP}' is not in main.loan_features; columns are: "
     f"{COLUMNS}"),
    ("split-column", (EXCLUDE, EXCLUDE + "            split: {method: time, column: "
                      f"{_yaml_str(DROP)}}}\n"), ("train", "default_risk"),
     f"{WHERE}: split.column column '{DROP}' is not in main.loan_features; columns are: "
     f"{COLUMNS}"),
    ("score-relation", (EXCLUDE, EXCLUDE + "            score: {relation: "
                        f"{_yaml_str(DROP_RELATION)}}}\n"), ("score", "default_risk"),
     f"relation {DROP_RELATION} does not exist in the database: build it with `dbt build "
     f"--select {DROP_RELATION[5:]}` first"),
    ("positive-class", (EXCLUDE, EXCLUDE + f"            positive_class: "
                        f"{_yaml_str(DROP_VALUE)}\n"), ("train", "default_risk"),
     f"{WHERE}: positive_class {DROP_VALUE!r} is not a value of the target (values: "
     "[False, True])"),
]


@pytest.mark.parametrize(("edit", "argv", "message"), [c[1:] for c in SPEC_CASES],
                         ids=[c[0] for c in SPEC_CASES])
def test_hostile_names_in_the_spec(scored: Loans, edit: tuple[str, str], argv: tuple[str, ...],
                                   message: str) -> None:
    assert edit[0] in SCHEMA_YML
    scored.write_schema(SCHEMA_YML.replace(edit[0], edit[1], 1))
    before = state(scored)
    result = scored.pyml(*argv)
    assert error_line(result.output, result.exit_code) == message
    assert state(scored) == before


# --- hostile names and values in the data: they work, and nothing else runs ----------------------

def test_hostile_column_names_and_values_are_just_data(loans: Loans, tmp_path: Path) -> None:
    """A column named like an injection and a category value like one train, score, compile
    to SQL, explain, drift, profile and serve like any other."""
    loans.replace_features(
        f'select loan_id, case when region = \'north\' then {_sql_literal(DROP_VALUE)} '
        f'else region end as region, amount as {_sql_ident(DROP)}, income, term_months, '
        "grade, defaulted, loss")
    loans.ok("train", "default_risk")
    loans.ok("score", "default_risk")
    (features,), = loans.sql("select features from ml.models")
    stored = {f["name"]: f for f in json.loads(features)}
    assert DROP in stored and DROP_VALUE in stored["region"]["categories"]
    # The generated SQL quotes the column and the category: run it, compare with score.
    query = loans.ok("sql", "default_risk").output
    got = dict(loans.sql(f"select loan_id, probability from ({query})"))
    want = dict(loans.sql("select loan_id, probability from ml.default_risk_predictions"))
    assert got.keys() == want.keys()
    assert max(abs(got[k] - want[k]) for k in want) < 1e-6
    loans.ok("explain", "default_risk", "--top-k", "2")
    loans.ok("drift", "default_risk")
    loans.ok("profile", "default_risk")
    loans.ok("export", "default_risk", "--output", str(tmp_path / "export"))
    assert loans.sql("select count(*) from ml.models") == [(1,)]
    assert {t for (t,) in loans.sql("select table_name from information_schema.tables "
                                    "where table_schema = 'ml'")} >= {
        "models", "metrics", "default_risk_predictions", "default_risk_explanations", "drift"}
    row = {"loan_id": 1, "region": DROP_VALUE, DROP: 5000.0, "income": 40000.0,
           "term_months": 36}
    with TestClient(create_app(loans.db, poll_seconds=3600)) as client:
        body = client.post("/models/default_risk/predict", json=[row]).json()
    assert 0 < body["predictions"][0]["probability"] < 1


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- hostile command-line arguments ------------------------------------------------------------

CLI_CASES = [
    (("train", DROP), f"no pyml model named '{DROP}'; declared models: default_risk, grade, "
                      "loss_amount"),
    (("score", DROP), f"no pyml model named '{DROP}'; declared models: default_risk, grade, "
                      "loss_amount"),
    (("predictions", DROP), f"no pyml model named '{DROP}' and no ml.{DROP}_predictions; "
                            "declared models: default_risk, grade, loss_amount"),
    (("show", DROP), f"no pyml model named '{DROP}' in the project or its registry; "
                     "declared models: default_risk, grade, loss_amount"),
    (("promote", DROP), f"no pyml model named '{DROP}' in the project or its registry; "
                        "declared models: default_risk, grade, loss_amount"),
    (("rollback", DROP), f"no pyml model named '{DROP}' in the project or its registry; "
                         "declared models: default_risk, grade, loss_amount"),
    (("sql", DROP), f"no pyml model named '{DROP}' in the project or its registry; "
                    "declared models: default_risk, grade, loss_amount"),
    (("sql", "grade", "--dialect", DROP), f"unknown dialect '{DROP}'; choose one of duckdb, "
                                          "postgres, snowflake, bigquery, sqlite, spark"),
    (("models", DROP), f"no pyml model named '{DROP}' in the project or its registry; "
                       "declared models: default_risk, grade, loss_amount"),
    (("profile", DROP_RELATION), f"relation {DROP_RELATION} does not exist in the database: "
                                 f"build it with `dbt build --select {DROP_RELATION[5:]}` "
                                 "first"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_CASES,
                         ids=["-".join(a for a in c[0] if a not in (DROP, DROP_RELATION))
                              for c in CLI_CASES])
def test_hostile_command_line_arguments(scored: Loans, argv: tuple[str, ...],
                                        message: str | None) -> None:
    before = state(scored)
    result = scored.pyml(*argv)
    if message is None:
        assert result.exit_code == 0, result.output
    else:
        assert error_line(result.output, result.exit_code) == message
    assert state(scored) == before


# --- stored bytes are data, never code ----------------------------------------------------------

class _Payload:
    """Unpickling this creates the marker file: proof that something ran it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("booster_format", ["pickle", "json", "ubj"])
def test_pickle_in_the_registry_never_runs(scored: Loans, tmp_path: Path,
                                           booster_format: str) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Payload(marker))
    pickle.loads(blob)  # the payload is live: unpickling it does create the marker
    assert marker.exists()
    marker.unlink()
    scored.sql("update ml.models set booster = ?, booster_format = ? "
               "where model_name = 'grade'", [blob, booster_format])
    before = state(scored)
    message = ("model 'grade' version 1 has booster format 'pickle'; pyml loads only XGBoost "
               "ubj/json models: retrain it" if booster_format == "pickle" else
               f"model 'grade' version 1: the stored booster is not a valid XGBoost "
               f"{booster_format} model; retrain it with `pyml train grade`")
    for argv in (("score", "grade"), ("sql", "grade"), ("show", "grade"),
                 ("export", "grade", "--output", str(tmp_path / "export"))):
        result = scored.pyml(*argv)
        assert error_line(result.output, result.exit_code) == message, argv
    with pytest.raises(RegistryError, match=re.escape(message)):
        pyml.load_model("grade", project_dir=scored.dir, profiles_dir=scored.dir)
    with pytest.raises(RegistryError, match=re.escape(message)):
        create_app(scored.db)
    assert not marker.exists()
    assert state(scored) == before


UNSAFE = re.compile(r"\bimport (pickle|marshal|shelve|dill|joblib|cloudpickle)\b"
                    r"|\bfrom (pickle|marshal|shelve|dill|joblib|cloudpickle) import\b"
                    r"|\b(pickle|marshal|dill|joblib)\.loads?\(|\beval\(|\bexec\("
                    r"|\byaml\.load\(|\bunsafe_load\(|\btorch\.load\(")


def test_pyml_has_no_pickle_eval_or_exec() -> None:
    """Nothing in pyml can turn stored bytes or text into code."""
    root = Path(pyml.__file__).parent
    # Every module of every subpackage (the package is folders of modules, not one flat one).
    files = sorted(root.rglob("*.py"))
    assert len(files) > 40
    hits = [f"{p.relative_to(root)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if UNSAFE.search(line)]
    assert hits == []


# --- pyml serve ------------------------------------------------------------------------------

def test_serve_binds_localhost_by_default() -> None:
    import inspect

    from pyml import api
    from pyml.serve import app as serve_module

    options = {p.name: p for p in cli.commands["serve"].params}
    assert options["host"].default == "127.0.0.1"
    assert inspect.signature(api.serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_module.serve).parameters["host"].default == "127.0.0.1"
    assert (options["max_records"].default, options["max_body_bytes"].default) == (
        MAX_RECORDS, MAX_BODY_BYTES) == (1000, 1 << 20)


@pytest.fixture
def client(scored: Loans) -> Iterator[TestClient]:
    """The server with its default limits."""
    with TestClient(create_app(scored.db, poll_seconds=3600),
                    raise_server_exceptions=False) as c:
        yield c


def test_serve_limits_body_size_and_record_count(client: TestClient, scored: Loans) -> None:
    before = state(scored)
    big = client.post("/models/grade/predict", content=b"[" + b" " * MAX_BODY_BYTES + b"]")
    many = client.post("/models/grade/predict", json=[{}] * (MAX_RECORDS + 1))
    assert (big.status_code, many.status_code) == (413, 413)
    assert many.json() == {"detail": f"body has {MAX_RECORDS + 1} records; the limit is "
                                     f"{MAX_RECORDS} per request (pyml serve --max-records)"}
    assert client.post("/models/grade/predict", json=[{}] * MAX_RECORDS).status_code == 200
    assert state(scored) == before


def test_serve_answers_hostile_requests_without_leaks(client: TestClient,
                                                      scored: Loans) -> None:
    """Bad paths, fields and values get a 4xx with one line: no traceback, no file path."""
    before = state(scored)
    responses = [
        client.post(f"/models/{DROP}/predict", content=b"[]"),
        client.get(f"/models/{DROP}"),
        client.post("/models/..%2F..%2Fetc%2Fpasswd/predict", content=b"[]"),
        client.get("/models/grade/../../etc/passwd"),
        client.post("/models/grade/predict", json=[{"amount": DROP}]),
        client.post("/models/grade/predict?explain=" + DROP, content=b"[]"),
        client.post("/models/grade/predict", content=b"[" * 5000 + b"]" * 5000),
        client.post("/models/grade/predict", content=b"\x00\x01\x02"),
        client.post("/models/grade/predict", content=b'[{"income": 1e999999}]'),
        client.post("/models/grade/predict", content=b'[{"region": "\xff\xc3\x28"}]'),
    ]
    for r in responses:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail
        for secret in (str(scored.dir), str(scored.db), "Traceback", 'File "', "/tmp/"):
            assert secret not in r.text, r.text
    # Hostile field names and category values are data: ignored or unseen, never an error.
    ok = client.post("/models/grade/predict",
                     json=[{DROP: 1, "region": DROP_VALUE, "loan_id": DROP}]).json()
    assert ok["predictions"][0]["loan_id"] == DROP
    assert state(scored) == before


def test_serve_health_does_not_leak_paths(client: TestClient, scored: Loans) -> None:
    """A refresh that fails (the file replaced by garbage) is reported without the path."""
    scored.db.write_bytes(b"garbage" * 1000)
    client.app.state.champions.poll()  # type: ignore[attr-defined]
    health = client.get("/health")
    assert health.json()["refresh_error"] == "cannot read the registry; see the server log"
    assert str(scored.dir) not in health.text
    assert client.post("/models/grade/predict", json=[{}]).status_code == 200  # still serving

