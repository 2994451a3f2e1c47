"""A new user's first hour at the command line (SPEC §4): errors located and readable,
commands that accept what people type. The CLI as a real subprocess."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from testkit import LiveProcess, timbal, write

FLOW = """
    version: 1
    name: hello
    inputs:
      prompt: {type: string}
    steps:
      - {id: reply, model: echo, prompt: "{{ inputs.prompt }}"}
    """


def test_a_broken_inputs_file_is_a_located_error(tmp_path: Path) -> None:
    flow = write(tmp_path / "hello.yaml", FLOW)
    inputs = write(tmp_path / "inputs.yaml", "prompt: hi\nother: [unclosed\n")
    proc = timbal("run", flow, "--inputs", inputs)
    assert proc.returncode == 2
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"{inputs}:") and ": error: invalid YAML" in first, proc.stderr
    assert "Traceback" not in proc.stderr


def test_inputs_files_are_read_as_yaml_12(tmp_path: Path) -> None:
    flow = write(tmp_path / "hello.yaml", FLOW)
    inputs = write(tmp_path / "inputs.yaml", "prompt: no\n")
    proc = timbal("run", flow, "--inputs", inputs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo (1 message): no\n"


def test_a_very_long_line_is_cut_around_the_caret(tmp_path: Path) -> None:
    long = "x" * 100_000
    flow = write(tmp_path / "long.yaml", f"""
        version: 1
        steps:
          - {{id: a, model: echo, prompt: "{long} {{{{ nope.return }}}} {long}"}}
        """)
    proc = timbal("validate", flow)
    assert proc.returncode == 2
    assert len(proc.stderr) < 1000, len(proc.stderr)
    head, frame, caret = proc.stderr.splitlines()[:3]
    assert "unknown step 'nope'" in head
    assert frame[caret.index("^") :].startswith("nope")


def test_dry_run_needs_no_inputs(tmp_path: Path) -> None:
    flow = write(tmp_path / "hello.yaml", FLOW)
    proc = timbal("run", flow, "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"waves": [["reply"]]}
    bad = timbal("run", flow, "--dry-run", "-i", "nope=1")
    assert bad.returncode == 2  # what is given must still fit


def test_debug_is_accepted_after_the_command(tmp_path: Path) -> None:
    flow = write(tmp_path / "hello.yaml", FLOW)
    proc = timbal("run", flow, "-i", "prompt=hi", "--debug")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo (1 message): hi\n"


def test_init_refuses_a_name_a_shell_needs_quotes_for(tmp_path: Path) -> None:
    proc = timbal("init", "bad name", cwd=tmp_path)
    assert proc.returncode == 2
    assert "invalid flow name 'bad name'" in proc.stderr and "timbal init bad-name" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_validate_counts_one_step_as_one_step(tmp_path: Path) -> None:
    flow = write(tmp_path / "hello.yaml", FLOW)
    proc = timbal("validate", flow)
    assert proc.stdout == f"ok: {flow} (1 step)\n"


def test_the_schema_says_what_the_readme_says_about_max_concurrency() -> None:
    proc = timbal("schema")
    described = json.loads(proc.stdout)["properties"]["settings"]["properties"]["max_concurrency"]
    assert "default 64" in described["description"]


def test_watch_waits_for_a_flow_broken_from_the_start(
    tmp_path: Path, watch: Callable[..., LiveProcess]
) -> None:
    flow = write(tmp_path / "hello.yaml", FLOW.replace("prompt: \"{{", "promt: \"{{"))
    live = watch(flow, "-i", "prompt=hi")
    live.stderr_until("unknown key 'promt'")
    live.stderr_until("waiting for changes")
    assert live.proc.poll() is None
    write(flow, FLOW)
    assert live.line() == "echo (1 message): hi"
