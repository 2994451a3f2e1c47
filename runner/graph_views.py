"""A compiled flow drawn for people and tools: text, Mermaid, Graphviz dot, or plain data."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: `timbal --help` imports this module
    from .graph import ExecutionGraph

__all__ = ["render_graph", "graph_json", "GRAPH_FORMATS"]

#: The formats `render_graph` draws.
GRAPH_FORMATS = ("text", "mermaid", "dot")


def render_graph(graph: ExecutionGraph, fmt: str = "text") -> str:
    """The execution graph as text, Mermaid or Graphviz dot: steps, kinds, memory ids, edges."""
    edges = graph.edges()
    if fmt == "mermaid":
        lines = ["flowchart TD"]
        for s in graph.steps:
            mem = f"<br/>memory: {', '.join(sorted(s.memory_ids))}" if s.memory_ids else ""
            lines.append(f'    {s.id}["{s.id}<br/>{s.kind}{mem}"]')
        for e in edges:
            arrow = "-->" if e["kind"] == "data" else "-.->"
            label = "" if e["kind"] == "data" else f"|{e['memory_id']}|"
            lines.append(f"    {e['from']} {arrow}{label} {e['to']}")
        return "\n".join(lines)
    if fmt == "dot":
        name = json.dumps(graph.name)
        lines = [f"digraph {name} {{", "    rankdir=TB;", "    node [shape=box];"]
        for s in graph.steps:
            mem = f"\\nmemory: {', '.join(sorted(s.memory_ids))}" if s.memory_ids else ""
            lines.append(f'    {s.id} [label="{s.id}\\n{s.kind}{mem}"];')
        for e in edges:
            style = "" if e["kind"] == "data" else f' [style=dashed, label="{e["memory_id"]}"]'
            lines.append(f"    {e['from']} -> {e['to']}{style};")
        lines.append("}")
        return "\n".join(lines)
    width = max((len(s.id) for s in graph.steps), default=0)
    lines = [f"flow {graph.name} ({len(graph.steps)} steps)"]
    for sid in graph.order:
        s = graph.step(sid)
        mem = f"  memory: {', '.join(sorted(s.memory_ids))}" if s.memory_ids else ""
        after = f"  after: {', '.join(sorted(s.deps, key=lambda d: graph.step(d).index))}" if s.deps else ""
        lines.append(f"  {s.id:<{width}}  {s.kind:<8}{mem}{after}".rstrip())
    return "\n".join(lines)


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
            }
            for s in graph.steps
        ],
        "edges": graph.edges(),
    }
