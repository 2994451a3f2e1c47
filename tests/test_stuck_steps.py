"""Python steps and tools that never return (SPEC §1 python `timeout`, §4 signals).

- `timeout:` fails a python step (or a python tool's call) that runs longer;
- a stuck sync step never keeps the process alive: one Ctrl-C (or SIGTERM) records the
  run `interrupted` and the process exits 130;
- a step that blocks the event loop itself: a second Ctrl-C or SIGTERM ends the process.

Real processes and real signals; the steps tell the test they started through a file.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import WAIT, LiveProcess, start_timbal, timbal, wait_until, write

from runner import JSONLSaver, load_flow

STUCK_PY = '''
import asyncio
import pathlib
import threading
import time


def _started(name):
    pathlib.Path(__file__).with_name(name + ".started").write_text("yes")


def stuck_sync():
    _started("sync")
    threading.Event().wait()  # never set


async def stuck_loop():
    _started("loop")
    while True:  # blocks the event loop itself: no await ever
        time.sleep(0.05)


async def stuck_async():
    _started("async")
    await asyncio.Event().wait()


def lookup(city: str) -> str:
    """Look a city up (never answers)."""
    _started("tool")
    threading.Event().wait()
    return city
'''


def stuck_flow(folder: Path, function: str, extra: str = "") -> Path:
    write(folder / "stuck.py", STUCK_PY)
    return write(folder / "stuck.yaml", f"""
        version: 1
        name: stuck
        steps:
          - id: first
            type: template
            text: before
          - id: hang
            type: python
            function: stuck:{function}
            args: {{}}
            {extra}
        state_saver: {{type: jsonl, path: state.jsonl}}
        """)


@pytest.fixture(autouse=True)
def no_stray_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Kill what a failed test leaves running (a stuck step would hold it for ever)."""
    import testkit

    started: list[subprocess.Popen[str]] = []
    real_start = testkit.start_timbal

    def start(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        started.append(real_start(*args, **kwargs))  # type: ignore[arg-type]
        return started[-1]

    monkeypatch.setitem(globals(), "start_timbal", start)
    yield
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for_file(path: Path, proc: subprocess.Popen[str]) -> None:
    def appeared() -> bool:
        assert proc.poll() is None, proc.communicate()
        return path.exists()

    wait_until(appeared, what=f"{path.name} to appear")


def saved_run(folder: Path) -> dict[str, object]:
    with JSONLSaver(folder / "state.jsonl") as saver:
        (run,) = saver.list_runs()
        return {"status": run.status, "steps": {s.step_id: s.status for s in saver.get_run(run.run_id).steps}}


@pytest.mark.parametrize("function", ["stuck_sync", "stuck_async"])
def test_a_python_step_past_its_timeout_fails_the_run(tmp_path: Path, function: str) -> None:
    flow = stuck_flow(tmp_path, function, "timeout: 0.3")
    proc = timbal("run", str(flow), "--json", timeout=WAIT * 2)
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "failed"
    assert "step 'hang' failed: timed out after 0.3 s" in result["error"]
    assert saved_run(tmp_path)["steps"] == {"first": "succeeded", "hang": "failed"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_ends_a_run_stuck_in_a_sync_python_step(tmp_path: Path, sig: signal.Signals) -> None:
    flow = stuck_flow(tmp_path, "stuck_sync")
    proc = start_timbal("run", str(flow))
    wait_for_file(tmp_path / "sync.started", proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert saved_run(tmp_path)["status"] == "interrupted"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_ends_a_process_whose_step_blocks_the_event_loop(
    tmp_path: Path, sig: signal.Signals
) -> None:
    flow = stuck_flow(tmp_path, "stuck_loop")
    live = LiveProcess("run", str(flow))
    try:
        wait_for_file(tmp_path / "loop.started", live.proc)
        live.proc.send_signal(sig)  # the loop is blocked: the run cannot act on this one
        live.stderr_until("again stops at once")
        live.proc.send_signal(sig)
        assert live.proc.wait(timeout=WAIT) == 130, live.stderr_text()
        live.stderr_until("--resume")
        assert "Traceback" not in live.stderr_text()
    finally:
        live.close()
    assert saved_run(tmp_path)["status"] == "interrupted"


def test_a_python_tool_past_its_timeout_is_an_error_the_model_sees(tmp_path: Path) -> None:
    write(tmp_path / "stuck.py", STUCK_PY)
    flow = write(tmp_path / "agent.yaml", """
        version: 1
        name: agent
        steps:
          - id: agent
            type: agent
            model: echo
            prompt: 'call lookup {"city": "Paris"}'
            tools: [{python: stuck:lookup, timeout: 0.3}]
        """)
    result = load_flow(flow).run_sync()
    assert result.status == "succeeded", result.error
    (trace,) = result.steps["agent"].usage["tool_trace"]
    assert trace["status"] == "error" and "timed out after 0.3 s" in trace["error"]
    assert "timed out" in result.outputs["agent"]
