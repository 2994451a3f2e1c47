"""`timbal serve`: flows as an HTTP service (SPEC §8).

    from runner.server import FlowCatalog, create_app
    catalog = FlowCatalog([Path("flows")])
    catalog.load()                      # FlowError / InputError for broken or clashing flows
    app = create_app(catalog, api_key=None)   # any ASGI server runs it

`serve()` is what the command runs: uvicorn on one host and port, with the shutdown of
SPEC §8 (SIGTERM stops new requests, lets runs in flight finish for up to 10 seconds,
then records the rest `interrupted`).

Layout: `catalog.py` (the flows, their savers, reload), `live.py` (the runs in flight
and their events), `guard.py` (key, body size, draining, error shapes), `app.py` (the
routes), `serving.py` (uvicorn and signals), `ui/` (the web page).
"""

from __future__ import annotations

from .app import ServerState, create_app
from .catalog import FlowCatalog, FlowNotFound, ServedFlow
from .serving import DRAIN_SECONDS, ServeOptions, check_listen_address, serve

__all__ = [
    "create_app",
    "ServerState",
    "FlowCatalog",
    "FlowNotFound",
    "ServedFlow",
    "ServeOptions",
    "serve",
    "check_listen_address",
    "DRAIN_SECONDS",
]
