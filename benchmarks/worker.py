"""Run one task of one side in this process: ``python -m benchmarks.worker SIDE TASK``.

The harness starts one such process per repetition, with the side's own interpreter (ours:
the project's venv; the rivals: their venv). Parameters come as JSON on ``--params``; the
result (a JSON object of figures, or ``{"error": ...}``) goes to ``--out``, because rival
libraries may print logs on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import sys
import traceback
from typing import Any

SIDES = {
    "ours": "benchmarks.ours",
    "langgraph": "benchmarks.langgraph_side",
    "timbal": "benchmarks.timbal_side",
    "litellm": "benchmarks.litellm_side",
}


def run(side: str, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run `task` of `side`; errors become ``{"error": "Type: message"}``."""
    try:
        module = importlib.import_module(SIDES[side])
        fn = module.TASKS[task]
        result = fn(params)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return result
    except BaseException as exc:  # noqa: BLE001 - the harness reports it and goes on
        last = traceback.extract_tb(exc.__traceback__)[-1:] or None
        where = f" ({last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
        return {"error": f"{type(exc).__name__}: {exc}{where}", "traceback": traceback.format_exc()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("side", choices=sorted(SIDES))
    parser.add_argument("task")
    parser.add_argument("--params", default="{}")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = run(args.side, args.task, json.loads(args.params))
    text = json.dumps(result, default=str)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
