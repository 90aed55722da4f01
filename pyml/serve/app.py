"""`pyml serve`: the champions behind a small HTTP API (FastAPI under uvicorn).

The pieces: `champions` (the models in memory, refreshed from the registry without holding
the DuckDB file), `codec` (body -> records -> float32 rows by the model's input plan ->
response, as `pyml score` computes it), `batcher` (concurrent requests share one XGBoost
call) and, here, the routes and the ASGI app.

`POST /models/{name}/predict` is answered by `PredictRoute`, a plain ASGI layer in front of
FastAPI's router; FastAPI serves everything else and documents the predict route too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from pyml.errors import UsageError
from pyml.serve.batcher import Batcher
from pyml.serve.champions import Champions, Registry, Served, champion_versions, load_served
from pyml.serve.codec import (
    RequestError,
    encode,
    explain_param,
    explain_rows,
    find_served,
    handle_predict,
    outputs,
    parse_body,
    respond,
)

# The names this module had before it was split, which tests and benchmarks import.
__all__ = ["BODY_TIMEOUT", "MAX_BODY_BYTES", "MAX_RECORDS", "POLL_SECONDS", "Batcher", "Champions",
           "PredictRoute", "Predictor", "RequestError", "Served", "champion_versions",
           "create_app", "encode", "explain_rows", "handle_predict", "load_served", "outputs",
           "parse_body", "respond", "serve"]

MAX_RECORDS = 1000  # records per request
MAX_BODY_BYTES = 1 << 20  # bytes per request body
POLL_SECONDS = 5.0  # how often the registry is re-read for promotions
BODY_TIMEOUT = 10.0  # seconds a request body may take to arrive (then 408)


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


class Predictor:
    """POST /models/{name}/predict from the ASGI request to the response body."""

    def __init__(self, champions: Champions, max_records: int, max_body_bytes: int,
                 body_timeout: float = BODY_TIMEOUT) -> None:
        self.champions = champions
        self.max_records, self.max_body_bytes = max_records, max_body_bytes
        self.body_timeout = body_timeout
        self.batcher = Batcher()

    async def answer(self, name: str, scope: Scope, receive: Receive) -> bytes:
        """The response body; RequestError for a request the client must fix."""
        query = scope.get("query_string", b"")
        explain = explain_param(QueryParams(query).get("explain") if query else None)
        body = await self.read_body(scope, receive)
        served = find_served(self.champions, name)
        records = parse_body(body, self.max_records)
        X = encode(served, records)
        columns = await self.batcher.submit(served, X) if len(X) else outputs(served, X)
        return respond(served, records, columns, X, explain)

    async def read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The body, refused (413) as soon as it is known to exceed the limit, and (408) when
        it has not all arrived within `body_timeout` seconds.

        uvicorn times out idle connections but not a body that stops half way: without the
        deadline a client that sends half a body and waits holds its request open forever.
        The deadline covers the whole body, so a trickle of bytes cannot stretch it either.
        """
        limit = self.max_body_bytes
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise RequestError(413, f"body is {int(value)} bytes; the limit is "
                                            f"{limit} (pyml serve --max-body-bytes)")
                break
        chunks, size, more = [], 0, True
        while more:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), None if math.isinf(left)
                                                 else max(left, 0.0))
            except TimeoutError:
                raise RequestError(408, f"the request body did not arrive within "
                                        f"{self.body_timeout:g} seconds (pyml serve "
                                        "--body-timeout)") from None
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
            if e.status == 408:  # the rest of the body may still come: not on this connection
                response.headers["connection"] = "close"
        except ClientDisconnect:
            return  # nobody left to answer
        await response(scope, receive, send)


def create_app(registry: Path | Registry, *, poll_seconds: float = POLL_SECONDS,
               max_records: int = MAX_RECORDS, max_body_bytes: int = MAX_BODY_BYTES,
               lock_timeout: float = 5.0, body_timeout: float = BODY_TIMEOUT) -> FastAPI:
    """The app, with the champions already loaded (errors surface before serving).

    `registry`: a DuckDB file's path, or a Registry of pyml.serve.champions (SparkRegistry
    on a Spark target)."""
    champions = Champions(registry, lock_timeout)
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
    predictor = Predictor(champions, max_records, max_body_bytes, body_timeout)
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
        return find_served(champions, name).info

    @app.post("/models/{name}/predict", summary="Predict a list of records",
              openapi_extra={"requestBody": PREDICT_BODY, "parameters": PREDICT_PARAMS})
    async def predict(request: Request) -> Response:
        # PredictRoute answers these requests; this route documents them and serves the ones
        # it does not match (a path under a root_path) the same way.
        body = await predictor.answer(str(request.path_params["name"]), request.scope,
                                      request.receive)
        return Response(body, media_type="application/json")

    return app


def serve(registry: Path | Registry, *, host: str = "127.0.0.1", port: int = 8000,
          poll_seconds: float = POLL_SECONDS, max_records: int = MAX_RECORDS,
          max_body_bytes: int = MAX_BODY_BYTES, access_log: bool = False,
          lock_timeout: float = 5.0, body_timeout: float = BODY_TIMEOUT) -> None:
    """Load the champions and serve them until interrupted."""
    import uvicorn

    # pyml binds the socket itself, before loading anything: a port in use or a host that is
    # no address here is one line and exit 1, and --port 0 announces the port it got.
    sock = listening_socket(host, port)
    try:
        app = create_app(registry, poll_seconds=poll_seconds, max_records=max_records,
                         max_body_bytes=max_body_bytes, lock_timeout=lock_timeout,
                         body_timeout=body_timeout)
    except BaseException:
        sock.close()
        raise
    served = ", ".join(f"{n} v{s.model.version}"
                       for n, s in sorted(app.state.champions.models.items()))
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"pyml serve: serving {served or 'no models yet'} on http://{shown}:{bound} "
          f"(docs at /docs; registry re-read every {poll_seconds:g}s and on SIGHUP)",
          file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, access_log=access_log, log_level="info"))
    server.run(sockets=[sock])


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (uvicorn listens on it), or a UsageError saying why
    not: a host that is no address of this machine, a port in use or not allowed."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host}: not a host name or address to listen on "
                         f"({getattr(e, 'strerror', None) or e}); use e.g. 127.0.0.1 or "
                         "0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as e:
        sock.close()
        why = e.strerror or str(e)
        fix = ("pick another --port, or stop what listens on it" if e.errno == errno.EADDRINUSE
               else "use an address of this machine (e.g. 127.0.0.1 or 0.0.0.0)"
               if e.errno == errno.EADDRNOTAVAIL else "pick a port above 1023")
        raise UsageError(f"cannot listen on {host}:{port}: {why}; {fix}") from None
    return sock
