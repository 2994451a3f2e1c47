"""How fast flow files load, compile and validate.

    .venv/bin/python benchmarks/bench_compile.py        # prints a JSON object

`measure()` returns the same numbers as a dict, for `python -m benchmarks`:
milliseconds (best of `runs`) to load and to compile flows of 10, 100 and 1,000
steps, to report the errors of a broken 1,000-step flow, and the wall time of a
`timbal validate` subprocess (which must not import anything heavy).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZES = (10, 100, 1000)


def chain_flow(n: int, broken: bool = False) -> str:
    """A flow of `n` llm steps: each reads the previous one; ten memory ids rotate."""
    lines = [
        "version: 1",
        f"name: chain{n}",
        "inputs:",
        "  prompt: {type: string, description: The first message}",
        "defaults:",
        "  model: echo",
        "  params: {temperature: 0}",
        "steps:",
    ]
    for i in range(n):
        previous = f" {{{{ s{i - 1}.return }}}}" if i else ""
        key = "promt" if broken and i % 10 == 5 else "prompt"  # one typo every ten steps
        lines += [
            f"  - id: s{i}",
            f"    memory_id: m{i % 10}",
            f'    {key}: "{{{{ inputs.prompt }}}}{previous}"',
        ]
    lines += ["outputs:", f'  response: "{{{{ s{n - 1}.return }}}}"']
    return "\n".join(lines) + "\n"


def _best_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm up: imports, the schema, caches
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 2)


def measure(runs: int = 5) -> dict[str, Any]:
    """Load/compile/validate timings in milliseconds (best of `runs`)."""
    from runner.compiler import compile_file
    from runner.errors import FlowError
    from runner.loader import load_document

    def compile_broken(path: Path) -> None:
        try:
            compile_file(path)
        except FlowError:
            pass

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            path = Path(tmp) / f"chain{n}.yaml"
            path.write_text(chain_flow(n), encoding="utf-8")
            out[f"load_ms@{n}"] = _best_ms(lambda p=path: load_document(p), runs)
            out[f"compile_ms@{n}"] = _best_ms(lambda p=path: compile_file(p), runs)
        broken = Path(tmp) / "broken1000.yaml"
        broken.write_text(chain_flow(1000, broken=True), encoding="utf-8")
        out["errors_ms@1000"] = _best_ms(lambda: compile_broken(broken), runs)
        small = Path(tmp) / "chain10.yaml"
        command = [sys.executable, "-m", "runner.cli", "validate", str(small)]
        out["validate_cli_ms"] = _best_ms(
            lambda: subprocess.run(command, check=True, capture_output=True), max(runs // 2, 1)
        )
    return out


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
