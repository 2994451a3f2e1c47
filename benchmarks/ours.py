"""Our side of each benchmark, through the public Python API only (runs in the project's venv).

Everything our side calls is in this module, so an API change is fixed here alone:
`load_flow`, `RunnableFlow.run(inputs, parent_id=, saver=)`, the savers, `compile_file`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from . import flows
from .common import (
    LITELLM_KEY,
    aconverse,
    files_size,
    peak_rss_mb,
    rss_mb,
    sqlite_files,
    sqlite_logical_bytes,
    summarize,
    timed_async,
)


def _saver(kind: str, folder: str | Path) -> tuple[Any, list[str]]:
    """A saver of `kind` in `folder`, and the files it writes (for their size)."""
    from runner import InMemorySaver, JSONLSaver, SQLiteSaver

    if kind == "jsonl":
        path = os.path.join(folder, "state.jsonl")
        return JSONLSaver(path), [path]
    if kind == "sqlite":
        path = os.path.join(folder, "state.db")
        return SQLiteSaver(path), sqlite_files(path)
    if kind == "memory":
        return InMemorySaver(), []
    raise ValueError(f"unknown saver {kind!r}")


def _close(saver: Any) -> None:
    close = getattr(saver, "close", None)
    if close is not None:
        close()


def _answer(result: Any) -> str:
    if result.status != "succeeded":
        raise RuntimeError(f"run {result.run_id} {result.status}: {getattr(result, 'error', '')}")
    return str(result.outputs.get("response", ""))


def _check3(result: Any) -> None:
    answer = _answer(result)
    if not answer.startswith("echo (5 messages): once more"):
        raise RuntimeError(f"unexpected answer {answer!r}")


class _Profile:
    """pyinstrument around the timed part when `params["profile"]` names an output path."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.target = params.get("profile")
        self.profiler: Any = None

    def __enter__(self) -> _Profile:
        if self.target:
            from pyinstrument import Profiler

            self.profiler = Profiler(interval=0.0005, async_mode="enabled")
            self.profiler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.profiler is not None:
            self.profiler.stop()
            target = Path(str(self.target))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.with_suffix(".txt").write_text(
                self.profiler.output_text(unicode=True, show_all=False)
            )
            target.with_suffix(".html").write_text(self.profiler.output_html())


async def _run3_loop(saver_kind: str, params: dict[str, Any]) -> dict[str, Any]:
    from runner import load_flow

    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        flow = load_flow(flows.write(tmp, "bench3", flows.BENCH3))
        saver, _ = _saver(saver_kind, tmp)
        try:
            _check3(await flow.run({"prompt": "hi"}, parent_id=None, saver=saver))

            async def once() -> None:
                await flow.run({"prompt": "hi"}, parent_id=None, saver=saver)

            with _Profile(params):
                seconds = await timed_async(once, params["warmup"], params["runs"])
        finally:
            _close(saver)
    return {"per_run_us": summarize(seconds)["median_us"]}


async def engine3(params: dict[str, Any]) -> dict[str, Any]:
    """The 3-step echo flow, no persistence (the in-memory saver), one run at a time."""
    return await _run3_loop("memory", params)


async def durable3(params: dict[str, Any]) -> dict[str, Any]:
    """The 3-step echo flow with a durable saver (`saver`: jsonl or sqlite), new run each time."""
    return await _run3_loop(params["saver"], params)


async def conversation(params: dict[str, Any]) -> dict[str, Any]:
    """`turns` runs of the one-step chat flow, each the child of the previous one."""
    from runner import load_flow

    kind = params["saver"]
    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        flow = load_flow(flows.write(tmp, "chat", flows.CHAT))
        saver, files = _saver(kind, tmp)
        size = None
        if kind == "jsonl":
            size = lambda: files_size(files)  # noqa: E731
        elif kind == "sqlite":
            size = lambda: sqlite_logical_bytes(files[0])  # noqa: E731
        state: dict[str, Any] = {"parent": None}

        async def turn(k: int) -> str:
            result = await flow.run({"prompt": f"turn {k}"}, parent_id=state["parent"], saver=saver)
            state["parent"] = result.run_id
            return _answer(result)

        try:
            with _Profile(params):
                out = await aconverse(
                    turn, params["turns"], size, params.get("budget_s", float("inf"))
                )
            if files:
                out["file_bytes"] = files_size(files)
        finally:
            _close(saver)
    return out


async def fan20(params: dict[str, Any]) -> dict[str, Any]:
    """20 independent echo steps of `delay` seconds each: wall time of one run."""
    from runner import load_flow

    width, delay = params.get("width", 20), params.get("delay", 0.2)
    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        flow = load_flow(flows.write(tmp, "fan", flows.fan(width, delay)))
        first = await flow.run({"prompt": "hi"})
        if first.status != "succeeded":
            raise RuntimeError(f"run {first.status}")
        seconds = await timed_async(lambda: flow.run({"prompt": "hi"}), 0, params.get("runs", 3))
    return {"wall_ms": summarize(seconds)["median_us"] / 1e3}


async def concurrent(params: dict[str, Any]) -> dict[str, Any]:
    """`runs` concurrent runs of the 3-step flow over litellm against the loopback server."""
    from runner import load_flow

    n = params["runs"]
    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        flow = load_flow(flows.write(tmp, "litellm3", flows.litellm3(params["api_base"])))
        _answer(await flow.run({"prompt": "warm up"}))
        base = rss_mb()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(flow.run({"prompt": f"run {i}"}) for i in range(n)))
        wall = time.perf_counter() - t0
        for result in results:
            _answer(result)
    return {
        "runs_per_s": n / wall,
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
        "base_rss_mb": base,
    }


async def sequential_litellm(params: dict[str, Any]) -> dict[str, Any]:
    """Per-run time of the 3-step flow over litellm, one run at a time."""
    from runner import load_flow

    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        flow = load_flow(flows.write(tmp, "litellm3", flows.litellm3(params["api_base"])))
        _answer(await flow.run({"prompt": "hi"}))
        with _Profile(params):
            seconds = await timed_async(
                lambda: flow.run({"prompt": "hi"}), params["warmup"], params["runs"]
            )
    return {"per_run_us": summarize(seconds)["median_us"]}


def compile_time(params: dict[str, Any]) -> dict[str, Any]:
    """Load and compile flows of 10, 100 and 1,000 steps: `bench_compile.measure` (best of `runs`)."""
    from .bench_compile import measure

    return measure(params["runs"])


def hot_reload(params: dict[str, Any]) -> dict[str, Any]:
    """Hot-reload latency of `timbal run --watch`: `bench_reload.measure` (median over `edits`)."""
    from .bench_reload import measure

    return measure(edits=params["edits"])


def batch_scale(params: dict[str, Any]) -> dict[str, Any]:
    """`timbal batch` throughput, memory and workers: `bench_batch.measure`."""
    from .bench_batch import measure

    return measure(rows=params["rows"], small=params["small"], queue_rows=params["queue_rows"])


def serve(params: dict[str, Any]) -> dict[str, Any]:
    """`timbal serve` under 50 concurrent clients beside bare FastAPI: `bench_serve.measure`."""
    from .bench_serve import measure

    return flat(measure(params["requests"], params.get("postgres"), params["stream_times"]))


def web_page(params: dict[str, Any]) -> dict[str, Any]:
    """The web page's chat turn beside an httpx client, and each page's weight: `bench_ui.measure`."""
    from .bench_ui import measure

    return flat(measure(params["turns"]))


def flat(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as one level, `side.metric` (the harness takes medians of numbers)."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def once(params: dict[str, Any]) -> dict[str, Any]:
    """Load the 3-step flow and run it once (the start-up figure times the whole process)."""
    from runner import load_flow

    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        flow = load_flow(flows.write(tmp, "bench3", flows.BENCH3))
        result = asyncio.run(flow.run({"prompt": "hi"}))
    _check3(result)
    return {"answer": _answer(result)}


async def ttft(params: dict[str, Any]) -> dict[str, Any]:
    """Time to first token: a streamed one-step run on `openai/gpt-4o-mini` (the path `timbal
    run` takes at a terminal: RunnableFlow.run with a listener, its output step streamed),
    beside the same request made directly with httpx on one warm client. Interleaved,
    after a warm-up; medians in ms."""
    import httpx

    from runner import load_flow

    api_base = params["api_base"]
    folder = tempfile.mkdtemp(dir=params.get("tmp"))
    flow = load_flow(flows.write(folder, "one", flows.openai_one(api_base)))
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {LITELLM_KEY}"}

    async def ours() -> float:
        first: list[float] = []

        def listener(event: Any) -> None:
            if event.type == "step_chunk" and not first:
                first.append(time.perf_counter())

        t0 = time.perf_counter()
        result = await flow.run({"prompt": "hi"}, listener=listener, stream=frozenset({"answer"}))
        if _answer_text(result) != "reply to: hi" or not first:
            raise RuntimeError(f"unexpected run: {result.status} {result.outputs}")
        return first[0] - t0

    async def direct(client: httpx.AsyncClient) -> float:
        t0 = time.perf_counter()
        first = None
        async with client.stream(
            "POST", f"{api_base}/chat/completions", json=body, headers=headers
        ) as response:
            async for line in response.aiter_lines():
                if first is None and line.startswith("data:") and "[DONE]" not in line:
                    choices = json.loads(line[5:]).get("choices") or []
                    if any((c.get("delta") or {}).get("content") for c in choices):
                        first = time.perf_counter()
        if first is None:
            raise RuntimeError("the direct call streamed no text")
        return first - t0

    ours_s: list[float] = []
    direct_s: list[float] = []
    async with httpx.AsyncClient() as client:
        for i in range(params["warmup"] + params["runs"]):
            if i % 2:  # alternate which goes first
                ours_t, direct_t = await ours(), await direct(client)
            else:
                direct_t, ours_t = await direct(client), await ours()
            if i >= params["warmup"]:
                ours_s.append(ours_t)
                direct_s.append(direct_t)
    ours_ms = statistics.median(ours_s) * 1e3
    direct_ms = statistics.median(direct_s) * 1e3
    return {"ours_ms": ours_ms, "direct_ms": direct_ms, "overhead_ms": ours_ms - direct_ms}


def _answer_text(result: Any) -> str:
    return str((result.outputs or {}).get("answer", "")) if result.status == "succeeded" else ""


def _items(n: int) -> list[str]:
    return [f"item {i}" for i in range(n)]


async def map_items(params: dict[str, Any]) -> dict[str, Any]:
    """A `map` over `items` items of one echo step, in-memory saver: wall time per item
    (median over `runs` runs, after a warm-up) and the memory the runs added at their peak."""
    from runner import load_flow

    n = params["items"]
    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        flow = load_flow(flows.write(tmp, "map", flows.MAP))
        warm = await flow.run({"items": _items(10)})
        if warm.status != "succeeded" or warm.outputs["each"][9] != "echo (1 message): item 9":
            raise RuntimeError(f"map run {warm.status}: {warm.error}")
        base = rss_mb()
        seconds = await timed_async(lambda: flow.run({"items": _items(n)}), 0, params["runs"])
        peak = peak_rss_mb()
    return {"per_item_us": summarize(seconds)["median_us"] / n, "added_mb": peak - base}


async def gather_items(params: dict[str, Any]) -> dict[str, Any]:
    """The same `items` echo calls as `map_items`, with a plain `asyncio.gather` (no engine,
    no records): wall time per item and the memory added at the peak, measured the same way."""
    from runner.models import ModelRequest, complete

    n = params["items"]

    async def once(count: int) -> list[str]:
        replies = await asyncio.gather(*(
            complete(ModelRequest("echo", [{"role": "user", "content": text}]))
            for text in _items(count)
        ))
        return [reply.text for reply in replies]

    if (await once(10))[9] != "echo (1 message): item 9":
        raise RuntimeError("unexpected echo reply")
    base = rss_mb()
    seconds = await timed_async(lambda: once(n), 0, params["runs"])
    peak = peak_rss_mb()
    return {"per_item_us": summarize(seconds)["median_us"] / n, "added_mb": peak - base}


async def loop_lag(params: dict[str, Any]) -> dict[str, Any]:
    """The event loop's worst lag while `runs` 3-step echo runs write to one durable saver
    (`saver`: sqlite or postgres) at once: a ticker sleeps 1 ms again and again and notes
    how late each wake-up is. `code`: import `runner` from that checkout instead (the
    figure of an earlier version, measured the same way)."""
    import sys

    code = params.get("code")
    if code:
        sys.path.insert(0, str(code))  # before anything imports runner
    import runner

    where = str(Path(runner.__file__).resolve())
    if code and not where.startswith(str(Path(code).resolve())):
        raise RuntimeError(f"runner came from {where}, not from {code}")
    from runner import load_flow

    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        flow = load_flow(flows.write(tmp, "bench3", flows.BENCH3))
        schema = f"bench_lag_{os.getpid()}"
        if params["saver"] == "sqlite":
            from runner import SQLiteSaver

            saver: Any = SQLiteSaver(os.path.join(tmp, "state.db"))
        else:
            from runner import PostgresSaver

            saver = PostgresSaver(params["dsn"], schema=schema)
        try:
            # Warm-up: a first wave of as many runs, not measured, opens the store's connections
            # (PostgreSQL forks a server process for each) and warms the code paths, so the
            # figure is the steady state of saver I/O beside the loop, not connection set-up.
            for warm in await asyncio.gather(
                *(flow.run({"prompt": "hi"}, parent_id=None, saver=saver) for _ in range(params["runs"]))
            ):
                _check3(warm)
            # What start-up made is frozen out of the collector's sight, as `timbal serve` does
            # before serving: a full collection would otherwise walk every module's objects
            # (a pause of tens of ms that has nothing to do with saver I/O).
            gc.collect()
            gc.freeze()
            lags: list[float] = []
            done = asyncio.Event()

            async def ticker() -> None:
                while not done.is_set():
                    start = time.perf_counter()
                    await asyncio.sleep(0.001)
                    lags.append(time.perf_counter() - start - 0.001)

            # The machine's own noise first: the ticker alone, as long as the runs will take.
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(params.get("idle_s", 0.5))
            done.set()
            await tick
            idle, lags = sorted(lags), []
            done.clear()
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)  # the ticker is running before the runs start
            started = time.perf_counter()
            results = await asyncio.gather(
                *(flow.run({"prompt": f"hi {i}"}, parent_id=None, saver=saver) for i in range(params["runs"]))
            )
            wall = time.perf_counter() - started
            done.set()
            await tick
            for result in results:
                _answer(result)
        finally:
            _close(saver)
            if params["saver"] == "postgres":
                import psycopg

                with psycopg.connect(params["dsn"], autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    ordered = sorted(lags)
    return {
        "max_lag_ms": ordered[-1] * 1e3,
        "p99_lag_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
        "ticks": len(ordered),
        "idle_max_lag_ms": idle[-1] * 1e3,
        "wall_s": wall,
    }


TASKS = {
    "ttft": ttft,
    "engine3": engine3,
    "durable3": durable3,
    "conversation": conversation,
    "fan20": fan20,
    "concurrent": concurrent,
    "sequential_litellm": sequential_litellm,
    "compile": compile_time,
    "hot_reload": hot_reload,
    "serve": serve,
    "web_page": web_page,
    "batch": batch_scale,
    "once": once,
    "map_items": map_items,
    "gather_items": gather_items,
    "loop_lag": loop_lag,
}
