"""`timbal batch` at scale: throughput against the ideal, flat memory, two workers against one.

    .venv/bin/python benchmarks/bench_batch.py [--rows 10000] [--queue-rows 2000]   # prints JSON

`measure()` runs the real CLI as subprocesses on a one-step echo flow with
`params: {delay: 0.05}` (each row waits 50 ms, as a model call would):
- **throughput**: `timbal batch --concurrency 200` over `rows` rows; the ideal is
  rows × 50 ms / 200 (every slot always busy, no overhead); the figure is wall / ideal.
  Beside it, what a user would write instead: the same rows through `RunnableFlow.run` in
  a hand-written asyncio.gather (all rows and results in memory, no resume, no order
  kept while running), run as a script the same way.
- **memory**: the batch's peak RSS (`wait4`'s ru_maxrss of that process) at 1,000 rows
  and at `rows` rows; flat means the ratio stays near 1.
- **workers** (PostgreSQL, when `TIMBAL_TEST_POSTGRES_DSN` or the default server answers):
  `queue_rows` rows queued with `--queue`, then drained by one `timbal worker --burst`
  and, in a fresh schema, by two at once (each `--concurrency 50`); the figure is the
  one-worker time over the two-worker time (2 = twice as fast).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .harness import ROOT, child_env, spawn_measured

DELAY = 0.05
CONCURRENCY = 200
WORKER_CONCURRENCY = 50
DSN = os.environ.get("TIMBAL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _flow(folder: Path, saver: str = "") -> Path:
    path = folder / "echo_row.yaml"
    path.write_text(
        "version: 1\nname: echo-row\ninputs: {prompt: {type: string}}\n"
        f"steps:\n  - id: reply\n    model: echo\n    params: {{delay: {DELAY}}}\n"
        '    prompt: "{{ inputs.prompt }}"\n' + saver
    )
    return path


def _data(folder: Path, rows: int) -> Path:
    path = folder / f"rows{rows}.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"id": i, "prompt": f"question number {i}"}) + "\n")
    return path


def _timbal(*args: object) -> list[str]:
    return [sys.executable, "-m", "runner.cli", *map(str, args)]


def _run_measured(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one process."""
    proc, wall, peak = spawn_measured(argv)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[3:])}: exit {proc.returncode}: {proc.stderr[-400:]}")
    return wall, peak, proc.returncode


# What a user would write instead of `timbal batch`: the same runs through the library, in
# an asyncio.gather under a semaphore, reading the rows and writing one JSON line per row.
_BY_HAND = """
import asyncio, json, sys
from runner import InMemorySaver, load_flow

async def main(flow_path, data_path, out_path, concurrency):
    flow = load_flow(flow_path)
    rows = [json.loads(line) for line in open(data_path)]
    limit = asyncio.Semaphore(concurrency)

    async def one(row):
        async with limit:
            result = await flow.run({"prompt": row["prompt"]}, saver=InMemorySaver())
        return {"id": row["id"], "run_id": result.run_id, "status": result.status, "outputs": result.outputs}

    results = await asyncio.gather(*(one(row) for row in rows))
    with open(out_path, "w") as out:
        for line in results:
            out.write(json.dumps(line) + "\\n")

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


def by_hand(folder: Path, rows: int) -> dict[str, float]:
    """The baseline: the same rows through `RunnableFlow.run` in a hand-written gather loop."""
    script = folder / "by_hand.py"
    script.write_text(_BY_HAND)
    out = folder / f"hand{rows}.jsonl"
    wall, rss, _ = _run_measured([sys.executable, str(script), str(_flow(folder)), str(_data(folder, rows)),
                                  str(out), str(CONCURRENCY)])
    return {"wall_s": wall, "peak_rss_mb": rss}


def local_batch(folder: Path, rows: int) -> dict[str, float]:
    """One `timbal batch` of `rows` rows at concurrency 200: wall time, rate, peak memory."""
    flow, data = _flow(folder), _data(folder, rows)
    out = folder / f"out{rows}.jsonl"
    wall, rss, _ = _run_measured(_timbal("batch", flow, "--data", data, "--output", out,
                                         "--concurrency", CONCURRENCY))
    lines = sum(1 for _ in out.open())
    if lines != rows:
        raise RuntimeError(f"{lines} output lines for {rows} rows")
    ideal = rows * DELAY / CONCURRENCY
    return {"wall_s": wall, "ideal_s": ideal, "vs_ideal": wall / ideal, "rows_per_s": rows / wall,
            "peak_rss_mb": rss}


def _postgres_ok() -> str | None:
    try:
        import psycopg

        psycopg.connect(DSN, connect_timeout=3).close()
        return None
    except Exception as exc:  # noqa: BLE001 - any reason the server can't be used
        return f"PostgreSQL at {DSN} is unreachable: {exc}"


def queued_batch(folder: Path, rows: int, workers: int) -> float:
    """Seconds for `workers` burst workers to drain `rows` queued rows (in a fresh schema)."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    saver = f'state_saver: {{type: postgres, dsn: "{DSN}", schema: {schema}}}\n'
    flow = _flow(folder, saver)
    data = _data(folder, rows)
    uri = f"{DSN}{'&' if '?' in DSN else '?'}options=-csearch_path%3D{schema}"
    try:
        subprocess.run(_timbal("batch", flow, "--data", data, "--output", folder / "q.out.jsonl", "--queue"),
                       env=child_env(), cwd=ROOT, check=True, capture_output=True)
        started = time.perf_counter()
        procs = [subprocess.Popen(_timbal("worker", "--saver", uri, "--burst", "--concurrency", WORKER_CONCURRENCY),
                                  env=child_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers)]
        for proc in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"worker exit {proc.returncode}")
        seconds = time.perf_counter() - started
        with psycopg.connect(uri) as conn:
            done = conn.execute("SELECT count(*) FROM timbal_batch_rows WHERE status = 'succeeded'").fetchone()
        if done is None or done[0] != rows:
            raise RuntimeError(f"{done} rows succeeded of {rows}")
        return seconds
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def measure(rows: int = 10_000, small: int = 1_000, queue_rows: int = 2_000) -> dict[str, Any]:
    """Every figure of this benchmark, as one JSON object."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big = local_batch(folder, rows)
        little = local_batch(folder, small)
        hand = by_hand(folder, rows)
        result: dict[str, Any] = {
            "rows": rows, "hand_wall_s": hand["wall_s"], "hand_peak_rss_mb": hand["peak_rss_mb"],
            "vs_hand": big["wall_s"] / hand["wall_s"], "wall_s": big["wall_s"], "ideal_s": big["ideal_s"], "vs_ideal": big["vs_ideal"],
            "rows_per_s": big["rows_per_s"], f"peak_rss_mb@{small}": little["peak_rss_mb"],
            f"peak_rss_mb@{rows}": big["peak_rss_mb"], "rss_growth": big["peak_rss_mb"] / little["peak_rss_mb"],
        }
        problem = _postgres_ok()
        if problem is None:
            one = queued_batch(folder, queue_rows, 1)
            two = queued_batch(folder, queue_rows, 2)
            result.update({"queue_rows": queue_rows, "one_worker_s": one, "two_workers_s": two,
                           "speedup": one / two})
        else:
            result["workers_error"] = problem
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--queue-rows", type=int, default=2_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.rows, min(1_000, args.rows), args.queue_rows), indent=2))
