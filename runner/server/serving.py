"""Running the app: uvicorn on one address, the key check, and a draining shutdown.

The first SIGTERM (or Ctrl-C) stops new requests (the listening socket closes; requests
on open connections get 503), lets the runs in flight finish for up to `DRAIN_SECONDS`,
then cancels the rest, which the engine records `interrupted` (resumable), and exits 0.
A second signal cancels the runs in flight at once and exits.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from ..errors import InputError
from .app import ServerState, create_app
from .catalog import FlowCatalog

__all__ = ["ServeOptions", "serve", "check_listen_address", "read_api_key", "DRAIN_SECONDS"]

#: How long runs in flight may go on after SIGTERM before they are recorded interrupted.
DRAIN_SECONDS = 10.0
#: After the drain, how long open connections get to send their last bytes.
_CLOSE_SECONDS = 2
#: Idle seconds before a kept-alive connection is closed (uvicorn's 5 s races busy clients).
_KEEP_ALIVE = 30


@dataclass(frozen=True)
class ServeOptions:
    """What `timbal serve` was asked for (its flags)."""

    sources: tuple[Path, ...] = (Path("."),)
    host: str = "127.0.0.1"
    port: int = 8000
    saver_uri: str | None = None
    api_key_env: str | None = None
    no_auth: bool = False
    reload: bool = False
    ui: bool = True


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_api_key(env_var: str | None) -> str | None:
    """The key in environment variable `env_var` (None when no variable is named);
    InputError when the variable is unset or empty."""
    if env_var is None:
        return None
    key = os.environ.get(env_var, "").strip()
    if not key:
        raise InputError(f"--api-key-env {env_var}: the environment variable is not set (or empty)")
    return key


def check_listen_address(host: str, api_key: str | None, no_auth: bool) -> None:
    """Refuse to listen beyond this machine without a key, unless told `--no-auth`."""
    if api_key is None and not no_auth and not is_loopback(host):
        raise InputError(
            f"refusing to listen on {host} without an API key: anyone who reaches it could run "
            "your flows; pass --api-key-env VAR (clients send Authorization: Bearer $VAR), "
            "or --no-auth if that is what you want"
        )


class _DrainingServer(uvicorn.Server):
    """uvicorn, with SPEC §8's shutdown: drain the runs in flight before stopping."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Called by signal.signal in the main thread, between two bytecodes of the loop.
        loop = self._loop
        if loop is None:
            self.should_exit = True
            return
        if not self.state.draining:
            self.state.draining = True
            loop.call_soon_threadsafe(self._start_drain, DRAIN_SECONDS)
        else:  # a second signal: no more waiting
            loop.call_soon_threadsafe(self._start_drain, 0.0)

    def _start_drain(self, seconds: float) -> None:
        self._drain_task = asyncio.ensure_future(self._drain(seconds))

    async def _drain(self, seconds: float) -> None:
        for server in getattr(self, "servers", []):
            server.close()  # no new connections
        running = len(self.state.live.running)
        if running and seconds:
            _say(f"stopping: {running} run(s) in flight get up to {seconds:g}s to finish")
        left = await self.state.live.drain(seconds)
        if left:
            _say(f"recorded {len(left)} run(s) interrupted (resumable): {', '.join(left)}")
        self.should_exit = True


def _say(message: str) -> None:
    print(f"timbal serve: {message}", file=sys.stderr, flush=True)


def _settle_heap() -> None:
    """Before serving: move what start-up made (modules, the compiled flows, the app) out of
    the garbage collector's sight. A full collection then walks only what requests made,
    not the whole heap: it used to pause every request in flight for tens of ms."""
    gc.collect()
    gc.freeze()


def serve(options: ServeOptions) -> int:
    """Load the flows and serve them until stopped; the exit code (0 after a clean stop).
    Raises FlowError / InputError (exit 2) for broken flows, clashing names, a bad saver or
    an address that needs a key."""
    api_key = read_api_key(options.api_key_env)
    check_listen_address(options.host, api_key, options.no_auth)
    saver = None
    if options.saver_uri:
        from ..savers import saver_from_uri

        saver = saver_from_uri(options.saver_uri)
    catalog = FlowCatalog(list(options.sources), saver)
    try:
        catalog.load()
        app = create_app(catalog, api_key=api_key, include_ui=options.ui, reload=options.reload)
        config = uvicorn.Config(
            app, host=options.host, port=options.port, log_level="warning",
            timeout_graceful_shutdown=_CLOSE_SECONDS, lifespan="on", timeout_keep_alive=_KEEP_ALIVE,
        )
        server = _DrainingServer(config, app.state.timbal)
        _settle_heap()
        names = ", ".join(catalog.names())
        auth = "key required" if api_key else "no key"
        _say(f"serving {names} on http://{options.host}:{options.port} ({auth}"
             f"{', reloading on changes' if options.reload else ''})")
        server.run()
        if not server.started:
            raise InputError(f"could not listen on {options.host}:{options.port} (is the port in use?)")
    finally:
        catalog.close()
    _say("stopped")
    return 0

