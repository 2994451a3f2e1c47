"""`timbal validate | graph | schema | init`, run as a real subprocess of the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from testkit import ROOT, child_env, timbal

QUICKSTART = ROOT / "flows" / "quickstart.yaml"
BROKEN = Path(__file__).resolve().parent / "broken"


def test_validate_a_valid_flow_prints_ok_and_exits_0() -> None:
    result = timbal("validate", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: {QUICKSTART} (3 steps)\n"


def test_validate_a_broken_flow_prints_located_errors_and_exits_2() -> None:
    result = timbal("validate", "unknown_step_ref.yaml", cwd=BROKEN)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        "unknown_step_ref.yaml:8:28: error: unknown step 'refien' in prompt (did you mean 'refine'?)\n"
        '    8 |     prompt: "Rate this: {{ refien.return }}"\n'
        "      |                            ^\n"
    )
    assert "Traceback" not in result.stderr


def test_validate_lists_every_error_and_counts_them() -> None:
    result = timbal("validate", "several_errors.yaml", cwd=BROKEN)
    assert result.returncode == 2
    headlines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(headlines) == 6
    assert result.stderr.rstrip().endswith("6 errors")


def test_validate_checks_every_file_and_fails_if_any_is_invalid() -> None:
    result = timbal("validate", str(QUICKSTART), str(BROKEN / "cycle.yaml"))
    assert result.returncode == 2
    assert result.stdout == f"ok: {QUICKSTART} (3 steps)\n"
    assert "error: dependency cycle: a -> b -> c -> a" in result.stderr


def test_validate_a_missing_file_exits_2_without_traceback() -> None:
    result = timbal("validate", "no/such/flow.yaml")
    assert result.returncode == 2
    assert "not found" in result.stderr and "Traceback" not in result.stderr


def test_validate_json_lists_files_and_located_errors() -> None:
    result = timbal("validate", "--json", str(QUICKSTART), "bad_attribute.yaml", cwd=BROKEN)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report[0]["valid"] is True and report[0]["errors"] == []
    assert report[1] == {
        "file": "bad_attribute.yaml",
        "valid": False,
        "errors": [{
            "file": "bad_attribute.yaml",
            "line": 8,
            "col": 17,
            "message": "unknown attribute 'retrn' of step 'chat' in prompt (did you mean 'return'?)",
        }],
    }


def test_validate_does_not_import_heavy_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner.cli", "validate", str(QUICKSTART)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 0
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {m for m in modules if m.split(".")[0] in ("litellm", "rich", "openai", "httpx")}


HEAVY = {"procrastinate", "psycopg", "fastapi", "uvicorn", "starlette", "litellm", "llama_cpp", "playwright"}


def test_importing_the_cli_imports_no_command_library() -> None:
    # Each command's module loads when that command runs: start-up pays for none of them.
    code = (
        "import runner.cli, sys\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r}))\n"
        "print(sorted(m for m in sys.modules if m == 'asyncio' or m.startswith('runner.cli.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=child_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    heavy, light = result.stdout.splitlines()
    assert heavy == "[]"
    assert light == "['runner.cli.base']"


def test_help_lists_every_command() -> None:
    # Listing a command imports its module: a wrong entry in the command table fails here.
    result = timbal("--help")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == [
        "batch", "chat", "graph", "init", "run", "runs", "schema", "serve", "test", "validate", "worker",
    ]


def test_graph_text_shows_steps_kinds_memory_and_order() -> None:
    result = timbal("graph", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "flow quickstart (3 steps)",
        "  chat    llm       memory: session1",
        "  refine  llm       memory: session1  after: chat",
        "  audit   llm       memory: auditor  after: refine",
    ]


def test_graph_mermaid_draws_data_and_memory_edges() -> None:
    result = timbal("graph", str(QUICKSTART), "--format", "mermaid")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert "    chat -.->|session1| refine" in lines
    assert "    refine --> audit" in lines


def test_graph_dot_is_a_digraph() -> None:
    result = timbal("graph", str(QUICKSTART), "--format", "dot")
    assert result.returncode == 0
    assert result.stdout.startswith('digraph "quickstart" {')
    assert "    refine -> audit;" in result.stdout
    assert '    chat -> refine [style=dashed, label="session1"];' in result.stdout
    assert result.stdout.rstrip().endswith("}")


def test_graph_json_has_steps_and_edges() -> None:
    result = timbal("graph", str(QUICKSTART), "--json")
    graph = json.loads(result.stdout)
    assert graph["order"] == ["chat", "refine", "audit"]
    assert {"from": "refine", "to": "audit", "kind": "data"} in graph["edges"]
    assert graph["steps"][0]["memory_id"] == "session1"


def test_graph_of_a_broken_flow_exits_2() -> None:
    result = timbal("graph", "cycle.yaml", cwd=BROKEN)
    assert result.returncode == 2 and "dependency cycle" in result.stderr


def test_graph_rejects_an_unknown_format() -> None:
    assert timbal("graph", str(QUICKSTART), "--format", "png").returncode == 2


def test_schema_prints_a_valid_2020_12_json_schema() -> None:
    result = timbal("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(timbal("schema", "--json").stdout) == schema


def test_init_creates_a_flow_that_validates(tmp_path: Path) -> None:
    result = timbal("init", "hello", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    created = tmp_path / "hello.yaml"
    text = created.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    assert "model: echo" in text
    check = timbal("validate", str(created))
    assert check.returncode == 0, check.stderr


def test_init_keeps_a_yaml_suffix_and_points_at_the_schema(tmp_path: Path) -> None:
    target = ROOT / "flows" / f"init_test_{tmp_path.name}.yml"
    try:
        assert timbal("init", str(target)).returncode == 0
        first = target.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/flow.schema.json"
    finally:
        target.unlink(missing_ok=True)


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("precious: true\n")
    result = timbal("init", "mine.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tmp_path / "mine.yaml").read_text() == "precious: true\n"
    assert timbal("init", "mine.yaml", "--force", cwd=tmp_path).returncode == 0
    assert "model: echo" in (tmp_path / "mine.yaml").read_text()


def test_version_prints_the_version() -> None:
    result = timbal("--version")
    assert result.returncode == 0 and result.stdout.startswith("timbal")


@pytest.mark.parametrize("command", [[], ["validate"], ["graph"], ["schema"], ["init"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = timbal(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_the_timbal_script_is_installed() -> None:
    script = Path(sys.executable).parent / "timbal"
    if not script.exists():
        pytest.skip("the package is not installed as a script in this environment")
    result = subprocess.run([str(script), "validate", str(QUICKSTART)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
