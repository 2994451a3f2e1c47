"""A plugin package (examples/plugin) adds a step kind, a saver and a model backend through
entry points: installed into a throwaway venv, it works through the `timbal` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from testkit import ROOT, child_env

PLUGIN = ROOT / "examples" / "plugin"


def _env() -> dict[str, str]:
    """This checkout and the project's dependencies importable; the plugin comes from the venv."""
    env = child_env()
    deps = sysconfig.get_paths()["purelib"]  # the shared venv's packages (click, jinja2, ...)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], deps])
    return env


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway venv's python with the example plugin installed (never the shared venv)."""
    venv = tmp_path_factory.mktemp("plugin") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=300)
    python = venv / "bin" / "python"
    source = tmp_path_factory.mktemp("src") / "plugin"  # built from a copy: no build files left behind
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", str(source)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return python


def timbal_in(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "runner.cli", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_a_flow_uses_the_plugins_step_kind_saver_and_model(plugin_python: Path, tmp_path: Path) -> None:
    shutil.copy(PLUGIN / "flow.yaml", tmp_path / "flow.yaml")
    ran = timbal_in(plugin_python, "run", "flow.yaml", "-i", "name=Ada", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ADA OLLEH"  # shout, then the reverse/… model
    listed = timbal_in(plugin_python, "runs", "list", "--saver", "notes:runs.notes", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [(r["flow"], r["status"]) for r in runs] == [("plugin-demo", "succeeded")]
    assert (tmp_path / "runs.notes").is_file()  # the plugin's saver wrote its own file


def test_the_plugins_step_kind_is_checked_by_validate(plugin_python: Path, tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(
        "version: 1\nsteps:\n  - id: loud\n    type: shout\n    txt: hi\n  - id: quiet\n"
        "    type: shout\n    text: '  '\n",
        encoding="utf-8",
    )
    checked = timbal_in(plugin_python, "validate", "flow.yaml", cwd=tmp_path)
    assert checked.returncode == 2, checked.stderr
    assert "flow.yaml:5:5: error: unknown key 'txt' in step 'loud' (did you mean 'text'?)" in checked.stderr
    assert "flow.yaml:8:11: error: step 'quiet': 'text' is blank: nothing to shout" in checked.stderr


def test_without_the_plugin_its_kind_is_unknown(tmp_path: Path) -> None:
    shutil.copy(PLUGIN / "flow.yaml", tmp_path / "flow.yaml")
    checked = timbal_in(Path(sys.executable), "validate", "flow.yaml", cwd=tmp_path)
    assert checked.returncode == 2
    assert "must be one of" in checked.stderr and "not \"shout\"" in checked.stderr
