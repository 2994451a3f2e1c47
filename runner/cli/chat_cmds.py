"""`timbal chat`: a conversation with a flow, one run per line (see runner.cli.chat)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .base import handle_errors


@click.command("chat")
@click.argument("flow", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-i", "--input", "assignments", multiple=True, metavar="NAME=VALUE",
              help="A value for another input, the same on every turn (repeatable).")
@click.option("--parent", metavar="RUN_ID", help="Pick up the conversation that led to this run.")
@click.option("--continue", "-c", "cont", is_flag=True,
              help="Pick up the latest run of this flow in the saver.")
@click.option("--saver", "saver_uri", metavar="URI",
              help="Override the file's state_saver: jsonl:PATH, sqlite:PATH, postgresql://…, memory.")
@click.option("--json", "as_json", is_flag=True,
              help="Print each turn as one JSON object {run_id, parent_id, status, outputs, usage, error} per line.")
@click.option("--no-cache", is_flag=True, help="Never reuse earlier step results.")
@handle_errors
def chat_command(
    flow: Path,
    assignments: tuple[str, ...],
    parent: str | None,
    cont: bool,
    saver_uri: str | None,
    as_json: bool,
    no_cache: bool,
) -> None:
    """Chat with FLOW: each line is one run whose parent is the previous turn's run.

    Commands: /history, /rewind [N], /reset, /help, /quit (or Ctrl-D). With piped
    stdin, each line prints its reply as one line on stdout.
    """
    from .chat import chat

    if parent and cont:
        raise click.UsageError("--parent and --continue exclude each other")
    sys.exit(chat(flow, assignments, saver_uri, parent, cont, not no_cache, as_json))
