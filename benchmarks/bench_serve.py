"""`timbal serve` under load, beside a bare FastAPI endpoint that returns the same text.

    .venv/bin/python benchmarks/bench_serve.py [--requests N] [--postgres DSN]   # prints JSON

`measure()` starts real server processes on loopback, one at a time, each uvicorn with one
worker, and drives them from this process with aiohttp at 50 concurrent clients:

- **bare**: a FastAPI app with one `POST /run` route that answers the text the echo flow
  answers (`benchmarks/bench_serve.py bare PORT`), the stack's own limit;
- **memory**: `timbal serve` on a one-step echo flow, in-memory saver, `POST /flows/echo/runs`;
- **postgres**: the same flow on the PostgreSQL saver (every run and step saved), when a DSN
  is given.

Figures per side: requests per second, p50 and p99 latency, and the server process's CPU
time per request (user + system, from /proc: unlike the throughput, it does not move when
the client, on the same cores, takes more or less of them). Then the streaming overhead:
one client at a time, the time to the first byte and to the first text chunk of a streamed
reply, `POST /v1/chat/completions` with `"stream": true` against the bare app's
`POST /stream` (sse-starlette, the same chunks). Targets: memory throughput at least half
of bare; streaming time to first byte under 5 ms more than bare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 50
REPLY = "echo (1 message): hello"
FLOW = """version: 1
name: echo
inputs:
  prompt: {type: string}
steps:
  - id: reply
    model: echo
    prompt: "{{ inputs.prompt }}"
"""


def bare_app() -> Any:
    """The baseline: FastAPI with the same answer and no flow behind it."""
    from fastapi import Body, FastAPI
    from sse_starlette import EventSourceResponse

    app = FastAPI()

    @app.post("/run")
    async def run(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
        return {"run_id": uuid.uuid4().hex, "status": "succeeded", "outputs": {"reply": REPLY}}

    @app.post("/stream")
    async def stream() -> EventSourceResponse:
        async def chunks() -> Any:
            for word in REPLY.split(" "):
                yield json.dumps({"choices": [{"index": 0, "delta": {"content": word + " "}}]})
            yield "[DONE]"

        return EventSourceResponse(chunks())

    return app


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(argv: list[str], port: int, cwd: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    import httpx

    log = open(Path(cwd, f"server-{port}.log"), "wb")  # noqa: SIM115 - the process keeps it
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health" if "serve" in argv else f"http://127.0.0.1:{port}/docs",
                      timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.05)  # readiness poll
    proc.kill()
    raise RuntimeError("server not ready within 60 s")


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process `pid` has used, from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _load(url: str, total: int, clients: int) -> dict[str, float]:
    # aiohttp (installed with litellm) drives the load: httpx's async client costs several
    # times more CPU per request, and on a small machine it, not the server, set the pace.
    import aiohttp

    latencies: list[float] = []
    body = {"inputs": {"prompt": "hello"}}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def post() -> tuple[int, str]:
            async with session.post(url, json=body) as response:
                return response.status, await response.text()

        await asyncio.gather(*(post() for _ in range(clients)))  # warm-up: open the connections
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                status, text = await post()
                latencies.append(time.perf_counter() - started)
                if status != 200 or REPLY not in text:
                    raise RuntimeError(f"bad answer {status}: {text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "rps": round(len(ordered) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
    }


def _first_bytes(url: str, body: dict[str, Any], times: int) -> dict[str, float]:
    """Median ms to the first byte and to the first text chunk of a streamed answer."""
    import httpx

    first_byte: list[float] = []
    first_text: list[float] = []
    with httpx.Client(timeout=30) as client:
        for i in range(times + 5):
            started = time.perf_counter()
            with client.stream("POST", url, json=body) as response:
                byte_at = text_at = None
                for chunk in response.iter_raw():
                    now = time.perf_counter()
                    byte_at = byte_at or now
                    if text_at is None and b'"content":"' in chunk.replace(b" ", b"") \
                            and b'"content":""' not in chunk.replace(b" ", b""):
                        text_at = now
                if i >= 5:  # the first few warm the connection and the code paths
                    first_byte.append(((byte_at or started) - started) * 1000)
                    first_text.append(((text_at or byte_at or started) - started) * 1000)
    return {"first_byte_ms": round(statistics.median(first_byte), 2),
            "first_text_ms": round(statistics.median(first_text), 2)}


def measure(requests: int = 2000, postgres_dsn: str | None = None, stream_times: int = 100) -> dict[str, Any]:
    """Throughput and latency per side at CLIENTS concurrent clients, then the streaming
    overhead. See the module's docstring."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               LITELLM_LOCAL_MODEL_COST_MAP="True")
    out: dict[str, Any] = {"clients": CLIENTS, "requests": requests, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "echo.yaml").write_text(FLOW, encoding="utf-8")
        sides: dict[str, tuple[list[str], str]] = {
            "bare": ([sys.executable, str(Path(__file__).resolve()), "bare", "{port}"], "/run"),
            "memory": ([sys.executable, "-m", "runner.cli", "serve", "echo.yaml", "--no-ui", "--port", "{port}"],
                       "/flows/echo/runs"),
        }
        schema = None
        if postgres_dsn:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            saver = f'state_saver: {{type: postgres, dsn: "{{{{ env.BENCH_PG_DSN }}}}", schema: {schema}}}\n'
            Path(tmp, "pg").mkdir()
            Path(tmp, "pg", "echo.yaml").write_text(FLOW + saver, encoding="utf-8")
            env["BENCH_PG_DSN"] = postgres_dsn
            sides["postgres"] = ([sys.executable, "-m", "runner.cli", "serve", "pg/echo.yaml", "--no-ui",
                                  "--port", "{port}"], "/flows/echo/runs")
        try:
            for name, (argv, path) in sides.items():
                port = _free_port()
                proc = _start([a.replace("{port}", str(port)) for a in argv], port, tmp, env)
                try:
                    try:
                        cpu_before = _cpu_seconds(proc.pid)
                        out[name] = asyncio.run(_load(f"http://127.0.0.1:{port}{path}", requests, CLIENTS))
                        cpu_after = _cpu_seconds(proc.pid)
                        if cpu_before is not None and cpu_after is not None:  # the warm-up's requests too
                            out[name]["cpu_us"] = round((cpu_after - cpu_before) / (requests + CLIENTS) * 1e6, 1)
                    except Exception as exc:
                        log = Path(tmp, f"server-{port}.log").read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"{name}: {type(exc).__name__}: {exc}; server log:\n{log}") from exc
                    if name == "bare":
                        out["bare_stream"] = _first_bytes(f"http://127.0.0.1:{port}/stream", {}, stream_times)
                    if name == "memory":
                        body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
                        out["memory_stream"] = _first_bytes(f"http://127.0.0.1:{port}/v1/chat/completions",
                                                            body, stream_times)
                finally:
                    _stop(proc)
        finally:
            if schema and postgres_dsn:
                import psycopg

                with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    out["memory_vs_bare_throughput"] = round(out["memory"]["rps"] / out["bare"]["rps"], 3)
    if "cpu_us" in out["memory"] and "cpu_us" in out["bare"]:
        out["bare_vs_memory_cpu"] = round(out["bare"]["cpu_us"] / out["memory"]["cpu_us"], 3)
    out["stream_first_byte_overhead_ms"] = round(
        out["memory_stream"]["first_byte_ms"] - out["bare_stream"]["first_byte_ms"], 2)
    out["stream_first_text_overhead_ms"] = round(
        out["memory_stream"]["first_text_ms"] - out["bare_stream"]["first_text_ms"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_serve.py")
    parser.add_argument("mode", nargs="?", default="measure", choices=["measure", "bare"])
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--postgres", metavar="DSN", default=os.environ.get("TIMBAL_TEST_POSTGRES_DSN"))
    args = parser.parse_args(argv)
    if args.mode == "bare":
        import uvicorn

        # the keep-alive of `timbal serve`, so both sides keep their connections alike
        uvicorn.run(bare_app(), host="127.0.0.1", port=args.port, log_level="warning", timeout_keep_alive=30)
        return 0
    print(json.dumps(measure(args.requests, args.postgres), indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
