"""The extension points: the registries, the schema's enums, model routing, one-way imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import child_env

from runner.models import backend_for
from runner.registry import (
    ModelBackend,
    Registry,
    RegistryError,
    StepKind,
    model_backends,
    saver_types,
    step_kinds,
)
from runner.schema import load_schema
from runner.steps.base import StepOutcome

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "runner"


def _shipped_schema() -> dict:
    return json.loads((ROOT / "schemas" / "flow.schema.json").read_text(encoding="utf-8"))


def test_the_shipped_schema_lists_exactly_the_built_in_step_kinds_and_savers() -> None:
    defs = _shipped_schema()["$defs"]
    assert sorted(defs["stepType"]["enum"]) == sorted(step_kinds.builtin_names())
    assert sorted(defs["saverType"]["enum"]) == sorted(saver_types.builtin_names())
    for kind in step_kinds.builtin_names():
        assert f"{kind}Step" in defs, kind


def test_the_loaded_schema_lists_every_registered_kind_and_saver() -> None:
    defs = load_schema()["$defs"]
    assert sorted(defs["stepType"]["enum"]) == sorted(step_kinds.names())
    assert sorted(defs["saverType"]["enum"]) == sorted(saver_types.names())


def _enums(node: object) -> list[list[object]]:
    if isinstance(node, dict):
        found = [node["enum"]] if isinstance(node.get("enum"), list) else []
        return found + [e for v in node.values() for e in _enums(v)]
    if isinstance(node, list):
        return [e for v in node for e in _enums(v)]
    return []


def test_the_step_type_and_saver_type_enums_are_written_once() -> None:
    schema = _shipped_schema()
    enums = _enums(schema)
    assert sum("agent" in e for e in enums) == 1
    assert sum("postgres" in e for e in enums) == 1
    text = json.dumps(schema)
    assert text.count('"#/$defs/stepType"') >= 6


def test_step_kinds_declare_what_the_engine_and_cache_need() -> None:
    llm, flow, python = step_kinds["llm"], step_kinds["flow"], step_kinds["python"]
    assert llm.leaf and llm.cacheable and llm.uses_model
    assert llm.defaults["timeout"] == 60 and llm.defaults["retries"] == 2
    assert not flow.leaf and flow.defaults["memory"] == "shared"
    assert python.leaf and not python.cacheable
    assert step_kinds["agent"].defaults["max_iterations"] == 10
    with pytest.raises(KeyError):
        step_kinds["nope"]


def test_a_name_cannot_be_registered_twice() -> None:
    async def execute(ctx: object) -> StepOutcome:
        return StepOutcome()

    registry: Registry[StepKind] = Registry(StepKind, "runner.steps", "STEP_KIND", "timbal.tests.none")
    registry.register(StepKind(name="mine", execute=execute))
    with pytest.raises(RegistryError, match="two StepKinds are named 'mine'"):
        registry.register(StepKind(name="mine", execute=execute))
    with pytest.raises(RegistryError):
        registry.register("not a kind")  # type: ignore[arg-type]


def test_models_go_to_the_backend_with_the_longest_matching_prefix() -> None:
    by_name = {b.name: b.complete for b in model_backends}
    assert backend_for("echo") is by_name["echo"]
    assert backend_for("echo/slow") is by_name["echo"]
    assert backend_for("local/smollm2") is by_name["local"]
    assert backend_for("openai/gpt-4o-mini") is by_name["openai"]
    assert backend_for("anthropic/claude-3-haiku") is by_name["litellm"]  # the fallback
    assert backend_for("echoes") is by_name["litellm"]  # a prefix matches whole path parts
    longer = ModelBackend(name="x", complete=by_name["echo"], prefixes=("local", "local/special"))
    assert longer.serves("local/special/model") == "local/special"
    assert longer.serves("localx") is None


def test_validate_loads_the_registries_without_litellm_or_the_engine(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("version: 1\nsteps:\n  - id: a\n    model: gpt-4o\n    prompt: hi\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from runner.cli import main\n"
        f"try:\n    main([\"validate\", {str(flow)!r}])\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert 'litellm' not in sys.modules\n"
        "assert 'runner.engine' not in sys.modules\n"
        "assert 'psycopg' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


# -- one-way imports -------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every runner module `path` imports, anywhere in it (functions, TYPE_CHECKING too)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("runner")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith("runner"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if _is_module(sub) else base)
    out.discard(me)
    return out


def test_the_package_has_no_import_cycles() -> None:
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_nothing_outside_the_registry_lists_step_kinds_or_savers() -> None:
    # The old lists are gone, and no module names every built-in kind or saver in a row.
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for old in ("STEP_KINDS", "_LEAF_KINDS", "CACHEABLE_KINDS", "_LLM_KINDS", "_KIND_DEFAULTS", "SAVER_TYPES"):
            assert old not in text, f"{path}: {old}"
        assert '"llm", "template", "python"' not in text, path
        assert '"in_memory", "jsonl", "sqlite"' not in text, path
