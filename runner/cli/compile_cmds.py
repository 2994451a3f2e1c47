"""Commands that compile without running: validate, graph, schema, init.

Kept light on purpose: `timbal validate` must answer fast, so the compiler (jsonschema,
jinja2) is imported inside the commands, and nothing here imports litellm or rich.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import FlowError, InputError
from .base import EXIT_INVALID, handle_errors, main, print_json, use_color

if TYPE_CHECKING:
    from ..graph import ExecutionGraph, StepSpec

__all__ = ["validate", "graph", "schema", "init", "render_graph", "init_text"]


def _diag_json(exc: FlowError) -> list[dict[str, Any]]:
    return [d.to_dict() for d in exc.diagnostics]


@main.command()
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {file, valid, errors}.")
@handle_errors
def validate(flows: tuple[str, ...], as_json: bool) -> None:
    """Check flow files with the whole compiler, without running anything.

    Prints `ok: FILE (N steps)` for each valid file and compiler-style errors
    for the others. Exits 2 when any file is invalid.
    """
    from ..compiler import compile_file

    results: list[dict[str, Any]] = []
    invalid = False
    for flow in flows:
        try:
            graph = compile_file(flow)
        except FlowError as exc:
            invalid = True
            results.append({"file": flow, "valid": False, "errors": _diag_json(exc)})
            if not as_json:
                click.echo(exc.format(color=use_color()), err=True)
            continue
        results.append({"file": flow, "valid": True, "steps": len(graph.steps), "errors": []})
        if not as_json:
            click.echo(f"ok: {flow} ({_steps(len(graph.steps))})")
    if as_json:
        print_json(results)
    if invalid:
        sys.exit(EXIT_INVALID)


def render_graph(graph: ExecutionGraph, fmt: str = "text") -> str:
    """The execution graph as text, Mermaid or Graphviz dot: steps, kinds, memory ids, edges.

    Map and loop bodies are drawn as clusters (a subgraph holding the body's steps)."""
    if fmt == "mermaid":
        return "\n".join(["flowchart TD", *_mermaid(graph, "", "    ")])
    if fmt == "dot":
        name = json.dumps(graph.name)
        lines = [f"digraph {name} {{", "    rankdir=TB;", "    node [shape=box];"]
        return "\n".join([*lines, *_dot(graph, "", "    "), "}"])
    return "\n".join([f"flow {graph.name} ({_steps(len(graph.steps))})", *_text(graph, "  ")])


def _body(step: StepSpec) -> ExecutionGraph | None:
    """The body a map or loop step runs (inline or a flow file), drawn as its cluster."""
    return step.subflow if step.kind in ("map", "loop") else None


def _about(step: StepSpec) -> str:
    """What a container does, in a few words: `map over doc`, `loop (max 5)`."""
    if step.kind == "map":
        return f"map over {step.config.get('as', 'item')}"
    if step.kind == "loop":
        return f"loop (max {step.config.get('max_iterations')})"
    return step.kind


def _mermaid(graph: ExecutionGraph, prefix: str, indent: str) -> list[str]:
    lines: list[str] = []
    for s in graph.steps:
        mem = f"<br/>memory: {', '.join(sorted(s.memory_ids))}" if s.memory_ids else ""
        body = _body(s)
        if body is None:
            lines.append(f'{indent}{prefix}{s.id}["{s.id}<br/>{s.kind}{mem}"]')
            continue
        lines.append(f'{indent}subgraph {prefix}{s.id}["{s.id}<br/>{_about(s)}{mem}"]')
        lines.extend(_mermaid(body, f"{prefix}{s.id}__", indent + "    "))
        lines.append(f"{indent}end")
    for e in _edges(graph):
        arrow = "-->" if e["kind"] == "data" else "-.->"
        label = "" if e["kind"] == "data" else f"|{e['memory_id']}|"
        lines.append(f"{indent}{prefix}{e['from']} {arrow}{label} {prefix}{e['to']}")
    return lines


def _dot(graph: ExecutionGraph, prefix: str, indent: str) -> list[str]:
    lines: list[str] = []
    for s in graph.steps:
        mem = f"\\nmemory: {', '.join(sorted(s.memory_ids))}" if s.memory_ids else ""
        body = _body(s)
        if body is None:
            lines.append(f'{indent}{prefix}{s.id} [label="{s.id}\\n{s.kind}{mem}"];')
            continue
        lines.append(f"{indent}subgraph cluster_{prefix}{s.id} {{")
        lines.append(f'{indent}    label="{s.id}: {_about(s)}";')
        lines.append(f'{indent}    {prefix}{s.id} [label="{s.id}\\n{s.kind}{mem}", shape=ellipse];')
        lines.extend(_dot(body, f"{prefix}{s.id}__", indent + "    "))
        lines.append(f"{indent}}}")
    for e in _edges(graph):
        style = "" if e["kind"] == "data" else f' [style=dashed, label="{e["memory_id"]}"]'
        lines.append(f"{indent}{prefix}{e['from']} -> {prefix}{e['to']}{style};")
    return lines


def _text(graph: ExecutionGraph, indent: str) -> list[str]:
    width = max((len(s.id) for s in graph.steps), default=0)
    lines: list[str] = []
    for sid in graph.order:
        s = graph.step(sid)
        mem = f"  memory: {', '.join(sorted(s.memory_ids))}" if s.memory_ids else ""
        after = f"  after: {', '.join(sorted(s.deps, key=lambda d: graph.step(d).index))}" if s.deps else ""
        lines.append(f"{indent}{s.id:<{width}}  {s.kind:<8}{mem}{after}".rstrip())
        body = _body(s)
        if body is not None:
            lines.append(f"{indent}  ┌ {_about(s)}: {_steps(len(body.steps))}")
            lines.extend(f"{indent}  │{line[len(indent) - 1:]}" for line in _text(body, indent + "  "))
            lines.append(f"{indent}  └")
    return lines


def _edges(graph: ExecutionGraph) -> list[dict[str, Any]]:
    """Edges `from` -> `to` (to runs after from): data references, then memory order."""
    out: list[dict[str, Any]] = []
    for s in graph.steps:
        for dep in sorted(s.deps, key=lambda d: graph.step(d).index):
            if dep in s.data_deps:
                out.append({"from": dep, "to": s.id, "kind": "data"})
            else:
                shared = sorted(s.memory_ids & graph.step(dep).memory_ids)
                out.append({"from": dep, "to": s.id, "kind": "memory",
                            "memory_id": shared[0] if shared else None})
    return out


def graph_json(graph: ExecutionGraph) -> dict[str, Any]:
    """The execution graph as plain data (for --json)."""
    return {
        "name": graph.name,
        "path": str(graph.path) if graph.path else None,
        "order": list(graph.order),
        "steps": [
            {
                "id": s.id,
                "kind": s.kind,
                "memory_id": s.memory_id,
                "memory_ids": sorted(s.memory_ids),
                "deps": sorted(s.deps),
                "data_deps": sorted(s.data_deps),
                **({"body": graph_json(body)} if (body := _body(s)) is not None else {}),
            }
            for s in graph.steps
        ],
        "edges": _edges(graph),
    }


@main.command()
@click.argument("flow", metavar="FLOW")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text",
    show_default=True, help="How to draw the graph.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON (steps and edges).")
@handle_errors
def graph(flow: str, fmt: str, as_json: bool) -> None:
    """Show a flow's execution graph: steps, kinds, memory ids and edges."""
    from ..compiler import compile_file

    compiled = compile_file(flow)
    if as_json:
        print_json(graph_json(compiled))
    else:
        click.echo(render_graph(compiled, fmt))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Same output (the schema is JSON already).")
@handle_errors
def schema(as_json: bool) -> None:
    """Print the flow file JSON Schema (point your editor at it)."""
    from ..schema import schema_text

    click.echo(schema_text().rstrip("\n"))


def _schema_ref(target: Path) -> str:
    """How the new flow file should point at the schema: a relative path when one exists."""
    from ..schema import SCHEMA_URL, schema_path

    path = schema_path()
    if path is None:
        return SCHEMA_URL
    folder = target.resolve().parent
    try:
        if os.path.commonpath([path, folder]) != os.path.dirname(os.path.abspath(os.sep)):
            # Same project tree: a relative path keeps working when the project moves.
            return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive on Windows
        pass
    return path.as_uri()


def init_text(name: str, schema_ref: str) -> str:
    """A small working flow on the offline `echo` model, with the editor schema comment."""
    return f"""# yaml-language-server: $schema={schema_ref}
version: 1
name: {name if re.fullmatch(r"[A-Za-z0-9_.-]+", name) else json.dumps(name)}
description: A starter flow. It runs offline on the built-in echo model; change `model` to use a real one.

inputs:
  prompt: {{type: string, description: What to say}}

defaults:
  model: echo

steps:
  - id: answer
    memory_id: chat          # steps sharing a memory_id share one conversation
    system: You are a helpful assistant.
    prompt: "{{{{ inputs.prompt }}}}"
  - id: summary
    memory_id: chat
    prompt: Now say it in one sentence.

outputs:
  response: "{{{{ summary.return }}}}"
"""


@main.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print {file, created} as JSON.")
@handle_errors
def init(name: str, force: bool, as_json: bool) -> None:
    """Create NAME.yaml: a small flow that runs offline (model: echo)."""
    target = Path(name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", target.stem):
        # A file name a shell needs quotes for is a flow name every later command needs them for.
        suggestion = re.sub(r"[^A-Za-z0-9_.-]+", "-", target.stem).strip("-") or "flow"
        raise InputError(f"invalid flow name {target.stem!r}: use letters, digits, '-', '_' and '.' "
                         f"(e.g. timbal init {target.with_name(suggestion).with_suffix('')})")
    if target.exists() and not force:
        click.echo(f"error: {target} already exists (use --force to overwrite)", err=True)
        sys.exit(EXIT_INVALID)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(init_text(target.stem, _schema_ref(target)), encoding="utf-8")
    if as_json:
        print_json({"file": str(target), "created": True})
        return
    click.echo(f"created: {target}")
    click.echo(f"next: timbal run {target} -i prompt='Hello'", err=True)


def _steps(count: int) -> str:
    """`1 step`, `3 steps`."""
    return f"{count} step{'' if count == 1 else 's'}"
