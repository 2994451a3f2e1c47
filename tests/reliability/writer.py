"""One writer process of the concurrency test: run a flow RUNS times into one shared store.

    python tests/reliability/writer.py STORE_JSON FLOW WRITER RUNS BARRIER

Each run continues this writer's previous run (its memory grows by one turn a run) and
prints its run id. All writers wait for the BARRIER file, so they write at the same time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reliability.common import Store  # noqa: E402
from runner import load_flow  # noqa: E402


def main() -> None:
    spec, flow_path, writer, runs, barrier = sys.argv[1:6]
    store = Store(**json.loads(spec))
    flow = load_flow(flow_path)
    with store.open() as saver:
        deadline = time.monotonic() + 60
        while not Path(barrier).exists():
            if time.monotonic() > deadline:
                sys.exit("the barrier never opened")
            time.sleep(0.005)
        parent = None
        for i in range(int(runs)):
            result = flow.run_sync({"writer": int(writer), "i": i}, parent_id=parent, saver=saver)
            if result.status != "succeeded":
                sys.exit(f"run {i} of writer {writer}: {result.status}: {result.error}")
            parent = result.run_id
            print(result.run_id, flush=True)


if __name__ == "__main__":
    main()
