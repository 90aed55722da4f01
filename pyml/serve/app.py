"""`pyml serve`: the champions behind a small HTTP API (FastAPI under uvicorn).

Champions are loaded into memory once. The server never keeps the DuckDB file open: every
`poll_seconds` (or on SIGHUP) it opens the file read-only for a moment, reads which version
of each model is the champion, loads the ones that changed and closes it again, so
`pyml score`, `pyml train` and `dbt build` can take the write lock in between.

A request body is a JSON list of records. Each record becomes the float32 input row that
`pyml score` builds from DuckDB for the same values (numbers read as DOUBLE and rounded to
float32, categories coded by the training mapping, NULL or unseen -> NaN), and the outputs
come from `LoadedModel.predict_matrix`, as in `pyml score`; the tests check the two agree on
every row. A missing field or null is a missing value, fields that are not features are
ignored and key columns present are echoed back.

`POST /models/{name}/predict` is answered by `PredictRoute`, a plain ASGI layer in front of
FastAPI's router; FastAPI serves everything else and documents the predict route too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np
import xgboost as xgb
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from pyml.data.encode import F32_MAX
from pyml.engines.duckdb import connect
from pyml.errors import DatabaseLocked, PymlError
from pyml.modelling.model import LoadedModel
from pyml.store.registry import load_version

MAX_RECORDS = 1000  # records per request
MAX_BODY_BYTES = 1 << 20  # bytes per request body
POLL_SECONDS = 5.0  # how often the registry is re-read for promotions
_JSON_TYPES = {str: "string", bool: "boolean", int: "number", float: "number",
               dict: "object", list: "array", type(None): "null"}


class RequestError(Exception):
    """A request the client must fix: HTTP status and one clear line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


NUMBER, BOOLEAN, CATEGORY = 0, 1, 2  # how a feature field is read


@dataclass(frozen=True)
class Served:
    """One champion in memory, with what the endpoints report about it."""

    model: LoadedModel  # booster + encoder
    info: dict[str, Any]  # GET /models/{name}
    # Per feature: (field name, column, NUMBER | BOOLEAN | CATEGORY, value -> category code).
    plan: tuple[tuple[str, int, int, dict[str, float]], ...]
    outputs: tuple[str, ...]  # prediction fields, as the columns of ml.<model>_predictions


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def load_served(con: duckdb.DuckDBPyConnection, name: str, version: int) -> Served:
    """Load one version and describe it (GET /models/{name})."""
    from pyml.store import evaluation
    from pyml.store.lifecycle import statuses

    stored = load_version(con, name, version)
    # One thread per prediction: requests are small and concurrency comes from requests;
    # OpenMP's thread start-up would cost more than the trees.
    stored.booster.set_param({"nthread": 1})
    model = LoadedModel(stored)
    metrics: dict[str, dict[str, Any]] = {}
    for r in evaluation.metrics(con, name, stored.version):
        metrics.setdefault(str(r.pop("split")), {})[str(r.pop("metric"))] = r
    feats = stored.features
    info = {
        "name": name, "version": stored.version,
        "status": statuses(con).get((name, stored.version), "champion"),
        "task": stored.task, "description": stored.description,
        "created_at": stored.created_at.isoformat(),
        "target": {"column": stored.target_column, "type": stored.target.dtype,
                   "classes": list(stored.target.classes)},
        "threshold": stored.threshold if stored.task == "binary" else None,
        "key": list(stored.key),
        "features": [{"name": f.name, "kind": f.kind, "dtype": f.dtype,
                      "json_type": ("boolean" if f.dtype.upper() == "BOOLEAN" else "number")
                      if f.kind == "numeric" else "string",
                      "categories": list(f.categories)} for f in feats],
        "outputs": [c.name for c in model.output_columns()],
        "metrics": metrics,
    }
    plan = tuple(
        (f.name, j, (BOOLEAN if f.dtype.upper() == "BOOLEAN" else NUMBER)
         if f.kind == "numeric" else CATEGORY,
         {c: float(i) for i, c in enumerate(f.categories)})
        for j, f in enumerate(feats))
    return Served(model, info, plan, tuple(info["outputs"]))


def champion_versions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """model name -> the version that serves (its champion, else its latest)."""
    from pyml.store.lifecycle import serving_versions

    return serving_versions(con)


class Champions:
    """The served models, refreshed from the registry without holding the file open."""

    def __init__(self, db_path: Path, lock_timeout: float = 5.0) -> None:
        self.db_path, self.lock_timeout = db_path, lock_timeout
        self.models: dict[str, Served] = {}
        self.refreshed_at: datetime | None = None
        self.refresh_error: str | None = None
        self._lock = threading.Lock()

    def refresh(self, lock_timeout: float | None = None) -> list[str]:
        """Reload champions that changed; returns 'name vN' for each change."""
        with self._lock:
            con = connect(self.db_path, read_only=True,
                          lock_timeout=self.lock_timeout if lock_timeout is None
                          else lock_timeout)
            try:
                wanted = champion_versions(con)
                current = {n: s.model.version for n, s in self.models.items()}
                changed = {n: v for n, v in wanted.items() if current.get(n) != v}
                loaded = {n: load_served(con, n, v) for n, v in changed.items()}
            finally:
                con.close()
            models = {n: s for n, s in self.models.items() if n in wanted}
            models.update(loaded)
            self.models = models  # one assignment: requests see the old or the new dict
            self.refreshed_at = datetime.now().replace(microsecond=0)
            self.refresh_error = None
            return [f"{n} v{v}" for n, v in sorted(changed.items())]

    def poll(self) -> None:
        """One background refresh; failures keep the current models and are reported."""
        try:
            changes = self.refresh(lock_timeout=0.5)
        except DatabaseLocked:
            # A writer (pyml score, dbt build) holds the file: try again next time.
            self.refresh_error = "database busy: another process is writing; retrying"
            return
        except PymlError as e:
            self.refresh_error = "cannot read the registry; see the server log"
            print(f"pyml serve: refresh failed: {e}", file=sys.stderr)
            return
        for change in changes:
            print(f"pyml serve: now serving {change}", file=sys.stderr)


def parse_body(body: bytes, max_records: int) -> list[dict[str, Any]]:
    """The JSON list of records, or a RequestError saying what is wrong with it."""
    try:
        # msgspec decodes 3x faster than the stdlib (77 KB, 100 records: 0.18 vs 0.52 ms) to
        # the same values (floats bit for bit, big integers exact). What it refuses goes to
        # the stdlib, which accepts a few things msgspec does not (a BOM, UTF-16, 1e400, lone
        # surrogates) and whose messages are the ones clients get.
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # bad UTF-8 in a string: the latter
        data = _stdlib_loads(body)
    except RecursionError:  # both parsers recurse per nesting level; records are flat
        raise RequestError(422, "body is nested too deeply to be a list of records") from None
    if not isinstance(data, list):
        raise RequestError(422, "body must be a JSON list of records (objects), got "
                                f"{_type_name(data)}")
    if len(data) > max_records:
        raise RequestError(413, f"body has {len(data)} records; the limit is {max_records} "
                                "per request (pyml serve --max-records)")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise RequestError(422, f"record {i} must be a JSON object of field: value, "
                                    f"got {_type_name(rec)}")
    return data


def _stdlib_loads(body: bytes) -> Any:
    def no_constants(token: str) -> Any:
        raise ValueError(f"{token} is not a JSON number")

    try:
        return json.loads(body, parse_constant=no_constants)
    except UnicodeDecodeError:
        raise RequestError(422, "body is not UTF-8 encoded JSON") from None
    except RecursionError:
        raise RequestError(422, "body is nested too deeply to be a list of records") from None
    except json.JSONDecodeError as e:
        raise RequestError(422, f"body is not valid JSON: {e.msg} at line {e.lineno} "
                                f"column {e.colno}") from None
    except ValueError as e:
        raise RequestError(422, f"body is not valid JSON: {e}") from None


def encode(served: Served, records: list[dict[str, Any]]) -> np.ndarray:
    """The float32 input rows of validated records, as `pyml score` builds them from DuckDB.

    Numbers are read as DOUBLE and rounded to float32 (true/false as 1/0 for BOOLEAN
    features), a category becomes its code in the training mapping, and a null, an absent
    field or an unseen category is NaN: the rules of `pyml.data.encode.Encoder` and of the SQL
    that `pyml score` runs. Rows are built as lists and converted once, which for the
    small bodies a server sees costs a fraction of one Arrow column per feature.
    """
    width = len(served.plan)
    nan = math.nan
    rows = []
    for i, rec in enumerate(records):
        row = [nan] * width
        for name, j, how, codes in served.plan:
            v = rec.get(name)
            if v is None:
                continue
            t = type(v)
            if how == CATEGORY:
                if t is not str:
                    raise RequestError(422, f"record {i}: field '{name}' must be a string "
                                            f"(a category) or null, got {_type_name(v)} "
                                            f"{_show(v)}")
                row[j] = codes.get(v, nan)
            elif t is float or t is int or (t is bool and how == BOOLEAN):
                try:
                    x = float(v)
                except OverflowError:
                    x = math.inf
                if not abs(x) <= F32_MAX:
                    raise RequestError(422, f"record {i}: field '{name}' is {_show(v)}, "
                                            "outside the float32 range the model reads")
                row[j] = x
            else:
                want = "true, false, a number" if how == BOOLEAN else "a number"
                raise RequestError(422, f"record {i}: field '{name}' must be {want} or null, "
                                        f"got {_type_name(v)} {_show(v)}")
        rows.append(row)
    # DOUBLE -> float32 in one cast, rounding to nearest as numpy and XGBoost do.
    return np.array(rows, dtype=np.float64).astype(np.float32).reshape(len(rows), width)


def outputs(served: Served, X: np.ndarray) -> list[list[Any]]:
    """One list per output field (LoadedModel.predict_matrix, as `pyml score` uses)."""
    if len(X) == 0:
        return [[] for _ in served.outputs]
    return [a.to_pylist() for a in served.model.predict_matrix(X)]


def respond(served: Served, records: list[dict[str, Any]], columns: list[list[Any]],
            X: np.ndarray, explain: int) -> bytes:
    """The response body: key fields sent, then the prediction fields, in input order."""
    keys = served.model.stored.key
    names = served.outputs
    predictions = []
    for i, rec in enumerate(records):
        row = {k: rec[k] for k in keys if k in rec}
        for name, values in zip(names, columns, strict=True):
            row[name] = values[i]
        predictions.append(row)
    if explain and len(X):
        for row, contrib in zip(predictions, explain_rows(served.model, X, explain),
                                strict=True):
            row["explanation"] = contrib
    body = {"model": served.model.name, "version": served.model.version,
            "predictions": predictions}
    try:
        # 8x faster than json.dumps for 100 predictions (0.012 vs 0.099 ms). A key field
        # that is not valid UTF-8 (a lone surrogate the client sent) goes through the stdlib,
        # which escapes it, as before.
        return msgspec.json.encode(body)
    except UnicodeEncodeError:
        return json.dumps(body).encode()


def explain_rows(model: LoadedModel, X: np.ndarray, k: int) -> Iterator[dict[str, Any]]:
    """Top-k SHAP contributions (XGBoost pred_contribs, in margin units) of each row."""
    booster = model.stored.booster
    dm = xgb.DMatrix(X, feature_names=booster.feature_names,
                     feature_types=booster.feature_types, enable_categorical=True)
    contribs = np.asarray(booster.predict(dm, pred_contribs=True), dtype=np.float64)
    if contribs.ndim == 3:  # multiclass: (rows, classes, features + 1); explain the argmax
        chosen = np.asarray(booster.inplace_predict(X)).argmax(axis=1)
        contribs = contribs[np.arange(len(X)), chosen]
    names = model.feature_names
    for row in contribs:
        top = np.argsort(-np.abs(row[:-1]), kind="stable")[:k]
        yield {"bias": float(row[-1]),
               "contributions": [{"feature": names[j], "contribution": float(row[j])}
                                 for j in top]}


def _served(champions: Champions, name: str) -> Served:
    served = champions.models.get(name)
    if served is None:
        known = ", ".join(sorted(champions.models)) or "none"
        raise RequestError(404, f"no model '{name}' is served; served models: {known}")
    return served


def handle_predict(champions: Champions, name: str, body: bytes, explain: int,
                   max_records: int) -> bytes:
    """One predict request from body bytes to response bytes, without HTTP (the floor the
    benchmark compares the server with; the server runs the same steps, batched)."""
    served = _served(champions, name)
    records = parse_body(body, max_records)
    X = encode(served, records)
    return respond(served, records, outputs(served, X), X, explain)


class Batcher:
    """Runs the rows of requests that arrive together through XGBoost in one call.

    XGBoost's fixed cost per call (~0.2 ms) dwarfs a single row's trees. A request queues
    its encoded rows and waits; the batch runs on the event loop's next turn, after every
    request already received has been parsed and queued, so concurrent requests share one
    call while a lone request waits for nothing.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Served, np.ndarray, asyncio.Future[list[list[Any]]]]] = []
        self._scheduled = False

    def submit(self, served: Served, X: np.ndarray) -> asyncio.Future[list[list[Any]]]:
        """A future of the output columns of these rows."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[Any]]] = loop.create_future()
        self._pending.append((served, X, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._run)
        return future

    def _run(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        groups: dict[int, list[tuple[Served, np.ndarray, asyncio.Future[list[list[Any]]]]]] = {}
        for item in pending:  # by model version: a refresh may land between requests
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            try:
                X = items[0][1] if len(items) == 1 else np.concatenate([x for _, x, _ in items])
                columns = outputs(items[0][0], X)
            except Exception as e:  # reaches each waiting request's error handler
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for _, x, future in items:
                if not future.done():
                    future.set_result([c[start:start + len(x)] for c in columns])
                start += len(x)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


PREDICT_BODY = {
    "required": True,
    "content": {"application/json": {
        "schema": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "example": [{"customer_id": 1, "plan_code": "pro", "tenure_days": 120}],
    }},
    "description": "A JSON list of records: feature fields by name (a missing field or null "
                   "is a missing value); key fields are echoed back; other fields are "
                   "ignored.",
}


PREDICT_PARAMS = [
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "model name"},
    {"name": "explain", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0},
     "description": "add each record's top-K SHAP contributions (margin units)"},
]


def explain_param(raw: str | None) -> int:
    """The `explain` query parameter: an integer from 0 to 1000."""
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or int(raw) > 1000:
        raise RequestError(422, f"query parameter 'explain' must be an integer from 0 to 1000, "
                                f"got {_show(raw)}")
    return int(raw)


class Predictor:
    """POST /models/{name}/predict from the ASGI request to the response body."""

    def __init__(self, champions: Champions, max_records: int, max_body_bytes: int) -> None:
        self.champions = champions
        self.max_records, self.max_body_bytes = max_records, max_body_bytes
        self.batcher = Batcher()

    async def answer(self, name: str, scope: Scope, receive: Receive) -> bytes:
        """The response body; RequestError for a request the client must fix."""
        query = scope.get("query_string", b"")
        explain = explain_param(QueryParams(query).get("explain") if query else None)
        body = await self.read_body(scope, receive)
        served = _served(self.champions, name)
        records = parse_body(body, self.max_records)
        X = encode(served, records)
        columns = await self.batcher.submit(served, X) if len(X) else outputs(served, X)
        return respond(served, records, columns, X, explain)

    async def read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The body, refused (413) as soon as it is known to exceed the limit."""
        limit = self.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise RequestError(413, f"body is {int(value)} bytes; the limit is "
                                            f"{limit} (pyml serve --max-body-bytes)")
                break
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body is over {limit} bytes, the limit "
                                        "(pyml serve --max-body-bytes)")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _predict_route_name(scope: Scope) -> str | None:
    """The model name of a POST /models/{name}/predict request, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts = scope["path"].split("/")
    if len(parts) == 4 and not parts[0] and parts[1] == "models" and parts[2] \
            and parts[3] == "predict":
        return str(parts[2])
    return None


class PredictRoute:
    """Answers POST /models/{name}/predict before FastAPI's router and Request see it.

    Per request they cost more than a record's share of a batched XGBoost call: with them the
    server spent a median 0.24 ms of CPU per 1-record request at concurrency 8, without them
    0.17 ms (0.21 and 0.10 ms at concurrency 32; docs/benchmarks.md, "HTTP serving").
    Responses are the same: a RequestError becomes its status and {"detail": message},
    anything else goes on to the app's 500 handler, and every other request to the app.
    """

    def __init__(self, app: ASGIApp, predictor: Predictor) -> None:
        self.app, self.predictor = app, predictor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = _predict_route_name(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        try:
            response: Response = Response(await self.predictor.answer(name, scope, receive),
                                          media_type="application/json")
        except RequestError as e:
            response = _error(e.status, e.message)
        except ClientDisconnect:
            return  # nobody left to answer
        await response(scope, receive, send)


def create_app(db_path: Path, *, poll_seconds: float = POLL_SECONDS,
               max_records: int = MAX_RECORDS, max_body_bytes: int = MAX_BODY_BYTES,
               lock_timeout: float = 5.0) -> FastAPI:
    """The app, with the champions already loaded (errors surface before serving)."""
    champions = Champions(db_path, lock_timeout)
    champions.refresh()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop, wake = threading.Event(), threading.Event()

        def loop() -> None:
            while not stop.is_set():
                wake.wait(poll_seconds)
                wake.clear()
                if not stop.is_set():
                    champions.poll()

        thread = threading.Thread(target=loop, name="pyml-serve-poll", daemon=True)
        thread.start()
        hup = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError,
                                 AttributeError):  # no SIGHUP (Windows) or not main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, wake.set)
            hup = True
        try:
            yield
        finally:
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            stop.set()
            wake.set()
            thread.join(timeout=5)

    app = FastAPI(title="pyml", lifespan=lifespan,
                  description="Predictions from the champion version of each pyml model.")
    app.state.champions = champions
    predictor = Predictor(champions, max_records, max_body_bytes)
    app.add_middleware(PredictRoute, predictor=predictor)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        where = where.replace("query.", "query parameter '") + "'" if where else "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Logged here with its traceback; the client gets no traceback and no path.
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        return _error(500, "internal error while predicting; see the server log")

    @app.get("/health", summary="Liveness and what is served")
    def health() -> dict[str, Any]:
        return {"status": "ok",
                "models": {n: s.model.version for n, s in sorted(champions.models.items())},
                "refreshed_at": champions.refreshed_at.isoformat()
                if champions.refreshed_at else None,
                "refresh_error": champions.refresh_error}

    @app.get("/models", summary="Served models")
    def list_models() -> dict[str, Any]:
        return {"models": [{k: s.info[k] for k in ("name", "version", "status", "task",
                                                     "description", "created_at")}
                           for _, s in sorted(champions.models.items())]}

    @app.get("/models/{name}", summary="One model: version, input schema, metrics")
    def get_model(name: str) -> dict[str, Any]:
        served = champions.models.get(name)
        if served is None:
            known = ", ".join(sorted(champions.models)) or "none"
            raise RequestError(404, f"no model '{name}' is served; served models: {known}")
        return served.info

    @app.post("/models/{name}/predict", summary="Predict a list of records",
              openapi_extra={"requestBody": PREDICT_BODY, "parameters": PREDICT_PARAMS})
    async def predict(request: Request) -> Response:
        # PredictRoute answers these requests; this route documents them and serves the ones
        # it does not match (a path under a root_path) the same way.
        body = await predictor.answer(str(request.path_params["name"]), request.scope,
                                      request.receive)
        return Response(body, media_type="application/json")

    return app


def serve(db_path: Path, *, host: str = "127.0.0.1", port: int = 8000,
          poll_seconds: float = POLL_SECONDS, max_records: int = MAX_RECORDS,
          max_body_bytes: int = MAX_BODY_BYTES, access_log: bool = False,
          lock_timeout: float = 5.0) -> None:
    """Load the champions and serve them until interrupted."""
    import uvicorn

    app = create_app(db_path, poll_seconds=poll_seconds, max_records=max_records,
                     max_body_bytes=max_body_bytes, lock_timeout=lock_timeout)
    served = ", ".join(f"{n} v{s.model.version}"
                       for n, s in sorted(app.state.champions.models.items()))
    print(f"pyml serve: serving {served or 'no models yet'} on http://{host}:{port} "
          f"(docs at /docs; registry re-read every {poll_seconds:g}s and on SIGHUP)",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")

