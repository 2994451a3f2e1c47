"""How figures are measured: worker processes per side, interleaved repetitions, medians.

Each repetition of a benchmark runs every job once, each in a fresh process: our side with
this interpreter (the project's venv, `runner` importable), the rivals with their venv's
interpreter. The order of the jobs alternates between repetitions so that neither side
always runs first (warm disk caches, CPU frequency). A figure is the median over the
repetitions; ratios are computed from medians measured in this same invocation.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"


@dataclass(frozen=True)
class Job:
    """One thing to measure once per repetition.

    A worker job runs ``python -m benchmarks.worker SIDE TASK`` with the side's interpreter
    and reads back the figures it writes. A process job (`argv` set) times the whole
    process from the outside instead (start-up figures) and reads its peak memory. In
    `argv`, ``{python}`` is the side's interpreter and ``{bin}`` the folder of its scripts.
    `env` is added to the process's environment; `expect` is text its stdout must hold
    (a process that did not do the work is an error, not a fast figure).
    """

    key: str
    side: str
    task: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    expect: str | None = None
    max_reps: int | None = None
    timeout_s: float = 1800.0


@dataclass
class Outcome:
    """A job's figures over its repetitions: medians of numbers, the last value otherwise."""

    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    samples: int = 0


@dataclass
class Interpreters:
    """The python that runs each side; a side whose interpreter could not be had is an error."""

    ours: str = sys.executable
    rivals: str | None = None
    rivals_error: str | None = None

    def for_side(self, side: str) -> str:
        if side in ("ours", "litellm", "process"):
            return self.ours
        if self.rivals is None:
            raise RuntimeError(f"rivals' venv unavailable: {self.rivals_error}")
        return self.rivals


def child_env() -> dict[str, str]:
    """The environment of every worker: the repo on the path, rival libraries kept quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("TIMBAL_LOG_LEVEL", "WARNING")
    env.setdefault("LITELLM_LOG", "ERROR")
    # No fetch of litellm's remote price list (our adapter sets the same): PyPI is the only network.
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # Bytecode caches as users have them (an installed package is compiled once): a machine
    # that sets PYTHONDONTWRITEBYTECODE would otherwise compile every module of ours, on
    # every start-up, and only ours (the rivals come from wheels, compiled when installed).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _spawn(argv: list[str], job: Job) -> subprocess.CompletedProcess[str]:
    """Run one process of `job` to its end (or its timeout), output captured."""
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**child_env(), **job.env},
        capture_output=True,
        text=True,
        timeout=job.timeout_s,
        stdin=subprocess.DEVNULL,
    )


def spawn_measured(
    argv: list[str], env: dict[str, str] | None = None, timeout_s: float = 1800.0
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run one process to its end (killed after `timeout_s`), output captured; also its wall
    time (s) and peak resident memory (MB), read from the kernel's accounting of that one
    child (`wait4`, as `/usr/bin/time` does), not of all children."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**child_env(), **(env or {})}, stdout=out, stderr=err,
            stdin=subprocess.DEVNULL, text=True,
        )
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return done, wall, peak


def run_once(job: Job, interpreters: Interpreters, log_dir: Path) -> dict[str, Any]:
    """Run `job` once; returns its figures or ``{"error": ...}``. Never raises."""
    try:
        python = interpreters.for_side(job.side)
    except RuntimeError as exc:
        return {"error": str(exc)}
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{job.key}.log"
    if job.argv:
        scripts = str(Path(python).parent)
        argv = [python if a == "{python}" else a.replace("{bin}", scripts) for a in job.argv]
        try:
            proc, wall, peak = spawn_measured(argv, job.env, job.timeout_s)
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        log_path.write_text(f"$ {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {_tail(proc.stderr or proc.stdout, 2)}"}
        if job.expect is not None and job.expect not in proc.stdout:
            return {"error": f"expected {job.expect!r} on stdout, got {_tail(proc.stdout, 2)!r}"}
        return {"wall_ms": wall * 1e3, "peak_mb": peak}
    with tempfile.NamedTemporaryFile(suffix=".json", dir=log_dir, delete=False) as out:
        out_path = Path(out.name)
    argv = [
        python,
        "-m",
        "benchmarks.worker",
        job.side,
        job.task,
        "--params",
        json.dumps(job.params),
        "--out",
        str(out_path),
    ]
    try:
        proc = _spawn(argv, job)
        log_path.write_text(f"$ {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
        try:
            result = json.loads(out_path.read_text() or "null")
        except (OSError, json.JSONDecodeError):
            result = None
        if not isinstance(result, dict):
            return {
                "error": f"worker exit {proc.returncode}: {_tail(proc.stderr or proc.stdout, 2)}"
            }
        if "traceback" in result:
            log_path.write_text(log_path.read_text() + "\n" + result.pop("traceback"))
        return result
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        out_path.unlink(missing_ok=True)


def _merge(samples: list[dict[str, Any]]) -> Outcome:
    good = [s for s in samples if "error" not in s]
    if not good:
        return Outcome(error=samples[-1]["error"] if samples else "not run", samples=0)
    values: dict[str, Any] = {}
    for key in good[-1]:
        column = [s[key] for s in good if key in s]
        numbers = [v for v in column if isinstance(v, (int, float)) and not isinstance(v, bool)]
        values[key] = statistics.median(numbers) if len(numbers) == len(column) else column[-1]
    return Outcome(values=values, samples=len(good))


def run_interleaved(
    jobs: list[Job],
    reps: int,
    interpreters: Interpreters,
    log_dir: Path,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Outcome]:
    """Run every job `reps` times, interleaved (order reversed every other repetition).

    A job that fails is not retried in later repetitions: its error is what it reports.
    """
    samples: dict[str, list[dict[str, Any]]] = {job.key: [] for job in jobs}
    failed: set[str] = set()
    for rep in range(reps):
        order = jobs if rep % 2 == 0 else list(reversed(jobs))
        for job in order:
            if job.key in failed or (job.max_reps is not None and rep >= job.max_reps):
                continue
            result = run_once(job, interpreters, log_dir)
            samples[job.key].append(result)
            if "error" in result:
                failed.add(job.key)
                progress(f"  rep {rep + 1}/{reps} {job.key}: n/a ({result['error'][:160]})")
            else:
                progress(f"  rep {rep + 1}/{reps} {job.key}: {_brief(result)}")
    return {key: _merge(found) for key, found in samples.items()}


def _brief(result: dict[str, Any]) -> str:
    parts = []
    for key, value in list(result.items())[:4]:
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts)


# -- the loopback server -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackServer:
    """Our fake OpenAI-compatible server (`runner.testing.openai_server`) in its own process,
    shared by every side, so that its CPU is not charged to the side being measured."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.error: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LoopbackServer:
        argv = [
            sys.executable,
            "-m",
            "runner.testing.openai_server",
            "--port",
            str(self.port),
            "--latency",
            str(self.latency),
        ]
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            self.error = f"loopback server: {exc}"
            return self
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                self.error = f"loopback server exited: {_tail(out, 2)}"
                return self
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.error = "loopback server did not start in 15 s"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def timbal_command() -> list[str]:
    """Our CLI in this venv: the `timbal` console script, or ``python -m runner.cli``."""
    script = Path(sys.executable).with_name("timbal")
    if script.exists():
        return [str(script)]
    found = shutil.which("timbal")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return [found]
    return [sys.executable, "-m", "runner.cli"]
