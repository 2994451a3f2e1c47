"""The rivals' own venv (benchmarks/.work/rivals-venv), created and kept up to date here.

The rivals are never installed into the project's venv: the PyPI `timbal` package brings
its own pins (and may one day ship a `timbal` script that would shadow ours). This venv is
built from the same base interpreter as ours, so both sides run on the same Python.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .harness import WORK

VENV = WORK / "rivals-venv"
REQUIREMENTS = Path(__file__).with_name("rivals-requirements.txt")


def requirements() -> list[str]:
    """The rivals' packages, plus litellm at the version our venv runs (same client both sides)."""
    lines = [line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    reqs = [line for line in lines if line]
    try:
        reqs.append(f"litellm=={version('litellm')}")
    except PackageNotFoundError:
        reqs.append("litellm")
    return reqs


def python() -> Path:
    """The rivals' interpreter."""
    return VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def ensure(upgrade: bool = False, log=print) -> Path:
    """Create or update the venv when its requirements changed (or `upgrade`); return its python.

    Raises RuntimeError with pip's last lines when it cannot be built (e.g. no index).
    """
    reqs = requirements()
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(json.dumps(reqs).encode()).hexdigest()
    if python().exists() and not upgrade and stamp.exists() and stamp.read_text() == digest:
        return python()
    if not python().exists():
        log(f"creating the rivals' venv in {VENV} ...")
        VENV.parent.mkdir(parents=True, exist_ok=True)
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", str(VENV)])
    log(f"installing into the rivals' venv: {' '.join(reqs)} ...")
    _run(
        [
            str(python()),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            *(["--upgrade"] if upgrade else []),
            *reqs,
        ]
    )
    stamp.write_text(digest)
    return python()


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [
            line
            for line in (proc.stderr or proc.stdout).splitlines()
            if line.strip() and not line.startswith("WARNING: Location")
        ][-3:]
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed: {' | '.join(tail)}")
