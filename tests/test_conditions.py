"""`when` conditions (SPEC §1): a step is skipped when its condition renders false; a
skipped step's return is null and steps that need it are skipped too, unless they say
`allow_skipped: true`. Skipped steps append nothing to memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import ROOT, write

from runner import InMemorySaver, JSONLSaver, load_flow


def gated(tmp_path: Path, when: str, **inputs: str) -> Path:
    """A flow whose step `maybe` runs only `when`; `after` needs it, `always` allows skips."""
    declared = "".join(f"\n          {n}: {t}" for n, t in inputs.items()) or " {}"
    return write(tmp_path / "flow.yaml", f"""
        version: 1
        inputs:{declared}
        steps:
          - id: maybe
            type: template
            when: {when}
            text: "ran"
          - id: after
            type: template
            text: "after {{{{ maybe.return }}}}"
          - id: always
            type: template
            allow_skipped: true
            text: "{{{{ maybe.return is none }}}}"
        outputs:
          maybe: "{{{{ maybe.return }}}}"
          after: "{{{{ after.return }}}}"
          always: "{{{{ always.return }}}}"
    """)


def statuses(result) -> dict[str, str]:
    return {step_id: record.status for step_id, record in result.steps.items()}


def test_a_false_condition_skips_the_step_and_its_return_is_null(tmp_path):
    result = load_flow(gated(tmp_path, '"{{ 1 > 2 }}"')).run_sync()
    assert result.status == "succeeded", result.error
    assert statuses(result)["maybe"] == "skipped"
    assert result.outputs["maybe"] is None


def test_steps_that_need_a_skipped_step_are_skipped_too(tmp_path):
    result = load_flow(gated(tmp_path, '"{{ false }}"')).run_sync()
    assert statuses(result)["after"] == "skipped"
    assert result.outputs["after"] is None


def test_allow_skipped_runs_a_step_whose_dependency_was_skipped(tmp_path):
    result = load_flow(gated(tmp_path, '"{{ false }}"')).run_sync()
    assert statuses(result)["always"] == "succeeded"
    assert result.outputs["always"] is True


def test_a_true_condition_runs_the_step(tmp_path):
    result = load_flow(gated(tmp_path, '"{{ 2 > 1 }}"')).run_sync()
    assert result.outputs == {"maybe": "ran", "after": "after ran", "always": False}


@pytest.mark.parametrize("value", ["false", "False", "no", "0", "off", ""])
def test_a_condition_rendering_false_text_skips_the_step(tmp_path, value):
    flow = gated(tmp_path, '"{{ inputs.flag }}"', flag="{type: string}")
    result = load_flow(flow).run_sync({"flag": value})
    assert statuses(result)["maybe"] == "skipped"


@pytest.mark.parametrize("value", ["true", "yes", "1", "anything"])
def test_a_condition_rendering_other_text_runs_the_step(tmp_path, value):
    flow = gated(tmp_path, '"{{ inputs.flag }}"', flag="{type: string}")
    result = load_flow(flow).run_sync({"flag": value})
    assert statuses(result)["maybe"] == "succeeded"


def test_a_condition_can_read_a_boolean_input(tmp_path):
    flow = gated(tmp_path, '"{{ inputs.go }}"', go="{type: boolean, default: false}")
    assert statuses(load_flow(flow).run_sync())["maybe"] == "skipped"
    assert statuses(load_flow(flow).run_sync({"go": True}))["maybe"] == "succeeded"


def test_a_plain_false_condition_skips_the_step(tmp_path):
    result = load_flow(gated(tmp_path, "false")).run_sync()
    assert statuses(result)["maybe"] == "skipped"


def test_a_condition_can_read_an_earlier_step(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        inputs:
          n: {type: integer}
        steps:
          - {id: double, type: template, text: "{{ inputs.n * 2 }}"}
          - id: big
            type: template
            when: "{{ double.return > 10 }}"
            text: "big: {{ double.return }}"
    """)
    assert load_flow(flow).run_sync({"n": 3}).steps["big"].status == "skipped"
    assert load_flow(flow).run_sync({"n": 6}).outputs == {"big": "big: 12"}


def test_a_condition_that_fails_to_render_fails_the_step(tmp_path):
    flow = gated(tmp_path, '"{{ inputs.flag.missing }}"', flag="{type: string}")
    result = load_flow(flow).run_sync({"flag": "x"})
    assert result.status == "failed"
    assert statuses(result)["maybe"] == "failed"
    assert "maybe" in result.error


def test_a_skipped_step_is_saved_with_status_skipped(tmp_path):
    saver = JSONLSaver(tmp_path / "state.jsonl")
    result = load_flow(gated(tmp_path, '"{{ false }}"')).run_sync(saver=saver)
    saved = {s.step_id: s for s in saver.get_run(result.run_id).steps}
    assert saved["maybe"].status == "skipped"
    assert saved["maybe"].return_value is None
    assert saved["after"].status == "skipped"


def test_a_skipped_llm_step_appends_nothing_to_memory(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        defaults: {model: echo}
        steps:
          - {id: first, memory_id: chat, prompt: "one"}
          - {id: skipped, memory_id: chat, prompt: "two", when: "{{ false }}"}
          - {id: last, memory_id: chat, prompt: "three"}
    """)
    saver = InMemorySaver()
    result = load_flow(flow).run_sync(saver=saver)
    # Sharing a memory id with a skipped step orders steps; it does not skip them.
    assert result.outputs == {"last": "echo (3 messages): three"}
    contents = [m["content"] for m in saver.load_memory(result.run_id)["chat"]]
    assert contents == ["one", "echo (1 message): one", "three", "echo (3 messages): three"]


def test_outputs_read_null_for_a_skipped_step(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: unused, type: template, text: "x", when: "{{ false }}"}
    """)
    result = load_flow(flow).run_sync()
    assert result.status == "succeeded"
    assert result.outputs == {"unused": None}


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"text": "Is it on?"}, {"kind": "question", "reply": "echo (1 message): Answer: Is it on?"}),
        ({"text": "It is on"}, {"kind": "statement", "reply": "echo (1 message): Acknowledge: It is on"}),
        ({"text": "Is it on?", "translate": True},
         {"kind": "question", "reply": "echo (1 message): Translate: echo (1 message): Answer: Is it on?"}),
        ({"text": "It is on", "translate": True},
         {"kind": "statement", "reply": "echo (1 message): Acknowledge: It is on"}),
    ],
)
def test_the_conditions_example_flow_takes_the_right_branch(inputs, expected):
    result = load_flow(ROOT / "flows" / "conditions.yaml").run_sync(inputs, saver=InMemorySaver())
    assert result.status == "succeeded", result.error
    assert result.outputs == expected
