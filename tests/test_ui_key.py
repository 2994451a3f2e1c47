"""The web page of a `timbal serve` that has an API key (SPEC §8: every request but
`GET /health` needs `Authorization: Bearer KEY`, else 401).

Every page and asset answers 401 without the key, like every API route. A browser opening a
page without it gets, with that 401, a small key page (inline, no data) that asks for the key
(or takes the one the tab already gave), keeps it in the tab's sessionStorage, fetches the
real page and its assets with it and shows the page in place; the page then sends the key on
every call (its run events too, read with fetch) and forgets it when asked. Real server, real
chromium; the browser tests wait on what the page shows, never on time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from testkit import ServeProcess, child_env, write
from uikit import send_chat

KEY = "page-key-5f0c1e"
WRONG = "not-the-key"
DESCRIPTION = "A friendly echo behind a key."

CHAT_FLOW = f"""
    version: 1
    name: chat
    description: {DESCRIPTION}
    inputs:
      prompt: {{type: string, description: The user's message}}
    defaults: {{model: echo}}
    steps:
      - id: reply
        memory_id: session
        prompt: "{{{{ inputs.prompt }}}}"
    outputs:
      reply: "{{{{ reply.return }}}}"
    """


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`timbal serve --api-key-env PAGE_KEY` on one chat flow with a SQLite saver."""
    folder = tmp_path_factory.mktemp("keyed")
    write(folder / "chat.yaml", CHAT_FLOW)
    server = ServeProcess(str(folder), "--api-key-env", "PAGE_KEY", "--saver", f"sqlite:{folder / 'state.db'}",
                          cwd=folder, env=child_env(PAGE_KEY=KEY))
    yield server
    server.close()


def with_key(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- over HTTP: nothing answers without the key ---------------------------------------------
#: What a browser sends when it opens a page.
OPENING = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_pages_and_assets_answer_401_without_the_key(keyed: ServeProcess) -> None:
    run = httpx.post(f"{keyed.url}/flows/chat/runs", json={"inputs": {"prompt": "secret words"}},
                     headers=with_key(), timeout=30).json()
    pages = ["/", "/ui/runs", f"/ui/runs/{run['run_id']}", "/ui/flows/chat", "/ui/flows/chat/chat"]
    assets: set[str] = set()
    key_pages = set()
    for path in pages:
        page = httpx.get(keyed.url + path, headers=with_key())
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assets.update(re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text))
        for headers in ({}, with_key(WRONG), {**OPENING, **with_key(WRONG)}, {"Accept": "application/json"}):
            refused = httpx.get(keyed.url + path, headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", (path, headers)
            if "Accept" not in headers or "text/html" not in headers["Accept"]:
                assert refused.json()["code"] == "invalid_api_key", (path, headers)
        # a browser opening the page: still a 401, whose body is the key page
        opened = httpx.get(keyed.url + path, headers=OPENING)
        assert opened.status_code == 401 and opened.headers["www-authenticate"] == "Bearer", path
        assert opened.headers["content-type"].startswith("text/html"), path
        assert opened.headers["cache-control"] == "no-store"
        for data in (DESCRIPTION, "chat", "echo", "secret words", run["run_id"], KEY):
            assert data not in opened.text, (path, data)
        key_pages.add(opened.text)
        # POST and HEAD on a page get the API's 401
        for method in ("POST", "HEAD"):
            answer = httpx.request(method, keyed.url + path, headers=OPENING)
            assert answer.status_code == 401 and "text/html" not in answer.headers["content-type"], (method, path)
    assert len(key_pages) == 1  # the same page for every URL: it fetches its URL's page itself
    key_page = key_pages.pop()
    assert 'id="key-input"' in key_page
    # self-contained: no asset but an empty data: icon, inline script and style allowed by hash only
    assert re.findall(r'(?:src|href)="([^"]*)"', key_page) == ["data:,"]
    policy = httpx.get(keyed.url + "/", headers=OPENING).headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy and "'sha256-" in policy and "default-src 'self'" in policy

    assert {"/ui/static/api.js", "/ui/static/timbal.css", "/ui/static/favicon.svg"} <= assets
    for asset in assets:
        assert httpx.get(keyed.url + asset, headers=with_key()).status_code == 200, asset
        for headers in ({}, OPENING, with_key(WRONG)):  # an asset never gets the key page
            refused = httpx.get(keyed.url + asset, headers=headers)
            assert refused.status_code == 401 and refused.json()["code"] == "invalid_api_key", (asset, headers)
    # the home page lists the flows for a request with the key
    assert DESCRIPTION in httpx.get(keyed.url + "/", headers=with_key()).text


def test_every_api_route_answers_401_without_the_key(keyed: ServeProcess) -> None:
    run = httpx.post(f"{keyed.url}/flows/chat/runs", json={"inputs": {"prompt": "hi"}},
                     headers=with_key(), timeout=30).json()
    document = httpx.get(keyed.url + "/openapi.json", headers=with_key()).json()
    values = {"name": "chat", "model": "chat", "run_id": run["run_id"]}
    asked = set()
    for template, methods in document["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
        for method in methods:
            if (method, path) == ("get", "/health"):
                continue
            for headers in ({}, with_key(WRONG), {"Authorization": KEY}):  # no key, a wrong one, no scheme
                answer = httpx.request(method.upper(), keyed.url + path, json={} if method == "post" else None,
                                       headers=headers)
                assert answer.status_code == 401, (method, path, headers, answer.status_code)
                assert KEY not in answer.text
            asked.add(f"{method.upper()} {template}")
    spec_routes = {
        "GET /flows", "GET /flows/{name}", "POST /flows/{name}/runs", "GET /runs", "GET /runs/{run_id}",
        "GET /runs/{run_id}/tree", "DELETE /runs/{run_id}", "GET /runs/{run_id}/events",
        "POST /runs/{run_id}/resume", "POST /runs/{run_id}/cancel", "GET /v1/models", "POST /v1/chat/completions",
    }
    assert spec_routes <= asked, spec_routes - asked
    for path in ("/openapi.json", "/docs"):
        assert httpx.get(keyed.url + path).status_code == 401, path
    # and the run is untouched: nothing above deleted or cancelled it
    assert httpx.get(f"{keyed.url}/runs/{run['run_id']}", headers=with_key()).json()["status"] == "succeeded"


# -- in the browser -------------------------------------------------------------------------
@pytest.mark.browser
def test_the_page_asks_for_the_key_keeps_it_for_the_tab_and_forgets_it(page, keyed: ServeProcess) -> None:
    from playwright.sync_api import expect

    # Every time a key form is shown (the key page's or a page's own), it takes the focus.
    asked: list[str] = []
    page.expose_function("keyFormShown", lambda: asked.append(page.url))
    page.add_init_script("""{
      const focus = HTMLElement.prototype.focus;
      HTMLElement.prototype.focus = function (...args) {
        if (this.id === "key-input") window.keyFormShown();
        return focus.apply(this, args);
      };
    }""")
    # and every page the browser opens gets a 401 from the server: it is the key page that asks
    opened: list[int] = []
    page.on("response", lambda r: opened.append(r.status) if r.request.is_navigation_request() else None)

    assert page.goto(keyed.url + "/").status == 401
    key_box = page.get_by_label("API key", exact=True)
    expect(key_box).to_be_visible()
    assert DESCRIPTION not in page.content()
    key_box.fill(WRONG)
    page.get_by_role("button", name="Use this key").click()
    expect(page.get_by_role("alert")).to_contain_text("The server refused that key")
    expect(key_box).to_be_visible()
    expect(key_box).to_have_value("")
    key_box.fill(KEY)
    key_box.press("Enter")
    expect(page.locator("li.card[data-flow=chat]")).to_contain_text(DESCRIPTION)
    expect(key_box).to_be_hidden()
    expect(page.get_by_role("alert")).to_have_count(0)
    assert page.url == keyed.url + "/"
    # the page's stylesheet came too (fetched with the key)
    assert page.locator("header.top").evaluate("e => getComputedStyle(e).display") == "flex"
    assert len(asked) == 2  # the form, then again for the wrong key

    # a run from the form (a link: a new page, opened with the tab's key, no prompt): its reply
    # streams through the (keyed) events, then the outputs
    page.locator("li.card[data-flow=chat]").get_by_role("link", name="Run", exact=True).click()
    page.get_by_label("prompt").fill("hello behind a key")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("pre.stream[data-step=reply]")).to_contain_text("hello behind a key")
    expect(page.locator("pre[data-output=reply]")).to_have_text("echo (1 message): hello behind a key")
    run_id = page.locator("#run-link").inner_text()
    assert page.url == f"{keyed.url}/ui/flows/chat"

    # the runs view shows it, and so does the run's own page; a reload keeps the key
    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.locator(f"tr[data-run='{run_id}']")).to_contain_text("hello behind a key")
    page.get_by_role("link", name=run_id).click()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("tr[data-step=reply]")).to_contain_text("succeeded")
    assert page.url == f"{keyed.url}/ui/runs/{run_id}"
    page.reload()
    expect(page.locator("tr[data-step=reply]")).to_contain_text("succeeded")
    expect(key_box).to_be_hidden()

    # the chat streams its replies too
    page.goto(f"{keyed.url}/ui/flows/chat/chat")
    send_chat(page, "a keyed chat")
    expect(page.locator("li.turn").first).to_contain_text("echo (1 message): a keyed chat")
    assert len(asked) == 2  # no page since the first asked again
    assert opened and set(opened) == {401}, opened

    # the key is in sessionStorage only: no cookie, no localStorage, not in the URL or the page
    assert page.evaluate("() => sessionStorage.getItem('timbal.api-key')") == KEY
    assert page.evaluate("() => localStorage.length") == 0
    assert page.context.cookies() == []
    assert KEY not in page.url and KEY not in page.content()

    # forgetting it: asked again, and nothing loads until it is given
    page.get_by_role("button", name="Forget the API key").click()
    expect(key_box).to_be_visible()
    expect(page.get_by_role("button", name="Forget the API key")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.getItem('timbal.api-key')") is None
    assert "a keyed chat" not in page.content()
    assert len(asked) == 3
    key_box.fill(KEY)
    key_box.press("Enter")
    expect(page.locator("li.turn").first).to_contain_text("a keyed chat")

    # the key never reached the saved state or the server's output (this stops the module's
    # server: the tests above it in this file have used it already)
    state = b"".join(f.read_bytes() for f in Path(keyed.cwd).glob("state.db*"))  # with its WAL
    assert KEY.encode() not in state and b"a keyed chat" in state
    assert keyed.terminate() == 0
    assert KEY not in keyed.stderr_text()


@pytest.mark.browser
def test_a_dropped_event_stream_reconnects_from_the_last_event_id(page, tmp_path: Path) -> None:
    """The page reads run events with fetch: a stream cut off mid-run is opened again with
    `Last-Event-ID`, as EventSource did, and each step shows once."""
    from playwright.sync_api import expect

    write(tmp_path / "chat.yaml", CHAT_FLOW)
    server = ServeProcess(str(tmp_path), "--api-key-env", "PAGE_KEY", cwd=tmp_path, env=child_env(PAGE_KEY=KEY))
    try:
        asked: list[dict[str, str]] = []

        def cut_the_first(route) -> None:
            asked.append(route.request.headers)
            if len(asked) > 1:
                route.continue_()
                return
            whole = route.fetch().text()  # the stream of a run this fast is over by now
            frames = whole.replace("\r\n", "\n").split("\n\n")
            cut = next(i for i, f in enumerate(frames) if re.search(r"^id: 2$", f, re.M))
            route.fulfill(status=200, content_type="text/event-stream",
                          body="\n\n".join(frames[: cut + 1]) + "\n\n")

        page.route("**/runs/*/events", cut_the_first)
        page.goto(f"{server.url}/ui/flows/chat")
        page.get_by_label("API key", exact=True).fill(KEY)
        page.get_by_label("API key", exact=True).press("Enter")
        page.get_by_label("prompt").fill("cut and resumed")
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.locator("pre[data-output=reply]")).to_have_text("echo (1 message): cut and resumed")
        expect(page.locator("ol.live-steps > li")).to_have_count(1)  # the step, once
        expect(page.locator("#run-result .status").first).to_have_text("succeeded")
        assert len(asked) == 2
        assert "last-event-id" not in asked[0] and asked[1]["last-event-id"] == "2"
        assert all(h["authorization"] == f"Bearer {KEY}" for h in asked)
    finally:
        server.close()
