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
from typing import Any

import click

from ..errors import FlowError, InputError
from ..graph_views import GRAPH_FORMATS, step_count
from .base import EXIT_INVALID, handle_errors, print_json, use_color

__all__ = ["validate", "graph", "schema", "init", "init_text"]


def _diag_json(exc: FlowError) -> list[dict[str, Any]]:
    return [d.to_dict() for d in exc.diagnostics]


@click.command()
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
            click.echo(f"ok: {flow} ({step_count(len(graph.steps))})")
    if as_json:
        print_json(results)
    if invalid:
        sys.exit(EXIT_INVALID)


@click.command()
@click.argument("flow", metavar="FLOW")
@click.option(
    "--format", "fmt", type=click.Choice(GRAPH_FORMATS), default="text",
    show_default=True, help="How to draw the graph.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON (steps and edges).")
@handle_errors
def graph(flow: str, fmt: str, as_json: bool) -> None:
    """Show a flow's execution graph: steps, kinds, memory ids and edges."""
    from ..compiler import compile_file
    from ..graph_views import graph_json, render_graph

    compiled = compile_file(flow)
    if as_json:
        print_json(graph_json(compiled))
    else:
        click.echo(render_graph(compiled, fmt))


@click.command()
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


@click.command()
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

