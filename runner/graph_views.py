"""A compiled flow drawn for people and tools: text, Mermaid, Graphviz dot, or plain data.

Container steps (map, loop) are drawn with their body as a cluster."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .registry import step_kinds

if TYPE_CHECKING:  # kept light: `timbal --help` imports this module
    from .graph import ExecutionGraph, StepSpec

__all__ = ["render_graph", "graph_json", "GRAPH_FORMATS", "step_count"]

#: The formats `render_graph` draws.
GRAPH_FORMATS = ("text", "mermaid", "dot")


def render_graph(graph: ExecutionGraph, fmt: str = "text") -> str:
    """The execution graph as text, Mermaid or Graphviz dot: steps, kinds, memory ids, edges.

    Map and loop bodies are drawn as clusters (a subgraph holding the body's steps)."""
    if fmt == "mermaid":
        return "\n".join(["flowchart TD", *_mermaid(graph, "", "    ")])
    if fmt == "dot":
        name = json.dumps(graph.name)
        lines = [f"digraph {name} {{", "    rankdir=TB;", "    node [shape=box];"]
        return "\n".join([*lines, *_dot(graph, "", "    "), "}"])
    return "\n".join([f"flow {graph.name} ({step_count(len(graph.steps))})", *_text(graph, "  ")])


def _body(step: StepSpec) -> ExecutionGraph | None:
    """The body a container step (map, loop) runs, inline or a flow file: drawn as its cluster."""
    return step.subflow if step_kinds[step.kind].container else None


def _about(step: StepSpec) -> str:
    """What a container does, in a few words: `map over doc`, `loop (max 5)`."""
    about = step_kinds[step.kind].about
    return about(step.config) if about is not None else step.kind


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
    for e in graph.edges():
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
    for e in graph.edges():
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
            lines.append(f"{indent}  ┌ {_about(s)}: {step_count(len(body.steps))}")
            lines.extend(f"{indent}  │{line[len(indent) - 1:]}" for line in _text(body, indent + "  "))
            lines.append(f"{indent}  └")
    return lines


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
        "edges": graph.edges(),
    }


def step_count(count: int) -> str:
    """`1 step`, `3 steps`."""
    return f"{count} step{'' if count == 1 else 's'}"
