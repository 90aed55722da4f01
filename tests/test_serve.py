"""`pyml serve`: endpoints, parity with ml.<model>_predictions, request validation, champion
refresh without holding the DuckDB file, and one real uvicorn process.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from pyml.serve.app import create_app

from .conftest import DB_ENV, FEATURES, SCHEMA_YML, Loans
from .support import EXCLUDE, free_port, records, stop

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

OUTPUT = {"default_risk": "probability", "grade": "probability_B", "loss_amount": "prediction"}


@pytest.fixture
def client(scored: Loans) -> Iterator[TestClient]:
    app = create_app(scored.db, poll_seconds=3600, max_records=5000)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def small(scored: Loans) -> Iterator[TestClient]:
    app = create_app(scored.db, poll_seconds=3600, max_records=3, max_body_bytes=400)
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("model", sorted(OUTPUT))
def test_predictions_equal_pyml_score(scored: Loans, client: TestClient, model: str) -> None:
    rows = records(scored)
    response = client.post(f"/models/{model}/predict", json=rows)
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == (model, 1)
    table = scored.df(f"select * from ml.{model}_predictions order by loan_id")
    expected = table.drop(columns=["model_version", "scored_at"]).to_dict("records")
    got = body["predictions"]
    assert [p["loan_id"] for p in got] == [r["loan_id"] for r in rows]  # input order
    assert set(got[0]) == set(expected[0])
    for p, e in zip(got, expected, strict=True):
        for col, value in e.items():
            if isinstance(value, float):
                assert abs(p[col] - value) <= 1e-6, (col, p, e)
            else:
                assert p[col] == value


def test_missing_extra_and_unknown_fields(scored: Loans, client: TestClient) -> None:
    (loan,), = scored.sql("select loan_id from main.loan_features where income is null "
                          "order by loan_id limit 1")
    (expected,), = scored.sql("select probability from ml.default_risk_predictions "
                              "where loan_id = ?", [loan])
    row = {r["loan_id"]: r for r in records(scored)}[loan]
    del row["income"]  # a missing field is a missing value, as the NULL in the table
    row.update({"note": "not a feature", "tags": [1, 2], "grade": 7})
    got = client.post("/models/default_risk/predict", json=[row]).json()["predictions"]
    assert got[0]["loan_id"] == loan and abs(got[0]["probability"] - expected) <= 1e-6
    anon = {k: v for k, v in row.items() if k != "loan_id"}
    unseen = {**anon, "region": "atlantis"}
    null_region = {**anon, "region": None}
    got = client.post("/models/default_risk/predict", json=[anon, unseen, null_region]).json()
    preds = got["predictions"]
    assert all("loan_id" not in p for p in preds)  # keys are echoed only when sent
    assert preds[1]["probability"] == preds[2]["probability"]  # unseen category = missing
    assert client.post("/models/default_risk/predict", json=[]).json() == {
        "model": "default_risk", "version": 1, "predictions": []}


@pytest.mark.parametrize(("body", "status", "detail"), [
    (b"[{", 422, "body is not valid JSON: Expecting property name enclosed in double quotes "
                 "at line 1 column 3"),
    (b"\xff", 422, "body is not UTF-8 encoded JSON"),
    (b'{"amount": 1}', 422, "body must be a JSON list of records (objects), got object"),
    (b'[{"amount": 1}, 5]', 422, "record 2 must be a JSON object of field: value, got number"),
    (b'[{}, {"amount": "12.5"}]', 422,
     "record 2: field 'amount' must be a number or null, got string \"12.5\""),
    (b'[{"term_months": true}]', 422,
     "record 1: field 'term_months' must be a number or null, got boolean true"),
    (b'[{"region": 3}]', 422,
     "record 1: field 'region' must be a string (a category) or null, got number 3"),
    (b'[{"income": [1]}]', 422, "record 1: field 'income' must be a number or null, got array "
                                "[1]"),
    (b'[{"income": NaN}]', 422, "body is not valid JSON: NaN is not a JSON number"),
    (b'[{"income": 1e300}]', 422,
     "record 1: field 'income' is 1e+300, outside the float32 range the model reads"),
    (b'[{}, {}, {}, {}]', 413,
     "body has 4 records; the limit is 3 per request (pyml serve --max-records)"),
    (b"[" + b" " * 400 + b"]", 413,
     "body is 402 bytes; the limit is 400 (pyml serve --max-body-bytes)"),
])
def test_invalid_requests(small: TestClient, body: bytes, status: int, detail: str) -> None:
    response = small.post("/models/default_risk/predict", content=body)
    assert (response.status_code, response.json()) == (status, {"detail": detail})


def test_errors_never_leak_paths_or_tracebacks(small: TestClient, scored: Loans) -> None:
    cases = [
        small.post("/models/nope/predict", content=b"[]"),
        small.get("/models/nope"),
        small.post("/models/default_risk/predict?explain=-1", content=b"[]"),
        small.post("/models/default_risk/predict?explain=x", content=b"[]"),
        small.get("/no/such/route"),
    ]
    assert [(r.status_code, r.json()) for r in cases] == [
        (404, {"detail": "no model 'nope' is served; served models: default_risk, grade, "
                         "loss_amount"}),
        (404, {"detail": "no model 'nope' is served; served models: default_risk, grade, "
                         "loss_amount"}),
        (422, {"detail": "query parameter 'explain' must be an integer from 0 to 1000, "
                         "got \"-1\""}),
        (422, {"detail": "query parameter 'explain' must be an integer from 0 to 1000, "
                         "got \"x\""}),
        (404, {"detail": "Not Found"}),
    ]
    for r in cases:
        assert str(scored.dir) not in r.text and "Traceback" not in r.text


def test_streamed_body_over_the_limit(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"[" + b" " * 300
        yield b" " * 300 + b"]"

    response = small.post("/models/default_risk/predict", content=chunks())
    assert (response.status_code, response.json()) == (
        413, {"detail": "body is over 400 bytes, the limit (pyml serve --max-body-bytes)"})


def test_model_endpoints_and_docs(client: TestClient, scored: Loans) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["refresh_error"] is None
    assert health["models"] == {"default_risk": 1, "grade": 1, "loss_amount": 1}
    listed = client.get("/models").json()["models"]
    assert [(m["name"], m["version"], m["status"], m["task"]) for m in listed] == [
        ("default_risk", 1, "champion", "binary"), ("grade", 1, "champion", "multiclass"),
        ("loss_amount", 1, "champion", "regression")]
    info = client.get("/models/grade").json()
    assert info["key"] == ["loan_id"] and info["target"]["classes"] == ["A", "B", "C"]
    assert [(f["name"], f["json_type"]) for f in info["features"]] == [
        ("region", "string"), ("amount", "number"), ("income", "number"),
        ("term_months", "number")]
    assert info["features"][0]["categories"] == ["east", "north", "south", "west"]
    assert info["outputs"] == ["prediction", "probability", "probability_A", "probability_B",
                               "probability_C"]
    (value,), = scored.sql("select value from ml.metrics where model_name = 'grade' and "
                           "metric = 'log_loss' and split = 'holdout'")
    assert info["metrics"]["holdout"]["log_loss"]["value"] == value
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/models", "/models/{name}", "/models/{name}/predict"} <= set(paths)


@pytest.mark.parametrize("model", ["default_risk", "grade"])
def test_explain_adds_top_k_contributions(scored: Loans, client: TestClient,
                                          model: str) -> None:
    rows = records(scored)[:20]
    top2 = client.post(f"/models/{model}/predict?explain=2", json=rows).json()["predictions"]
    for p in top2:
        contribs = [c["contribution"] for c in p["explanation"]["contributions"]]
        assert len(contribs) == 2 and abs(contribs[0]) >= abs(contribs[1])
    full = client.post(f"/models/{model}/predict?explain=50", json=rows).json()["predictions"]
    for p in full:
        e = p["explanation"]
        assert {c["feature"] for c in e["contributions"]} == set(FEATURES)
        margin = e["bias"] + sum(c["contribution"] for c in e["contributions"])
        if model == "default_risk":  # contributions add up to the log-odds
            assert margin == pytest.approx(math.log(p["probability"] / (1 - p["probability"])),
                                           abs=1e-4)


def test_refresh_picks_up_promotions_without_holding_the_file(scored: Loans,
                                                              client: TestClient) -> None:
    champions = client.app.state.champions  # type: ignore[attr-defined]
    # The server holds no connection: this process can open the file for writing.
    duckdb.connect(str(scored.db)).close()
    scored.describe("default_risk", "v2")  # the same trees, another model: promoted
    scored.ok("train", "default_risk")  # v2, promoted
    champions.poll()
    assert client.get("/health").json()["models"]["default_risk"] == 2
    assert client.post("/models/default_risk/predict", json=[{}]).json()["version"] == 2
    scored.ok("rollback", "default_risk")
    champions.poll()
    assert client.get("/health").json()["models"]["default_risk"] == 1


def test_fields_that_are_neither_features_nor_keys_are_named(scored: Loans,
                                                            client: TestClient) -> None:
    """A misspelt feature is a missing value to the model; the answer names it so a client
    can tell (an audit: "a trap for clients")."""
    row = records(scored)[0]
    sent = {k: v for k, v in row.items() if k != "amount"} | {"amout": row["amount"]}
    body = client.post("/models/default_risk/predict", json=[sent, {}]).json()
    assert body["ignored_fields"] == sorted({"amout", "defaulted", "grade", "loss"} & {*sent})
    exact = {k: row[k] for k in ("loan_id", *FEATURES)}
    assert "ignored_fields" not in client.post("/models/default_risk/predict",
                                               json=[exact]).json()


def test_a_champion_that_kept_its_version_number_is_reloaded(scored: Loans,
                                                             client: TestClient) -> None:
    """Another model under the same version number (a registry rebuilt and copied in, a
    backup restored): the server compared version numbers only and went on serving the old
    booster, labelled v1, for every row (found by an audit)."""
    champions = client.app.state.champions  # type: ignore[attr-defined]
    row = records(scored)[0]
    before = client.post("/models/default_risk/predict", json=[row]).json()
    scored.sql("drop schema ml cascade")  # a registry built anew: v1 again, other trees
    scored.write_schema(SCHEMA_YML.replace(EXCLUDE, EXCLUDE + "            params: "
                                           "{max_depth: 2, eta: 0.3}\n", 1))
    scored.ok("train", "default_risk")
    scored.ok("score", "default_risk")
    champions.poll()
    after = client.post("/models/default_risk/predict", json=[row]).json()
    (expected,), = scored.sql("select probability from ml.default_risk_predictions "
                              "where loan_id = ?", [row["loan_id"]])
    assert before["version"] == after["version"] == 1
    assert after["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-6)
    assert after["predictions"][0]["probability"] != before["predictions"][0]["probability"]


def test_real_uvicorn_process(scored: Loans) -> None:
    scored.describe("default_risk", "v2")  # the same trees, another model: promoted
    scored.ok("train", "default_risk")  # v2 is the champion
    port = free_port()
    env = {**os.environ, DB_ENV: str(scored.db)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "pyml"), "serve", "--port", str(port),
         "--poll-seconds", "3600", "--project-dir", str(scored.dir), "--profiles-dir",
         str(scored.dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=1).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "pyml serve did not come up"
                time.sleep(0.2)
        assert health["models"]["default_risk"] == 2
        row = records(scored)[0]
        response = httpx.post(f"{base}/models/default_risk/predict", json=[row], timeout=5)
        assert response.status_code == 200
        scored.ok("score", "default_risk")  # takes the write lock while the server runs
        (expected,), = scored.sql("select probability from ml.default_risk_predictions "
                                  "where loan_id = ?", [row["loan_id"]])
        assert abs(response.json()["predictions"][0]["probability"] - expected) <= 1e-6
        scored.ok("rollback", "default_risk")
        proc.send_signal(signal.SIGHUP)  # re-read the registry now
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/health", timeout=1).json()["models"]["default_risk"] != 1:
            assert time.monotonic() < deadline, "SIGHUP did not reload the champion"
            time.sleep(0.2)
        body = httpx.post(f"{base}/models/default_risk/predict", json=[row], timeout=5).json()
        assert body["version"] == 1
        assert json.loads(httpx.get(f"{base}/models/default_risk").text)["version"] == 1
    finally:
        stop(proc)


def test_encoding_matches_the_encoder_pyml_score_uses(client: TestClient) -> None:
    import numpy as np
    import pyarrow as pa

    from pyml.serve.app import encode

    served = client.app.state.champions.models["default_risk"]  # type: ignore[attr-defined]
    tricky = [0.1, 1e-45, 3.4e38, -0.0, 16777217, 2**60, 1 / 3, None, 123456.789]
    records = [{"region": region, "amount": x, "income": y, "term_months": z}
               for region, x, y, z in zip(["north", "atlantis", None, "east", "west", "south",
                                           "", "north", "east"], tricky, tricky[::-1],
                                          tricky[3:] + tricky[:3], strict=True)]
    features = served.model.stored.features
    # What DuckDB hands the encoder: DOUBLE (an integer cast to the nearest double) or VARCHAR.
    columns = [pa.array([float(r[f.name]) if isinstance(r[f.name], int) else r[f.name]
                         for r in records],
                        pa.float64() if f.kind == "numeric" else pa.string()) for f in features]
    expected = served.model.encoder.matrix(columns, "test")
    got = encode(served, records)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got, expected, equal_nan=True)


def test_a_port_in_use_or_a_bad_host_is_one_line(scored: Loans) -> None:
    """pyml binds the socket before loading models: one line, exit 1, nothing started."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = scored.pyml("serve", "--port", str(port))
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; pick another "
        "--port, or stop what listens on it"]
    result = scored.pyml("serve", "--host", "999.1.1.1", "--port", str(free_port()))
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: --host 999.1.1.1: not a host name or address to listen on")


def test_port_0_announces_the_port_it_got(scored: Loans) -> None:
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "pyml"), "serve", "--port", "0", "--project-dir",
         str(scored.dir), "--profiles-dir", str(scored.dir)],
        env={**os.environ, DB_ENV: str(scored.db)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("pyml serve: serving default_risk v1"), line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert port > 0
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()[
                    "models"]["default_risk"] == 1
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        stop(proc)
