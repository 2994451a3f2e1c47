"""Flows, subprocess drivers and state checks shared by the reliability tests.

A "counted" flow is a chain of python steps (and echo llm steps sharing one memory):
every python step appends `RUN_ID STEP` to `calls.log` next to the flow each time it
runs, so a test can prove that a step saved as succeeded never runs again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit import POSTGRES_DSN

# Appends one line per call with a single O_APPEND write: a SIGKILL never tears it.
WORK_MODULE = '''
import os, random, time
from pathlib import Path

LOG = Path(__file__).with_name("calls.log")


def tick(name, run, pause=0.02, after=None):
    """Sleep a little, note the call, return a value that names the step (`after` orders it)."""
    time.sleep(random.uniform(0, pause))
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{run} {name}\\n".encode())
    finally:
        os.close(fd)
    return f"{name}-done"
'''

# s1 -> chat1 -> s2 -> chat2 -> s4, and s3 beside chat1/s2 (two branches at once).
COUNTED_FLOW = """\
version: 1
name: counted
inputs:
  tag: {type: string, default: t}
steps:
  - id: s1
    type: python
    function: work:tick
    args: {name: s1, run: "{{ run.id }}", pause: PAUSE}
  - id: chat1
    model: echo
    memory_id: m
    prompt: "first {{ s1.return }} {{ inputs.tag }}"
    params: {delay: PAUSE}
  - id: s2
    type: python
    function: work:tick
    args: {name: s2, run: "{{ run.id }}", after: "{{ chat1.return }}", pause: PAUSE}
  - id: s3
    type: python
    function: work:tick
    args: {name: s3, run: "{{ run.id }}", after: "{{ s1.return }}", pause: PAUSE}
  - id: chat2
    model: echo
    memory_id: m
    prompt: "second {{ s2.return }} {{ s3.return }}"
    params: {delay: PAUSE}
  - id: s4
    type: python
    function: work:tick
    args: {name: s4, run: "{{ run.id }}", after: "{{ chat2.return }}", pause: PAUSE}
outputs:
  answer: "{{ chat2.return }}"
"""
PYTHON_STEPS = ("s1", "s2", "s3", "s4")
ALL_STEPS = ("s1", "chat1", "s2", "s3", "chat2", "s4")
EXPECTED_MEMORY = [
    ("user", "first s1-done TAG"),
    ("assistant", "echo (1 message): first s1-done TAG"),
    ("user", "second s2-done s3-done"),
    ("assistant", "echo (3 messages): second s2-done s3-done"),
]


def write_counted_flow(folder: Path, pause: float = 0.02) -> Path:
    """The counted flow and its `work.py` in `folder`; returns the flow file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "work.py").write_text(WORK_MODULE, encoding="utf-8")
    flow = folder / "counted.yaml"
    flow.write_text(COUNTED_FLOW.replace("PAUSE", repr(pause)), encoding="utf-8")
    return flow


def calls(folder: Path) -> Counter[tuple[str, str]]:
    """How many times each (run id, step) ran, from `calls.log`."""
    log = folder / "calls.log"
    if not log.exists():
        return Counter()
    out: Counter[tuple[str, str]] = Counter()
    for line in log.read_text(encoding="utf-8").splitlines():
        run_id, step = line.split()
        out[(run_id, step)] += 1
    return out


def log_lines(folder: Path) -> int:
    try:
        return (folder / "calls.log").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# -- stores -----------------------------------------------------------------------------
@dataclass
class Store:
    """One durable store under test: a --saver URI, and how to open it from Python."""

    kind: str
    uri: str
    schema: str | None = None

    def open(self) -> Any:
        from runner.savers import PostgresSaver, saver_from_uri

        if self.kind == "postgres":
            return PostgresSaver(POSTGRES_DSN, schema=self.schema, min_size=0, max_size=2)
        return saver_from_uri(self.uri)


def make_store(kind: str, folder: Path) -> Store:
    """A fresh store of `kind` (jsonl, sqlite: a file in `folder`; postgres: a new schema)."""
    if kind == "jsonl":
        return Store(kind, f"jsonl:{folder / 'state.jsonl'}")
    if kind == "sqlite":
        return Store(kind, f"sqlite:{folder / 'state.db'}")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_DSN else "?"
    return Store(kind, f"{POSTGRES_DSN}{sep}options=-csearch_path%3D{schema}", schema)


def drop_store(store: Store) -> None:
    if store.kind == "postgres" and store.schema:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{store.schema}" CASCADE')


# -- processes --------------------------------------------------------------------------
def wait_for_lines(folder: Path, count: int, proc: subprocess.Popen[str], limit: float = 60) -> bool:
    """Wait until `calls.log` has `count` lines; False if the process ended first."""
    deadline = time.monotonic() + limit
    while log_lines(folder) < count:
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"calls.log never reached {count} lines")
        time.sleep(0.002)
    return True


def kill(proc: subprocess.Popen[str], sig: int = signal.SIGKILL,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Send `sig` to the process (our own child, by pid), wait for it; its exit and output."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# -- state checks -----------------------------------------------------------------------
def open_quietly(store: Store) -> tuple[Any, list[str]]:
    """Open the store, returning the warnings it gave (a torn JSONL tail warns)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saver = store.open()
        saver.list_runs()
    return saver, [str(w.message) for w in caught]


def check_readable(store: Store, saver: Any) -> list[Any]:
    """Every run and every step record reads back whole; the runs (with steps)."""
    from runner.status import RUN_STATUSES, STEP_STATUSES

    runs = []
    for brief in saver.list_runs():
        run = saver.get_run(brief.run_id)
        assert run.status in RUN_STATUSES, run.status
        for step in run.steps:
            assert step.status in STEP_STATUSES, step
            assert step.step_id in ALL_STEPS, step.step_id
            if step.status == "succeeded":
                assert step.ended_at is not None and step.attempts >= 1, step
        runs.append(run)
    return runs


def jsonl_bad_lines(path: Path) -> int:
    """Lines of the JSONL file that are not JSON (torn by a kill), counting an unfinished tail."""
    import json

    bad = 0
    for line in path.read_bytes().splitlines():
        try:
            json.loads(line)
        except ValueError:
            bad += 1
    return bad
