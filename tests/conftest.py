"""Shared fixtures. Keep each one small; add new ones below the existing ones."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from testkit import POSTGRES_DSN, LiveProcess

# litellm must never reach the network (its cost map) nor print banners in tests.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from runner.models import OPENAI_CLIENT_VAR, ModelRequest  # noqa: E402
from runner.testing import FakeOpenAIServer  # noqa: E402


@pytest.fixture(params=["native", "litellm"])
def openai_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per client of ``openai/…`` models: our httpx client (`native`) and
    litellm. Both must behave the same; CLI subprocesses inherit the choice."""
    if request.param == "litellm":
        monkeypatch.setenv(OPENAI_CLIENT_VAR, "litellm")
    else:
        monkeypatch.delenv(OPENAI_CLIENT_VAR, raising=False)
    return str(request.param)


@pytest.fixture
def openai_server(openai_client: str) -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server on loopback, fresh for each test.

    Script it with ``openai_server.queue("text" | FakeReply(...))``, set ``.latency`` or
    ``.responder``; read what it received from ``.requests`` (JSON bodies, in order).
    Every test that uses it runs twice, once per client of ``openai/…`` models
    (`openai_client`): both must behave the same.
    """
    with FakeOpenAIServer() as server:
        yield server


@dataclass
class FakeModel:
    """How to call the fake server as an ``openai/…`` model: `model` plus `params` for a step."""

    server: FakeOpenAIServer
    model: str = "openai/fake-model"
    params: dict[str, Any] = field(default_factory=dict)

    def request(self, messages: list[dict[str, Any]] | str, **fields: Any) -> ModelRequest:
        """A ModelRequest for the fake server (a str is one user message); `params` merge in."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        params = {**self.params, **fields.pop("params", {})}
        return ModelRequest(model=self.model, messages=messages, params=params, **fields)


@pytest.fixture
def fake_model(openai_server: FakeOpenAIServer) -> FakeModel:
    """The fake server as a model: ``openai/fake-model`` with api_base and a test key."""
    return FakeModel(openai_server, params={"api_base": openai_server.url, "api_key": "sk-test"})


@pytest.fixture
def openai_env(
    openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> FakeOpenAIServer:
    """Point every ``openai/*`` model at the fake server through OPENAI_API_BASE (no key set),
    for flows that name a model without params."""
    monkeypatch.setenv("OPENAI_API_BASE", openai_server.url)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return openai_server


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The test PostgreSQL server (env TIMBAL_TEST_POSTGRES_DSN). Skips when it is
    unreachable, except under CI=true, where it fails instead."""
    try:
        import psycopg

        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any reason the server can't be used
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"PostgreSQL at {POSTGRES_DSN} is required under CI: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_DSN} is unreachable: {exc}")
    return POSTGRES_DSN


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema name for one test; dropped afterwards."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Callable[..., LiveProcess]]:
    """Start `timbal run FLOW --watch ARGS` in tmp_path: ``watch("flow.yaml", "-i", ...)``;
    every watcher started is killed after the test."""
    started: list[LiveProcess] = []

    def start(flow: str | Path, *args: str, env: dict[str, str] | None = None) -> LiveProcess:
        live = LiveProcess("run", str(flow), "--watch", *args, cwd=tmp_path, env=env)
        started.append(live)
        return live

    yield start
    for live in started:
        live.close()


# -- the web page: a real browser against a real `timbal serve` ---------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright. Skips when either is missing, except under
    CI=true, where it fails instead (`.ci/run` installs chromium). One per test module:
    Playwright's sync API keeps an event loop running in the main thread while it is open,
    and a later module's `asyncio.run` would fail beside it."""
    from uikit import CHROMIUM, CHROMIUM_ARGS, in_ci

    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        reason = f"playwright is not installed: {exc}"
    if reason is None and not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if reason:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page. The test fails if the page asked anything of another host
    than the loopback server, or if its scripts threw."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # generous for 2 shared cores; reached only on failure
    context = browser.new_context()
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    outside = [u for u in requests if not u.startswith(("http://127.0.0.1:", "blob:http://127.0.0.1:", "about:", "data:"))]
    assert not outside, f"the page reached outside the server: {outside}"
    assert not errors, f"the page's scripts threw: {errors}"


@pytest.fixture(scope="module")
def serve_ui() -> Iterator[Callable[..., Any]]:
    """Start `timbal serve FOLDER [ARGS…]` on a free loopback port: `serve_ui(folder, *args,
    saver=URI)`; every server started is stopped at the end of the module."""
    from testkit import ServeProcess

    started: list[ServeProcess] = []

    def start(folder: Path, *args: str, saver: str | None = None) -> ServeProcess:
        extra = ("--saver", saver) if saver else ()
        server = ServeProcess(str(folder), *args, *extra, cwd=folder)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
