"""`timbal serve`: serve flows over HTTP (SPEC §8). Thin: parse, call runner.server.serve."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .base import handle_errors

_SERVE_PACKAGES = {"fastapi", "starlette", "uvicorn", "sse_starlette", "pydantic"}


@click.command("serve")
@click.argument("flows", nargs=-1, type=click.Path(path_type=Path), metavar="[FLOW|DIR]...")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="The port.")
@click.option("--saver", "saver_uri", metavar="URI",
              help="One store for every flow (jsonl:PATH, sqlite:PATH, postgresql://…, memory); "
                   "default: each flow's own state_saver.")
@click.option("--api-key-env", metavar="VAR",
              help="Require `Authorization: Bearer $VAR` on every request but GET /health.")
@click.option("--no-auth", is_flag=True, help="Allow listening beyond this machine without a key.")
@click.option("--reload", is_flag=True, help="Compile flows again when their files change.")
@click.option("--no-ui", is_flag=True, help="Serve the API only, no web page at /.")
@handle_errors
def serve_command(flows: tuple[Path, ...], host: str, port: int, saver_uri: str | None,
                  api_key_env: str | None, no_auth: bool, reload: bool, no_ui: bool) -> None:
    """Serve flows over HTTP: a native API and OpenAI-compatible routes.

    Serves every FLOW given; a DIR means every flow file in it (default: the current
    folder). Each flow is named by its `name`.
    """
    try:
        from ..server import ServeOptions, serve
    except ModuleNotFoundError as exc:  # installed without the serve extra
        if (exc.name or "").split(".")[0] not in _SERVE_PACKAGES:
            raise
        raise click.ClickException(
            f"timbal serve needs {exc.name}: pip install 'timbal-flows[serve]'"
        ) from None

    options = ServeOptions(
        sources=flows or (Path("."),), host=host, port=port, saver_uri=saver_uri,
        api_key_env=api_key_env, no_auth=no_auth, reload=reload, ui=not no_ui,
    )
    sys.exit(serve(options))
