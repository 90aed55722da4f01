"""HTTP serving benchmark: `pyml serve` under load against the in-process floor.

    python -m bench.bench_serve [--project-dir .] [--model churn] [--requests 3000]

Needs a trained model (`make demo` first). In one run it measures:

* the floor: the server's whole predict path (`pyml.serve.app.handle_predict`: JSON decode,
  validation, Arrow columns, encoder, XGBoost, JSON encode) called in a loop in this process
  for the same bodies, with no HTTP;
* a real `pyml serve` (uvicorn on 127.0.0.1, in a child process) under load at concurrency
  1, 8 and 32 with 1-record and 100-record bodies, each run bounded by a request count and a
  time cap: p50/p95/p99 latency, requests/s and requests/s as a ratio of the floor's calls/s,
  and the CPU time the server and the client spent per request;
* writers beside a server: `pyml score MODEL` run --writer-runs times alone, then as often
  while a `pyml serve --poll-seconds 0.2` polls the file (its short read-only opens must not
  hold writers up): median wall time of each and their ratio. tests/test_concurrency.py
  checks that the writers succeed and the server answers throughout; the time is measured
  here.

The client is one keep-alive connection per concurrent worker on raw asyncio streams (uvloop
where installed), sending a prebuilt request and reading the response by its
content-length: ~0.04 ms of CPU per request where an httpx AsyncClient spends ~1.1 ms, as
much as the server. It still runs on the same cores as the server, so its CPU time counts
against the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np

OUT = Path(__file__).resolve().parent / "out"
TARGET_P99_MS = 10.0  # single record, concurrency 8
TARGET_RATIO = 0.5  # HTTP requests/s vs the in-process floor's calls/s


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def sample_records(db: Path, model: str, n: int) -> list[dict[str, Any]]:
    """n rows of the model's feature relation, as the JSON records a client would send."""
    from pyml.engines.duckdb import connect, qualified
    from pyml.store.registry import load_version

    con = connect(db, read_only=True)
    try:
        stored = load_version(con, model)
        schema, name = stored.feature_relation.split(".", 1)
        rel = con.execute(f"select * from {qualified(schema, name)} limit ?", [n])
        cols = [d[0] for d in rel.description]
        return [{c: _jsonable(v) for c, v in zip(cols, row, strict=True)}
                for row in rel.fetchall()]
    finally:
        con.close()


def floor(db: Path, model: str, body: bytes, seconds: float) -> dict[str, float]:
    """Calls/s and per-call latency of the in-process predict path for one body."""
    from pyml.serve.app import Champions, handle_predict

    champions = Champions(db)
    champions.refresh()
    for _ in range(50):
        handle_predict(champions, model, body, 0, 10_000)
    times = []
    started, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        handle_predict(champions, model, body, 0, 10_000)
        times.append(time.perf_counter() - t)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    arr = np.asarray(times) * 1000
    return {"calls": len(times), "calls_per_s": len(times) / wall,
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "cpu_ms": cpu * 1000 / len(times), "load": os.getloadavg()[0]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(project_dir: Path, port: int, poll_seconds: float = 3600
                 ) -> subprocess.Popen[bytes]:
    """`pyml serve` in a child process; returns once /health answers."""
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "pyml"), "serve", "--port", str(port),
         "--poll-seconds", str(poll_seconds), "--project-dir", str(project_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
            return proc
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"pyml serve did not start:\n{err[-3000:]}") from None
            time.sleep(0.2)


def score_seconds(project_dir: Path, model: str, runs: int) -> list[float]:
    """Wall time of each of `runs` runs of `pyml score MODEL` (a writer of the file)."""
    argv = [str(Path(sys.executable).parent / "pyml"), "score", model, "--project-dir",
            str(project_dir)]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"pyml score {model} failed:\n{done.stdout}{done.stderr}")
    return times


def writers_beside_a_server(project_dir: Path, model: str, runs: int) -> dict[str, float]:
    """Median `pyml score` wall time alone and while `pyml serve` polls every 0.2 s."""
    alone = float(np.median(score_seconds(project_dir, model, runs)))
    server = start_server(project_dir, _free_port(), poll_seconds=0.2)
    try:
        served = float(np.median(score_seconds(project_dir, model, runs)))
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {"runs": runs, "alone_s": alone, "beside_server_s": served,
            "ratio": served / alone}


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection; the response's status and body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise SystemExit(f"response without content-length: {head[:200]!r}")
    return int(head.split(b" ", 2)[1]), await reader.readexactly(length)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, path: str, body: bytes, records: int, concurrency: int,
               requests: int, seconds: float, server_pid: int) -> dict[str, float]:
    """`requests` POSTs (or as many as fit in `seconds`) from `concurrency` workers."""
    request = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
               ).encode() + body
    latencies: list[float] = []
    errors = 0

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     deadline: float) -> None:
        nonlocal errors
        while len(latencies) + errors < requests and time.perf_counter() < deadline:
            t = time.perf_counter()
            status, _ = await _exchange(reader, writer, request)
            if status == 200:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1

    connections = [await asyncio.open_connection("127.0.0.1", port)
                   for _ in range(concurrency)]
    try:
        for reader, writer in connections:  # warm-up: connections, caches; check the answer
            for _ in range(max(1, 100 // concurrency)):
                status, answer = await _exchange(reader, writer, request)
                if status != 200 or len(json.loads(answer)["predictions"]) != records:
                    raise SystemExit(f"unexpected response {status}: {answer[:300]!r}")
        server_cpu, client_cpu = _cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker(r, w, started + seconds) for r, w in connections)),
            seconds + 60)
        wall = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_end = _cpu_seconds(server_pid)
    finally:
        for _, writer in connections:
            writer.close()
    done = len(latencies)
    arr = np.asarray(latencies) * 1000
    return {"requests": done, "errors": errors, "seconds": wall, "req_per_s": done / wall,
            "p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)),
            "p99_ms": float(np.percentile(arr, 99)),
            "server_cpu_ms": (server_end - server_cpu) * 1000 / (done + errors)
            if server_cpu is not None and server_end is not None else float("nan"),
            "client_cpu_ms": client_cpu * 1000 / (done + errors)}


def run_async(coro: Any) -> Any:
    """Run a coroutine on uvloop where installed (a leaner client), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def machine() -> str:
    """One line: CPU, cores, Python and library versions."""
    import fastapi
    import msgspec
    import uvicorn
    import xgboost

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, "
            f"msgspec {msgspec.__version__}, uvloop {_uvloop_version()}, "
            f"xgboost {xgboost.__version__}")


def _uvloop_version() -> str:
    try:
        import uvloop
    except ImportError:
        return "not installed"
    return str(uvloop.__version__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project-dir", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--model", default="churn")
    ap.add_argument("--requests", type=int, default=3000, help="per run (1-record bodies)")
    ap.add_argument("--seconds", type=float, default=10.0, help="time cap per run")
    ap.add_argument("--floor-seconds", type=float, default=3.0)
    ap.add_argument("--writer-runs", type=int, default=3,
                    help="`pyml score` runs alone and beside a polling server (0: skip)")
    args = ap.parse_args()
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

    from pyml.dbt.project import load_project
    from pyml.errors import PymlError

    try:
        db = load_project(args.project_dir).db_path
        records = sample_records(db, args.model, 100)
    except PymlError as e:
        raise SystemExit(f"{e} (`make demo` builds and trains the demo)") from None
    load_before = os.getloadavg()[0]
    if len(records) < 100:
        raise SystemExit(f"need 100 rows to build the bodies, the relation has {len(records)}")
    bodies = {1: json.dumps(records[:1]).encode(), 100: json.dumps(records).encode()}
    floors = {n: floor(db, args.model, body, args.floor_seconds) for n, body in bodies.items()}

    port = _free_port()
    server = start_server(args.project_dir, port)
    path = f"/models/{args.model}/predict"
    rows = []
    try:
        for n, body in bodies.items():
            for concurrency in (1, 8, 32):
                budget = args.requests if n == 1 else max(args.requests // 5, 200)
                r = run_async(load(port, path, body, n, concurrency, budget, args.seconds,
                                   server.pid))
                r.update(records=n, concurrency=concurrency, load=os.getloadavg()[0],
                         ratio=r["req_per_s"] / floors[n]["calls_per_s"])
                rows.append(r)
                print(f"{n:>3} record(s), concurrency {concurrency:>2}: "
                      f"{r['req_per_s']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                      f"p95 {r['p95_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                      f"({r['ratio']:.2f}x floor; CPU/request server "
                      f"{r['server_cpu_ms']:.2f} ms, client {r['client_cpu_ms']:.2f} ms; "
                      f"load {r['load']:.2f})", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"\nMachine: {machine()}; 1-minute load average {load_before:.2f} before the "
          f"run, {os.getloadavg()[0]:.2f} after (other processes share these cores)\n")
    print("| records/request | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms "
          "| vs in-process | server CPU ms/req | client CPU ms/req | load avg |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in bodies:
        f = floors[n]
        print(f"| {n} | in-process floor | {f['calls']:,} | {f['calls_per_s']:,.0f} | "
              f"{f['p50_ms']:.2f} | | {f['p99_ms']:.2f} | 1.00x | {f['cpu_ms']:.2f} | | "
              f"{f['load']:.2f} |")
        for r in (r for r in rows if r["records"] == n):
            print(f"| {n} | {r['concurrency']} | {r['requests']:,} | {r['req_per_s']:,.0f} | "
                  f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['ratio']:.2f}x | {r['server_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | "
                  f"{r['load']:.2f} |")
    p99 = next(r["p99_ms"] for r in rows if r["records"] == 1 and r["concurrency"] == 8)
    best = {n: max(r["ratio"] for r in rows if r["records"] == n) for n in bodies}
    print(f"\nsingle-record p99 at concurrency 8: {p99:.2f} ms (target <= {TARGET_P99_MS:g}: "
          f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'})")
    for n, ratio in best.items():
        print(f"best throughput vs in-process, {n}-record bodies: {ratio:.2f}x (target >= "
              f"{TARGET_RATIO:g}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    writers = None
    if args.writer_runs > 0:
        writers = writers_beside_a_server(args.project_dir, args.model, args.writer_runs)
        print(f"`pyml score {args.model}` (median of {args.writer_runs}): "
              f"{writers['alone_s']:.2f} s alone, {writers['beside_server_s']:.2f} s while "
              f"`pyml serve` polls every 0.2 s ({writers['ratio']:.2f}x)")
    OUT.mkdir(exist_ok=True)
    (OUT / "serve.json").write_text(json.dumps({"machine": machine(), "floor": floors,
                                                "http": rows, "writers": writers}, indent=2))


if __name__ == "__main__":
    main()
