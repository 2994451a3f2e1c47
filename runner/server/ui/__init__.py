"""The web page of `timbal serve`: the flows, a form and a chat per flow, the runs and each
run's steps, conversations and branch tree.

The pages are Jinja2 templates rendered by the server with a little plain JavaScript that
reads the server's own JSON API (SPEC §8), so the page shows exactly what API clients see and
needs no build step. Every asset is served from `/ui/static/`, and a Content-Security-Policy
keeps the browser from reaching anything but this server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ...savers.base import RUN_STATUSES

__all__ = ["mount_ui", "STATIC_DIR", "TEMPLATES_DIR", "CONTENT_SECURITY_POLICY"]

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
TEMPLATES_DIR = _HERE / "templates"
STATIC_PREFIX = "/ui/static"

#: Only this server: scripts, styles, fetches and server-sent events from the same origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
_templates.env.globals["static"] = lambda name: f"{STATIC_PREFIX}/{name}"
# `waiting` is a run status once input steps exist; the filter offers it either way.
_templates.env.globals["statuses"] = tuple(dict.fromkeys((*RUN_STATUSES, "waiting")))


def _page(request: Request, template: str, section: str, **context: Any) -> Response:
    response = _templates.TemplateResponse(request, template, {"section": section, **context})
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


async def flows_page(request: Request) -> Response:
    """`/`: every flow with its description."""
    return _page(request, "flows.html", "flows")


async def flow_page(request: Request) -> Response:
    """`/ui/flows/NAME`: the flow's graph and a form that runs it."""
    return _page(request, "flow.html", "flows", flow=request.path_params["name"])


async def chat_page(request: Request) -> Response:
    """`/ui/flows/NAME/chat?run=ID`: a chat with the flow, from run ID (or a new one)."""
    return _page(request, "chat.html", "flows", flow=request.path_params["name"])


async def runs_page(request: Request) -> Response:
    """`/ui/runs?flow=&status=&limit=`: the runs, filtered."""
    return _page(request, "runs.html", "runs")


async def run_page(request: Request) -> Response:
    """`/ui/runs/ID`: one run's steps, conversations, branch tree and actions."""
    return _page(request, "run.html", "runs", run_id=request.path_params["run_id"])


def mount_ui(app: Starlette, state: Any = None) -> None:
    """Add the web page to `app`: the pages at `/` and under `/ui/`, assets at `/ui/static/`.
    The routes stay out of the OpenAPI document, which describes the JSON API. `state` (the
    server's) is not needed: the page reads everything through the HTTP API."""
    for path, endpoint in (
        ("/", flows_page),
        ("/ui/flows/{name}", flow_page),
        ("/ui/flows/{name}/chat", chat_page),
        ("/ui/runs", runs_page),
        ("/ui/runs/{run_id}", run_page),
    ):
        app.add_route(path, endpoint, methods=["GET"], include_in_schema=False)
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(STATIC_DIR)), name="ui-static")
