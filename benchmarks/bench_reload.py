"""Hot reload latency: from a flow file's change on disk to the new output of `timbal run --watch`.

    .venv/bin/python benchmarks/bench_reload.py        # prints a JSON object

`measure()` starts one watcher (a real subprocess) on a five-step echo flow, then edits
the last step's prompt `edits` times, each time timing from just before the write to
the moment the new output line arrives on the watcher's stdout. That covers the file
event, the debounce, re-compiling, the run (four steps reused from the cache, one run)
and printing. Target: median under 300 ms.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TARGET_MS = 300.0
STEPS = 5
WAIT = 20.0  # seconds before a missing output counts as a failure


def _flow(version: int) -> str:
    lines = ["version: 1", "name: reload", "defaults:", "  model: echo", "steps:"]
    for i in range(1, STEPS + 1):
        previous = f" {{{{ s{i - 1}.return }}}}" if i > 1 else ""
        text = f"edit {version}" if i == STEPS else f"step {i}"
        lines += [f"  - id: s{i}", "    memory_id: m", f'    prompt: "{text}{previous}"']
    lines += ["outputs:", f'  response: "{{{{ s{STEPS}.return }}}}"']
    return "\n".join(lines) + "\n"


def _pump(stream: Any, lines: queue.Queue[tuple[float, str]]) -> None:
    for line in stream:
        lines.put((time.perf_counter(), line.rstrip("\n")))


def _next_line(lines: queue.Queue[tuple[float, str]], needle: str) -> float:
    deadline = time.monotonic() + WAIT
    while True:
        stamp, line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if needle in line:
            return stamp


def measure(edits: int = 15, use_cache: bool = True) -> dict[str, Any]:
    """Reload latency in milliseconds (median, p90, best, worst) over `edits` edits."""
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flow.yaml"
        path.write_text(_flow(0), encoding="utf-8")
        command = [sys.executable, "-m", "runner.cli", "run", str(path), "--watch"]
        if not use_cache:
            command.append("--no-cache")
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1, cwd=tmp,
        )
        lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        try:
            _next_line(lines, "edit 0")
            for version in range(1, edits + 1):
                time.sleep(0.15)  # let the watcher settle, as between a user's saves
                text = _flow(version)
                started = time.perf_counter()
                path.write_text(text, encoding="utf-8")
                samples.append((_next_line(lines, f"edit {version}") - started) * 1000)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
    ordered = sorted(samples)
    median = statistics.median(ordered)
    return {
        "reload_median_ms": round(median, 1),
        "reload_p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
        "reload_best_ms": round(ordered[0], 1),
        "reload_worst_ms": round(ordered[-1], 1),
        "edits": len(samples),
        "target_ms": TARGET_MS,
        "meets_target": median < TARGET_MS,
        "cache": use_cache,
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(json.dumps(measure(), indent=2))
