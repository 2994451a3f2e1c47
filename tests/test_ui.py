"""The web page of `timbal serve` in a real browser: Debian's chromium driven by Playwright,
against a real `timbal serve` subprocess on loopback serving echo-model flows.

Each test waits on what the page shows (Playwright's auto-waiting `expect`), never on time.
Every page a test opens records its requests; the `page` fixture fails a test whose page
asked anything of another origin.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from testkit import ServeProcess, edit, wait_until, write
from uikit import send_chat

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

# -- the flows every test here serves -----------------------------------------------------
FLOWS = {
    "chat.yaml": """
        version: 1
        name: chat
        description: A friendly echo that remembers the conversation.
        inputs:
          prompt: {type: string, description: The user's message}
          tone: {type: string, enum: [friendly, formal], default: friendly, description: How to answer}
        defaults: {model: echo}
        steps:
          - id: reply
            memory_id: session
            system: "Be {{ inputs.tone }}."
            prompt: "{{ inputs.prompt }}"
        outputs:
          reply: "{{ reply.return }}"
        """,
    "typed.yaml": """
        version: 1
        name: typed
        description: Every input type the form knows, rendered without a model.
        inputs:
          count: {type: integer, default: 2, description: How many times}
          ratio: {type: number, description: A fraction}
          loud: {type: boolean, default: false}
          tags: {type: array, items: {type: string}, description: A JSON list of tags}
          mode: {type: string, enum: [fast, careful]}
        steps:
          - id: report
            type: template
            text: "count*2={{ inputs.count * 2 }} ratio={{ inputs.ratio }} loud={{ inputs.loud }} tags={{ inputs.tags | join('+') }} mode={{ inputs.mode }}"
        """,
    "pair.yaml": """
        version: 1
        name: pair
        description: Two conversations side by side, and a sub-flow.
        inputs:
          prompt: {type: string}
        defaults: {model: echo}
        steps:
          - id: first
            memory_id: left
            prompt: "{{ inputs.prompt }}"
          - id: second
            memory_id: right
            prompt: "again: {{ inputs.prompt }}"
          - id: child
            type: flow
            flow: child.yaml
            inputs: {text: "{{ first.return }}"}
        outputs:
          left: "{{ first.return }}"
          right: "{{ second.return }}"
        """,
    "child.yaml": """
        version: 1
        name: child
        description: The sub-flow of pair.
        inputs:
          text: {type: string}
        steps:
          - id: shout
            type: template
            text: "{{ inputs.text | upper }}"
        """,
    "gated.yaml": """
        version: 1
        name: gated
        description: Fails until a file exists, then passes (resume), or waits for the file (live).
        inputs:
          gate: {type: string, description: A file path}
          wait: {type: boolean, default: false}
        defaults: {model: echo}
        steps:
          - id: before
            prompt: "before {{ inputs.gate }}"
          - id: gate
            type: python
            function: gates:pass_gate
            args: {path: "{{ inputs.gate }}", wait: "{{ inputs.wait }}", after: "{{ before.return }}"}
          - id: after
            prompt: "after {{ gate.return }}"
        """,
    "constant.yaml": """
        version: 1
        name: constant
        description: No inputs at all, so no chat.
        steps:
          - {id: answer, type: template, text: "42"}
        """,
    "gates.py": '''
        """Python steps the browser tests open and close with a file on disk."""
        import time
        from pathlib import Path


        def pass_gate(path: str, wait: bool, after: str) -> str:
            """Fail while `path` is missing; with `wait` (or a file `PATH.hold`, for a chat,
            which sends only `path`), wait for it instead (30 s at most)."""
            wait = wait or Path(path + ".hold").exists()
            deadline = time.monotonic() + 30
            while wait and not Path(path).exists() and time.monotonic() < deadline:
                time.sleep(0.02)  # a step waiting on the outside world, not a test
            if not Path(path).exists():
                raise RuntimeError(f"the gate {Path(path).name} is closed")
            return f"open ({after})"
        ''',
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, serve_ui) -> ServeProcess:
    """One `timbal serve` for this module's tests (each test makes its own runs)."""
    folder = tmp_path_factory.mktemp("ui-flows")
    for name, text in FLOWS.items():
        write(folder / name, text)
    return serve_ui(folder, saver=f"sqlite:{folder / 'state.db'}")


def run_flow(page, served: ServeProcess, flow: str, **fields: str) -> str:
    """Fill the flow page's form, run it, wait for the end; the new run's id."""
    page.goto(f"{served.url}/ui/flows/{flow}")
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#run-result .status").first).to_have_text(re.compile("succeeded|failed|waiting"))
    return page.locator("#run-link").inner_text()


# -- what the page needs of the API -------------------------------------------------------
def test_flows_name_the_input_a_chat_message_goes_to(served: ServeProcess) -> None:
    import httpx

    flows = {f["name"]: f for f in httpx.get(served.url + "/flows").json()}
    assert flows["chat"]["chat_input"] == "prompt"  # the only required string input
    assert flows["gated"]["chat_input"] == "gate"
    assert flows["constant"]["chat_input"] is None  # no input a message could go to


def test_a_background_run_streams_its_replies_to_its_followers(served: ServeProcess, tmp_path: Path) -> None:
    import httpx

    gate = tmp_path / "gate"
    started = httpx.post(served.url + "/flows/gated/runs",
                         json={"inputs": {"gate": str(gate), "wait": True}, "background": True})
    assert started.status_code == 202
    run_id = started.json()["run_id"]
    seen: list[str] = []
    with httpx.stream("GET", f"{served.url}/runs/{run_id}/events", timeout=30) as events:
        for line in events.iter_lines():
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))
                if seen[-1] == "step_chunk":
                    gate.touch()  # a chunk arrived while the run was still in flight
            if seen[-1:] == ["run_finished"]:
                break
    assert "step_chunk" in seen[: seen.index("run_finished")]
    assert gate.exists()


# -- flows and the form -------------------------------------------------------------------
def test_flows_page_lists_every_flow_with_its_description(page, served: ServeProcess) -> None:
    page.goto(served.url + "/")
    cards = page.locator("li.card")
    expect(cards).to_have_count(6)
    expect(page.locator("li.card[data-flow=constant]").get_by_role("link", name="Chat")).to_have_count(0)
    card = page.locator("li.card[data-flow=chat]")
    expect(card).to_contain_text("A friendly echo that remembers the conversation.")
    expect(card).to_contain_text("prompt")
    card.get_by_role("link", name="chat", exact=True).click()
    expect(page).to_have_url(f"{served.url}/ui/flows/chat")


def test_flow_page_draws_the_graph_without_a_library_from_elsewhere(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/pair")
    graph = page.locator("svg.graph")
    expect(graph).to_be_visible()
    expect(graph.locator("g.node")).to_have_count(3)
    expect(graph.locator("g.node[data-step=child]")).to_contain_text("flow")
    # child reads first.return: a data edge from first to child
    expect(graph.locator("g.edge-data[data-from=first][data-to=child]")).to_have_count(1)
    expect(graph.locator("title").first).to_contain_text("Execution graph of pair")


def test_form_fields_follow_the_input_schema(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/typed")
    count = page.get_by_label("count", exact=True)
    expect(count).to_have_attribute("type", "number")
    expect(count).to_have_attribute("step", "1")
    expect(count).to_have_value("2")  # the default
    expect(page.get_by_label("ratio", exact=True)).to_have_attribute("step", "any")
    loud = page.get_by_label("loud", exact=True)
    expect(loud).to_have_attribute("type", "checkbox")
    expect(loud).not_to_be_checked()
    mode = page.get_by_label("mode", exact=True)
    expect(mode.locator("option")).to_have_text(["(choose one)", "fast", "careful"])
    expect(mode).to_have_attribute("required", "")
    tags = page.get_by_label("tags", exact=True)
    expect(tags).to_have_accessible_description("A JSON list of tags")
    expect(count).to_have_accessible_description("How many times")


def test_form_sends_values_of_their_declared_types(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/typed")
    page.get_by_label("count", exact=True).fill("21")
    page.get_by_label("ratio", exact=True).fill("0.5")
    page.get_by_label("loud", exact=True).check()
    page.get_by_label("tags", exact=True).fill('["a", "b"]')
    page.get_by_label("mode", exact=True).select_option(label="careful")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#outputs")).to_contain_text(
        "count*2=42 ratio=0.5 loud=True tags=a+b mode=careful")


def test_form_says_which_field_is_wrong(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/typed")
    page.get_by_label("ratio", exact=True).fill("1")
    page.get_by_label("mode", exact=True).select_option(label="fast")
    page.get_by_label("tags", exact=True).fill("[not json")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("tags: not valid JSON")


def test_form_runs_the_flow_and_streams_its_outputs(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/chat")
    page.get_by_label("prompt").fill("hello from the form")
    page.get_by_label("tone").select_option("formal")
    page.get_by_role("button", name="Run", exact=True).click()
    # the reply step's streamed text, then the flow's output
    expect(page.locator("pre.stream[data-step=reply]")).to_contain_text("hello from the form")
    expect(page.locator("pre[data-output=reply]")).to_have_text("echo (2 messages): hello from the form")
    expect(page.locator("#run-result .status").first).to_have_text("succeeded")


def test_form_continues_the_latest_run_when_asked(page, served: ServeProcess) -> None:
    run_flow(page, served, "chat", prompt="remember me")
    page.get_by_label("prompt").fill("still there?")
    page.get_by_text("Options").click()
    page.get_by_label("Continue the latest run").check()
    page.get_by_role("button", name="Run", exact=True).click()
    # the system message, the first turn's two messages, and this one
    expect(page.locator("pre[data-output=reply]")).to_have_text("echo (4 messages): still there?")


def test_form_runs_by_keyboard_alone(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/chat")
    page.locator("body").press("Tab")  # the skip link comes first
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.get_by_label("prompt").focus()
    page.keyboard.type("typed, not clicked")
    page.keyboard.press("Control+Enter")
    expect(page.locator("pre[data-output=reply]")).to_have_text("echo (2 messages): typed, not clicked")


# -- the chat -----------------------------------------------------------------------------
def test_chat_replies_stream_and_continue_the_conversation(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/chat/chat")
    send_chat(page, "first words")
    send_chat(page, "second words")
    turns = page.locator("li.turn")
    expect(turns.nth(0)).to_contain_text("echo (2 messages): first words")
    # the second run's parent is the first: the model saw the system message and 3 more
    expect(turns.nth(1)).to_contain_text("echo (4 messages): second words")
    # the conversation is in the URL: a reload shows it again
    assert "run=" in page.url
    page.reload()
    expect(page.locator("li.turn")).to_have_count(2)


def test_chat_reply_streams_before_the_run_ends(page, served: ServeProcess, tmp_path: Path) -> None:
    """The reply of a run that is still going shows word by word as its chunks arrive."""
    gate = tmp_path / "gate-open"
    (tmp_path / "gate-open.hold").touch()  # the gate step waits for the gate instead of failing
    page.goto(f"{served.url}/ui/flows/gated/chat")
    # gated's chat input is `gate` (its single required string input)
    page.get_by_label("Message", exact=True).fill(str(gate))
    page.get_by_label("Message", exact=True).press("Enter")
    # `before` streamed while `gate` still waits for its file: the run is in flight
    expect(page.locator("#streaming-reply")).to_contain_text(f"before {gate}")
    gate.touch()
    expect(page.locator("li.turn:not(.pending)")).to_have_count(1)
    expect(page.locator("li.turn .status")).to_have_text("succeeded")  # it was in flight, not failed


def test_chat_branches_from_an_earlier_turn_and_switches_branches(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/chat/chat")
    send_chat(page, "root question")
    send_chat(page, "path one")
    page.get_by_role("button", name="Branch from turn 1").click()
    expect(page.locator("li.turn")).to_have_count(1)
    expect(page.locator("#composer-note")).to_contain_text("new branch")
    send_chat(page, "path two")
    turns = page.locator("li.turn")
    expect(turns.nth(1)).to_contain_text("echo (4 messages): path two")
    expect(page.get_by_text("path one")).to_have_count(0)  # branches never see each other
    expect(turns.nth(1)).to_contain_text("branch 2 of 2")
    # the switcher works from the keyboard
    page.get_by_role("button", name="Previous branch of turn 2").focus()
    page.keyboard.press("Enter")
    expect(page.locator("li.turn").nth(1)).to_contain_text("path one")
    expect(page.locator("li.turn").nth(1)).to_contain_text("branch 1 of 2")
    page.get_by_role("button", name="Next branch of turn 2").focus()
    page.keyboard.press("Space")
    expect(page.locator("li.turn").nth(1)).to_contain_text("path two")


def test_chat_shows_each_memory_id(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/pair/chat")
    send_chat(page, "two sides")
    picker = page.get_by_label("Conversation (memory_id)")
    expect(picker.locator("option")).to_have_text(["left", "right"])
    picker.select_option("left")
    expect(page.locator("li.turn").first).to_contain_text("echo (1 message): two sides")
    picker.select_option("right")
    expect(page.locator("li.turn").first).to_contain_text("echo (1 message): again: two sides")


def test_chat_shows_why_a_turn_failed(page, served: ServeProcess, tmp_path: Path) -> None:
    page.goto(f"{served.url}/ui/flows/gated/chat")
    page.get_by_label("Message", exact=True).fill(str(tmp_path / "shut"))
    page.get_by_label("Message", exact=True).press("Enter")
    turn = page.locator("li.turn:not(.pending)")
    expect(turn).to_have_count(1)
    expect(turn.locator(".status")).to_have_text("failed")
    expect(turn.get_by_role("alert")).to_contain_text("the gate shut is closed")


# -- runs ---------------------------------------------------------------------------------
def test_runs_are_filtered_by_flow_and_status(page, served: ServeProcess, tmp_path: Path) -> None:
    ok = run_flow(page, served, "chat", prompt="a run that succeeds")
    failed = run_flow(page, served, "gated", gate=str(tmp_path / "never"))
    page.goto(f"{served.url}/ui/runs")
    expect(page.locator(f"tr[data-run='{ok}'] td.input")).to_have_text("a run that succeeds")
    expect(page.locator(f"tr[data-run='{failed}']")).to_be_visible()
    page.get_by_label("Flow").select_option("gated")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"flow=gated&status=failed"))
    expect(page.locator(f"tr[data-run='{failed}']")).to_be_visible()
    expect(page.locator("tbody tr:not([data-status=failed])")).to_have_count(0)
    expect(page.locator(f"tr[data-run='{ok}']")).to_have_count(0)
    page.get_by_role("link", name=failed).click()
    expect(page).to_have_url(f"{served.url}/ui/runs/{failed}")


def test_run_page_shows_steps_conversations_and_branch_tree(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/chat/chat")
    send_chat(page, "tree root")
    send_chat(page, "tree leaf")
    leaf = page.locator("li.turn").nth(1).get_attribute("data-run")
    page.goto(f"{served.url}/ui/runs/{leaf}")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    step = page.locator("tr[data-step=reply]")
    expect(step).to_contain_text("succeeded")
    expect(step.locator("td.model")).to_have_text("echo")
    expect(step.locator("td.cost")).to_have_text("$0.0000")
    expect(step.locator("td.duration")).to_have_text(re.compile(r"\d+ ms|\d+\.\d s"))  # duration
    expect(step.locator("td.tokens")).to_have_text(re.compile(r"^\d+$"))  # tokens
    expect(step.locator(".bar")).to_have_count(1)
    conversation = page.locator("section.conversation[data-memory=session]")
    expect(conversation.locator("li.message")).to_have_count(4)
    expect(conversation.locator("li.message.added")).to_have_count(2)  # this run's turn
    tree = page.locator("#tree")
    expect(tree.locator("[aria-current=page]")).to_contain_text(leaf)
    root_link = tree.locator("a").first
    expect(root_link).to_be_visible()
    root_link.click()
    expect(page.locator("#tree [aria-current=page]")).to_be_visible()
    assert leaf not in page.url


def test_run_page_nests_sub_flow_records_under_their_step(page, served: ServeProcess) -> None:
    run_id = run_flow(page, served, "pair", prompt="nested")
    page.goto(f"{served.url}/ui/runs/{run_id}")
    nested = page.locator("tr[data-step='child/shout']")
    expect(nested).to_contain_text("NESTED")
    indent = nested.locator("th").evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)")
    top = page.locator("tr[data-step=child] th").evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)")
    assert indent > top


def test_resume_button_reruns_a_failed_run_from_where_it_stopped(page, served: ServeProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run_id = run_flow(page, served, "gated", gate=str(gate))
    page.goto(f"{served.url}/ui/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("tr[data-step=gate]")).to_contain_text("the gate gate is closed")
    gate.touch()
    page.get_by_role("button", name="Resume this failed run").click()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("tr[data-step=after]")).to_contain_text("succeeded")
    # `before` had succeeded: it ran once, in the first attempt
    expect(page.locator("tr[data-step=before] td.attempts")).to_have_text("1")
    expect(page.get_by_role("button", name=re.compile("Resume"))).to_have_count(0)


def test_run_page_follows_a_run_in_flight(page, served: ServeProcess, tmp_path: Path) -> None:
    gate = tmp_path / "live-gate"
    page.goto(f"{served.url}/ui/flows/gated")
    page.get_by_label("gate", exact=True).fill(str(gate))
    page.get_by_label("wait", exact=True).check()
    page.get_by_role("button", name="Run", exact=True).click()
    link = page.locator("#run-link")
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator("#live-section")).to_be_visible()
    expect(page.locator("tr[data-step=before]")).to_contain_text("succeeded")
    expect(page.locator("tr[data-step=after]")).to_have_count(0)
    gate.touch()  # the run goes on; the page shows it without a reload
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("tr[data-step=after]")).to_contain_text("succeeded")
    expect(page.locator("#live-section")).to_be_hidden()


@pytest.mark.postgres
def test_a_run_in_flight_on_one_server_shows_live_on_another(
    page, serve_ui, postgres_dsn: str, postgres_schema: str, tmp_path: Path
) -> None:
    """Two servers on one PostgreSQL saver: the page of one follows a run the other runs."""
    import httpx

    saver = f"state_saver: {{type: postgres, dsn: '{postgres_dsn}', schema: {postgres_schema}}}\n"
    write(tmp_path / "gated.yaml", FLOWS["gated.yaml"])
    (tmp_path / "gated.yaml").write_text((tmp_path / "gated.yaml").read_text() + saver)
    write(tmp_path / "gates.py", FLOWS["gates.py"])
    runner_side, watcher_side = serve_ui(tmp_path), serve_ui(tmp_path)
    gate = tmp_path / "shared-gate"
    started = httpx.post(runner_side.url + "/flows/gated/runs",
                         json={"inputs": {"gate": str(gate), "wait": True}, "background": True})
    run_id = started.json()["run_id"]
    page.goto(f"{watcher_side.url}/ui/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator("tr[data-step=before]")).to_contain_text("succeeded")
    gate.touch()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("tr[data-step=after]")).to_contain_text("succeeded")


# -- the page as a whole ------------------------------------------------------------------
def test_pages_make_no_request_outside_the_server(page, served: ServeProcess) -> None:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    # markup in a run's values is shown as text, never loaded
    hostile = '<img src="https://example.com/pixel.png"><script>fetch("https://example.com")</script>'
    run_id = run_flow(page, served, "chat", prompt=hostile)
    expect(page.locator("pre[data-output=reply]")).to_contain_text(hostile)
    for path in ("/", "/ui/runs", f"/ui/runs/{run_id}", "/ui/flows/pair", "/ui/flows/chat/chat"):
        page.goto(served.url + path)
        expect(page.locator("main")).not_to_contain_text("Loading…")
    outside = [url for url in seen if not url.startswith(served.url + "/")]
    assert len(seen) > 10 and not outside, outside


def test_an_unknown_run_or_flow_shows_the_servers_message(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/runs/01NOSUCHRUN")
    expect(page.get_by_role("alert")).to_contain_text("01NOSUCHRUN")
    page.goto(f"{served.url}/ui/flows/nosuchflow")
    expect(page.get_by_role("alert")).to_contain_text("nosuchflow")
    expect(page.locator("#run-form")).to_be_hidden()


def test_every_field_has_a_label(page, served: ServeProcess) -> None:
    for path in ("/ui/flows/typed", "/ui/flows/chat", "/ui/flows/pair/chat", "/ui/runs"):
        page.goto(served.url + path)
        expect(page.locator("main")).not_to_contain_text("Loading…")
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map(e => e.id || e.name || e.outerHTML)""")
        assert unlabelled == [], (path, unlabelled)
        nameless = page.evaluate("""() => [...document.querySelectorAll('button, a')]
            .filter(e => !(e.textContent.trim() || e.getAttribute('aria-label'))).map(e => e.outerHTML)""")
        assert nameless == [], (path, nameless)


def test_home_page_lists_the_flows_in_its_html_and_loads_nothing_from_elsewhere(served: ServeProcess) -> None:
    import httpx

    home = httpx.get(served.url + "/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    assert "A friendly echo that remembers the conversation." in home.text  # no script needed
    assert re.search(r"default-src 'self'", home.headers["content-security-policy"])
    assets = re.findall(r'(?:src|href)="([^"]+)"', home.text)
    assert assets and all(a.startswith(("/", "#")) for a in assets), assets
    for asset in (a for a in assets if a.startswith("/ui/static/")):
        assert httpx.get(served.url + asset).status_code == 200, asset
    # the OpenAPI document describes the JSON API, not the pages
    paths = httpx.get(served.url + "/openapi.json").json()["paths"]
    assert "/flows" in paths and not [p for p in paths if p == "/" or p.startswith("/ui")]


def test_flows_page_shows_the_located_errors_of_a_broken_edit(page, serve_ui, tmp_path: Path) -> None:
    import httpx

    flow = write(tmp_path / "chat.yaml", FLOWS["chat.yaml"])
    server = serve_ui(tmp_path, "--reload")
    edit(flow, "prompt: \"{{ inputs.prompt }}\"", "prompt: \"{{ inputs.promt }}\"")
    wait_until(lambda: httpx.get(server.url + "/flows").json()[0]["errors"], what="the reload's errors")
    page.goto(server.url + "/")
    alert = page.locator("li.card[data-flow=chat]").get_by_role("alert")
    expect(alert).to_contain_text("the last good version is served")
    expect(alert).to_contain_text(re.compile(r"chat\.yaml:\d+:\d+: error: .*promt"))


def test_no_ui_serves_only_the_api(serve_ui, tmp_path: Path) -> None:
    write(tmp_path / "chat.yaml", FLOWS["chat.yaml"])
    server = serve_ui(tmp_path, "--no-ui")
    import httpx

    assert httpx.get(server.url + "/").status_code == 404
    assert httpx.get(server.url + "/ui/static/api.js").status_code == 404
    assert httpx.get(server.url + "/flows").status_code == 200


def test_deleting_a_run_deletes_its_branches_once_confirmed(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/pair/chat")
    send_chat(page, "soon gone")
    send_chat(page, "gone too")
    first, second = (t.get_attribute("data-run") for t in page.locator("li.turn").all())
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.goto(f"{served.url}/ui/runs/{first}")
    page.get_by_role("button", name="Delete this run").click()
    expect(page).to_have_url(f"{served.url}/ui/runs?flow=pair")
    assert asked == [f"Delete run {first} and the 1 run(s) that branch off it?"]
    expect(page.locator("#runs")).not_to_contain_text("Loading…")
    expect(page.locator(f"tr[data-run='{first}'], tr[data-run='{second}']")).to_have_count(0)


def test_cancel_then_resume_an_interrupted_run(page, served: ServeProcess, tmp_path: Path) -> None:
    gate = tmp_path / "cancel-gate"
    page.goto(f"{served.url}/ui/flows/gated")
    page.get_by_label("gate", exact=True).fill(str(gate))
    page.get_by_label("wait", exact=True).check()
    page.get_by_role("button", name="Run", exact=True).click()
    page.locator("#run-link").click()
    expect(page.locator("tr[data-step=before]")).to_contain_text("succeeded")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#run-status")).to_have_text("interrupted")
    gate.touch()
    page.get_by_role("button", name="Resume this interrupted run").click()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("tr[data-step=after]")).to_contain_text("succeeded")
