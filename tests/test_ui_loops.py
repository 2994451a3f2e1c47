"""The web page with map, loop and input steps (SPEC §7): their records nested on the run's
timeline, their bodies drawn in the graph, and a waiting run answered from its page."""

from __future__ import annotations

import re

import pytest
from testkit import ServeProcess, write

pytestmark = pytest.mark.browser

expect = pytest.importorskip("playwright.sync_api").expect

FLOW = """
    version: 1
    name: review
    description: A map over items, a loop, and a question for a person.
    inputs:
      items: {type: array, items: {type: string}, default: [apple, pear]}
    defaults: {model: echo}
    steps:
      - id: each
        type: map
        items: "{{ inputs.items }}"
        as: doc
        steps:
          - id: say
            prompt: "item {{ doc }}"
      - id: again
        type: loop
        max_iterations: 2
        until: "{{ false }}"
        on_max_iterations: succeed
        steps:
          - id: round
            type: template
            text: "round {{ loop.index }}"
      - id: approve
        type: input
        prompt: "Publish {{ each.return | length }} items?"
        schema: {type: boolean}
      - id: done
        type: template
        text: "approved={{ approve.return }} after {{ again.return }}"
    outputs:
      result: "{{ done.return }}"
    """


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, serve_ui) -> ServeProcess:
    folder = tmp_path_factory.mktemp("ui-loops")
    write(folder / "review.yaml", FLOW)
    return serve_ui(folder, saver=f"sqlite:{folder / 'state.db'}")


def start_waiting_run(page, served: ServeProcess) -> str:
    """Run `review` from its form; it stops at the question. The run's id."""
    page.goto(f"{served.url}/ui/flows/review")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#run-result .status").first).to_have_text("waiting")
    expect(page.locator("ol.live-steps li").filter(has_text="approve")).to_contain_text("waiting")
    return page.locator("#run-link").inner_text()


def test_graph_draws_map_and_loop_bodies_inside_their_step(page, served: ServeProcess) -> None:
    page.goto(f"{served.url}/ui/flows/review")
    each = page.locator("svg.graph g.node[data-step=each]")
    expect(each).to_have_class(re.compile("cluster"))
    expect(each.locator("g.node[data-step=say]")).to_have_count(1)
    expect(page.locator("svg.graph g.node[data-step=again] g.node[data-step=round]")).to_have_count(1)


def test_run_page_nests_map_items_and_loop_iterations(page, served: ServeProcess) -> None:
    run_id = start_waiting_run(page, served)
    page.goto(f"{served.url}/ui/runs/{run_id}")
    for step_id, text in (("each[0]/say", "item apple"), ("each[1]/say", "item pear"),
                          ("again#1/round", "round 1"), ("again#2/round", "round 2")):
        row = page.locator(f"tr[data-step='{step_id}']")
        expect(row).to_contain_text(text)
        assert row.locator("th").evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)") > \
            page.locator("tr[data-step=each] th").evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)")


def test_run_page_lists_each_steps_records_right_under_it(page, served: ServeProcess) -> None:
    run_id = start_waiting_run(page, served)
    page.goto(f"{served.url}/ui/runs/{run_id}")
    expect(page.locator("tr[data-step='again#2/round']")).to_be_visible()
    rows = page.locator("table.timeline tbody tr").evaluate_all("rows => rows.map(r => r.dataset.step)")
    at = rows.index("each")
    assert rows[at + 1:at + 3] == ["each[0]/say", "each[1]/say"], rows
    at = rows.index("again")
    assert rows[at + 1:at + 3] == ["again#1/round", "again#2/round"], rows


def test_a_waiting_run_is_answered_from_its_page(page, served: ServeProcess) -> None:
    run_id = start_waiting_run(page, served)
    page.goto(f"{served.url}/ui/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("waiting")
    answer = page.get_by_label("approve: Publish 2 items?")
    expect(answer).to_have_attribute("type", "checkbox")
    answer.check()
    page.get_by_role("button", name="Answer and go on").click()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#run-outputs")).to_contain_text("approved=True after round 2")
