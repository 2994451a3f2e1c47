"""The web page of `timbal serve`: the flows, a form and a chat per flow, the runs and each
run's steps, conversations and branch tree.

The pages are Jinja2 templates rendered by the server, with a little plain JavaScript and
no build step. The home page lists the flows on the server (from `GET /flows`'s own data);
the other pages fill themselves from the server's JSON API (SPEC §8), as any client would,
so they show exactly what API clients see and follow runs live through its events. Every
asset is served from `/ui/static/`, and a Content-Security-Policy keeps the browser from
reaching anything but this server.

On a server with a key, every page and asset needs the key like any other route. A browser
cannot send it when it opens a page, so what it gets then is a 401 whose body is a small page
of its own (`key_page`, `key.html`: inline CSS and JS, no data): it asks for the key (or takes
the one this tab already gave), keeps it in the tab's sessionStorage, fetches the real page and
its scripts and styles with the key, and shows the page in its place.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from ...status import RUN_STATUSES

if TYPE_CHECKING:
    from ..catalog import FlowCatalog

__all__ = ["mount_ui", "key_page", "STATIC_DIR", "TEMPLATES_DIR", "CONTENT_SECURITY_POLICY"]

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


def key_page(scope: Scope) -> tuple[bytes, dict[str, str]] | None:
    """The body and headers of the 401 a browser gets when it opens one of the pages (GET, an
    `Accept` with text/html, `/` or `/ui/…` but not an asset) without the server's key: the
    page `key.html`, which asks for the key and then shows the real page. None for any other
    request, whose 401 stays the API's JSON. The page holds no data of the server."""
    path: str = scope.get("path", "")
    if scope.get("method") != "GET" or not (path == "/" or path.startswith("/ui/")):
        return None
    if path == STATIC_PREFIX or path.startswith(STATIC_PREFIX + "/"):
        return None
    if not any(name == b"accept" and b"text/html" in value for name, value in scope.get("headers", ())):
        return None
    return _key_page()


@cache
def _key_page() -> tuple[bytes, dict[str, str]]:
    text = (_HERE / "key.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:  # the page's own inline script and style, and nothing else inline
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(x.encode()).digest()).decode()}'" for x in found)

    # The real page's scripts and styles come as blob: URLs the key page makes of what it
    # fetched from this server; the policy stays with the document once it shows that page.
    policy = (f"default-src 'self'; script-src 'self' blob: {hashes('script')}; "
              f"style-src 'self' blob: {hashes('style')}; img-src 'self' data: blob:; object-src 'none'; "
              "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    headers = {"content-type": "text/html; charset=utf-8", "content-security-policy": policy,
               "cache-control": "no-store"}
    return text.encode(), headers


def _page(request: Request, template: str, section: str, **context: Any) -> Response:
    response = _templates.TemplateResponse(request, template, {"section": section, **context})
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
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
        """`/`: every flow with its description (rendered here: readable without scripts)."""
        flows = await run_in_threadpool(state.catalog.listing)
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
