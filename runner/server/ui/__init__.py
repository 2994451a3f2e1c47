"""The web page of `timbal serve` (SPEC §8), mounted at `/` unless `--no-ui`.

This package is where the page lives: `create_app(include_ui=True)` calls
`mount_ui(app, state)` once, after every API route is in place, so the page's own
routes (`/`, its static files) never shadow the API. `state` (`ServerState`) gives the
page the served flows (`state.catalog`) and the runs in flight (`state.live`); the page
itself should talk to the server only through the HTTP API, like any other client.

The page is built by the web-page issue; until then nothing is mounted and `/` is 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["mount_ui"]


def mount_ui(app: FastAPI, state: Any) -> None:
    """Add the web page's routes to `app` (nothing yet: see the module's docstring)."""
