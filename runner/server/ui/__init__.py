"""The web page of `timbal serve`: the flows, a form and a chat per flow, the runs and each
run's steps, conversations and branch tree.

The pages are Jinja2 templates rendered by the server, with a little plain JavaScript and
no build step. The home page lists the flows on the server (from `GET /flows`'s own data);
the other pages fill themselves from the server's JSON API (SPEC §8), as any client would,
so they show exactly what API clients see and follow runs live through its events. Every
asset is served from `/ui/static/`, and a Content-Security-Policy keeps the browser from
reaching anything but this server.

On a server with a key, a browser cannot send the key when it opens a page, so the pages
and their assets answer without it (`serves_without_key`) but hold no data then: the home
page is a shell whose script lists the flows through `GET /flows`. Every API call needs the
key; the script asks for it on the first 401 and keeps it in the tab's sessionStorage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ...status import RUN_STATUSES
from ..guard import has_key

if TYPE_CHECKING:
    from ..catalog import FlowCatalog

__all__ = ["mount_ui", "serves_without_key", "STATIC_DIR", "TEMPLATES_DIR", "CONTENT_SECURITY_POLICY"]

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
_templates.env.globals["flow_url"] = lambda name: f"/ui/flows/{quote(name, safe='')}"
# `waiting` is a run status once input steps exist; the filter offers it either way.
_templates.env.globals["statuses"] = tuple(dict.fromkeys((*RUN_STATUSES, "waiting")))


def serves_without_key(path: str) -> bool:
    """Whether `path` is one of the page's (a page or an asset), which a GET answers without
    the key: what it answers then holds no data of the server's flows or runs."""
    return path == "/" or path.startswith("/ui/")


def _page(request: Request, template: str, section: str, **context: Any) -> Response:
    response = _templates.TemplateResponse(request, template, {"section": section, **context})
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Vary"] = "Authorization"  # the home page lists the flows only to the key
    return response



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


class _UIState(Protocol):
    """What the page reads of the server's state (`app.ServerState` has it)."""

    catalog: FlowCatalog


def mount_ui(app: Starlette, state: _UIState) -> None:
    """Add the web page to `app`: the pages at `/` and under `/ui/`, assets at `/ui/static/`.
    The routes stay out of the OpenAPI document, which describes the JSON API. `state` is the
    server's: the home page lists its flows as `GET /flows` does."""

    async def flows_page(request: Request) -> Response:
        """`/`: every flow with its description, rendered here (readable without scripts) for
        a request that may read `GET /flows`; without the key, a shell its script fills."""
        flows = await run_in_threadpool(state.catalog.listing) if has_key(request.scope) else None
        return _page(request, "flows.html", "flows", flows=flows)

    for path, endpoint in (
        ("/", flows_page),
        ("/ui/flows/{name}", flow_page),
        ("/ui/flows/{name}/chat", chat_page),
        ("/ui/runs", runs_page),
        ("/ui/runs/{run_id}", run_page),
    ):
        app.add_route(path, endpoint, methods=["GET"], include_in_schema=False)
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(STATIC_DIR)), name="ui-static")
