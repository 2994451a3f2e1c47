"""SPEC conformance: every checkable promise of /work/shared/SPEC.md, exercised as a user would.

One behaviour per test, named after the SPEC sentence. The CLI runs as a real subprocess
(`python -m runner.cli`), the Python API is called exactly as SPEC §5 writes it, models are
the offline `echo` and the loopback fake OpenAI server. Sections follow the SPEC's order.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import PROVIDER_VARS, TIMBAL, child_env, overlapped, start_timbal, timbal, write

from runner import (
    FlowError,
    InMemorySaver,
    JSONLSaver,
    PostgresSaver,
    SQLiteSaver,
    load_flow,
)

# --------------------------------------------------------------------------- helpers

# SPEC §1's example, verbatim (it names real providers: validating it must need no key).
SPEC_EXAMPLE = """\
# yaml-language-server: $schema=../schemas/flow.schema.json
version: 1
name: support-chat
description: Two steps share a conversation; a third works alone.

inputs:                      # declared flow inputs (JSON Schema types)
  prompt: {type: string, description: The user's message}
  tone:   {type: string, enum: [friendly, formal], default: friendly}

defaults:                    # applied to every llm step unless it overrides
  model: openai/gpt-4o-mini
  params: {temperature: 0.2}

steps:                       # a list; order matters (see memory)
  - id: chat
    memory_id: session1
    system: "You are a {{ inputs.tone }} support agent."
    prompt: "{{ inputs.prompt }}"
  - id: refine
    memory_id: session1      # shares chat's conversation
    prompt: "Say that again in one sentence."
  - id: audit
    model: anthropic/claude-3-haiku-20240307
    memory_id: auditor       # its own conversation
    prompt: "Rate this reply 1-5: {{ refine.return }}"
    params: {max_tokens: 5}

outputs:
  response: "{{ refine.return }}"
  score: "{{ audit.return }}"

state_saver:
  type: jsonl                # in_memory | jsonl | sqlite | postgres
  path: state.jsonl          # relative to this file's folder
"""

# The same flow on the offline echo model, for running it.
ECHO_EXAMPLE = SPEC_EXAMPLE.replace("openai/gpt-4o-mini", "echo").replace(
    "anthropic/claude-3-haiku-20240307", "echo"
)



def flow_file(folder: Path, body: str, name: str = "flow.yaml") -> Path:
    """A flow file: `version: 1` + `body`."""
    return write(folder / name, "version: 1\n" + textwrap.dedent(body))


def compile_errors(folder: Path, body: str, raw: bool = False) -> str:
    """The compiler's message for an invalid flow (fails the test if it compiles)."""
    text = textwrap.dedent(body) if raw else "version: 1\n" + textwrap.dedent(body)
    path = write(folder / "bad.yaml", text)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    return info.value.format()


def run_sync(path: Path, inputs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return load_flow(path).run_sync(inputs or {}, **kwargs)


ECHO_ONE = """\
    name: one
    inputs:
      prompt: {type: string}
    steps:
      - id: chat
        model: echo
        memory_id: s
        prompt: "{{ inputs.prompt }}"
    outputs:
      response: "{{ chat.return }}"
"""


def fake_flow(folder: Path, server: Any, steps: str, extra: str = "") -> Path:
    """A flow whose llm steps default to the loopback fake OpenAI server."""
    return flow_file(folder, f"""\
        name: fake
        inputs:
          prompt: {{type: string, default: hi}}
        defaults:
          model: openai/fake-model
          params: {{api_base: "{server.url}", api_key: sk-test}}
        steps:
        {textwrap.indent(textwrap.dedent(steps), "        ").lstrip()}
        {extra}""")


# =========================================================================== §1 the flow file


def test_the_example_flow_validates_verbatim_without_api_keys(tmp_path):
    path = write(tmp_path / "flows/support.yaml", SPEC_EXAMPLE)
    proc = timbal("validate", path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_example_flow_runs_on_echo_with_its_two_outputs(tmp_path):
    path = write(tmp_path / "support.yaml", ECHO_EXAMPLE)
    result = run_sync(path, {"prompt": "My order is late"}, saver=InMemorySaver())
    assert result.status == "succeeded"
    assert set(result.outputs) == {"response", "score"}
    # refine shares session1 with chat (no system of its own): 2 history + its prompt.
    assert result.outputs["response"] == "echo (3 messages): Say that again in one sentence."


@pytest.mark.parametrize(
    ("body", "key", "guess"),
    [
        ("stpes: [{id: a, type: template, text: x}]\n", "stpes", "steps"),
        ("descripton: x\nsteps: [{id: a, type: template, text: x}]\n", "descripton", "description"),
        ("steps: [{id: a, model: echo, promt: hi}]\n", "promt", "prompt"),
        ("inputs: {p: {type: string, descripton: x}}\nsteps: [{id: a, type: template, text: x}]\n",
         "descripton", "description"),
        ("defaults: {modle: echo}\nsteps: [{id: a, model: echo, prompt: x}]\n", "modle", "model"),
        ("state_saver: {type: jsonl, pth: s.jsonl}\nsteps: [{id: a, type: template, text: x}]\n",
         "pth", "path"),
    ],
    ids=["top-level", "top-level-typo", "step", "input", "defaults", "state_saver"],
)
def test_unknown_keys_are_errors_everywhere_with_a_did_you_mean(tmp_path, body, key, guess):
    message = compile_errors(tmp_path, body)
    assert f"unknown key '{key}'" in message
    if guess:
        assert f"(did you mean '{guess}'?)" in message


def test_keys_under_metadata_and_x_keys_are_free_form(tmp_path):
    path = flow_file(tmp_path, """\
        name: free
        metadata: {owner: me, anything: {goes: [1, 2]}}
        x-team: search
        inputs:
          p: {type: string, default: a, x-ui: textarea}
        defaults: {model: echo, x-note: fine}
        steps:
          - id: a
            prompt: "{{ inputs.p }}"
            x-comment: ok
            metadata: {free: form}
        outputs: {out: "{{ a.return }}"}
        state_saver: {type: in_memory, x-why: tests}
        """)
    assert load_flow(path).run_sync({}).status == "succeeded"


def test_a_key_given_twice_in_one_mapping_is_an_error(tmp_path):
    message = compile_errors(tmp_path, """\
        steps:
          - id: a
            type: template
            text: one
            text: two
        """)
    assert "text" in message and "bad.yaml:6:" in message


def test_a_top_level_key_given_twice_is_an_error(tmp_path):
    message = compile_errors(tmp_path, """\
        name: a
        name: b
        steps: [{id: a, type: template, text: x}]
        """)
    assert "bad.yaml:3:" in message and "name" in message


@pytest.mark.parametrize("version", ["2", "0", '"1"', "1.5", "null"])
def test_version_other_than_1_is_an_error(tmp_path, version):
    message = compile_errors(
        tmp_path, f"version: {version}\nsteps: [{{id: a, type: template, text: x}}]\n", raw=True
    )
    assert "version" in message


@pytest.mark.parametrize("step_id", ["Chat", "1st", "a-b", "a.b", "", "ünï"])
def test_step_ids_must_match_the_id_pattern(tmp_path, step_id):
    message = compile_errors(tmp_path, f"steps: [{{id: {json.dumps(step_id)}, type: template, text: x}}]\n")
    assert "error" in message


def test_step_ids_may_use_lowercase_digits_and_underscores(tmp_path):
    path = flow_file(tmp_path, "steps: [{id: _a1_b, type: template, text: x}]\n")
    assert load_flow(path).run_sync({}).outputs == {"_a1_b": "x"}


def test_step_ids_are_unique(tmp_path):
    message = compile_errors(tmp_path, """\
        steps:
          - {id: a, type: template, text: x}
          - {id: a, type: template, text: y}
        """)
    assert "duplicate step id 'a'" in message


@pytest.mark.parametrize(
    "name",
    ["inputs", "env", "run", "memory", "loop", "range", "dict", "lipsum", "cycler", "joiner",
     "namespace"],
)
def test_a_step_id_may_not_be_a_reserved_template_name(tmp_path, name):
    message = compile_errors(tmp_path, f"steps: [{{id: {name}, type: template, text: x}}]\n")
    assert f"'{name}'" in message and "reserved" in message


@pytest.mark.parametrize("key", ["model", "memory_id"])
def test_fields_that_are_not_rendered_refuse_a_template(tmp_path, key):
    message = compile_errors(tmp_path, f"""\
        inputs: {{x: {{type: string}}}}
        steps: [{{id: a, {"" if key == "model" else "model: echo, "}prompt: hi, {key}: "{{{{ inputs.x }}}}"}}]
        """)
    assert f"'{key}' is a fixed name, not a template" in message


# -- templates


def test_step_usage_renders(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: echo, prompt: one two three}
          - {id: b, type: template, text: "{{ a.usage.total_tokens }}"}
        outputs: {usage: "{{ a.usage }}", total: "{{ b.return }}"}
        """)
    out = load_flow(path).run_sync({}).outputs
    assert isinstance(out["usage"], dict) and out["usage"]["total_tokens"] > 0
    assert out["total"] == out["usage"]["total_tokens"]


def test_env_var_renders(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMBAL_SPEC_GREETING", "bonjour")
    path = flow_file(tmp_path, 'steps: [{id: a, type: template, text: "{{ env.TIMBAL_SPEC_GREETING }}!"}]\n')
    assert load_flow(path).run_sync({}).outputs == {"a": "bonjour!"}


def test_run_id_renders(tmp_path):
    path = flow_file(tmp_path, 'steps: [{id: a, type: template, text: "{{ run.id }}"}]\n')
    result = load_flow(path).run_sync({})
    assert result.outputs == {"a": result.run_id}


def test_inputs_and_step_return_render(tmp_path):
    path = flow_file(tmp_path, """\
        inputs: {who: {type: string}}
        steps:
          - {id: a, type: template, text: "hello {{ inputs.who }}"}
          - {id: b, type: template, text: "{{ a.return }}!"}
        """)
    assert load_flow(path).run_sync({"who": "ada"}).outputs == {"b": "hello ada!"}


def test_a_string_that_is_exactly_one_expression_keeps_its_native_type(tmp_path):
    path = flow_file(tmp_path, """\
        inputs:
          tags: {type: array}
          n: {type: integer}
        steps:
          - {id: a, type: template, text: "{{ inputs.tags }}"}
          - {id: b, type: template, text: "{{ inputs.n }}"}
          - {id: c, type: template, text: " {{ inputs.tags }} "}
          - {id: d, type: template, text: "n={{ inputs.n }}"}
        outputs:
          tags: "{{ a.return }}"
          n: "{{ b.return }}"
          padded: "{{ c.return }}"
          text: "{{ d.return }}"
        """)
    out = load_flow(path).run_sync({"tags": ["x", "y"], "n": 3}).outputs
    assert out["tags"] == ["x", "y"]
    assert out["n"] == 3
    assert out["text"] == "n=3"


def test_an_undefined_name_is_a_compile_error_never_empty_text(tmp_path):
    message = compile_errors(tmp_path, """\
        inputs: {prompt: {type: string}}
        steps: [{id: a, type: template, text: "say {{ inputs.promt }}"}]
        """)
    assert "unknown input 'promt'" in message and "did you mean 'prompt'" in message


def test_a_declared_optional_input_that_is_not_given_is_null_not_undefined(tmp_path):
    path = flow_file(tmp_path, """\
        inputs: {opt: {type: string, required: false}}
        steps: [{id: a, type: template, text: "{{ inputs.opt is none }}"}]
        """)
    assert load_flow(path).run_sync({}).outputs == {"a": True}


def test_an_undefined_value_at_run_time_fails_the_step_never_empty_text(tmp_path):
    path = flow_file(tmp_path, """\
        inputs: {data: {type: object}}
        steps: [{id: a, type: template, text: "x={{ inputs.data.missing }}"}]
        """)
    result = load_flow(path).run_sync({"data": {"present": 1}})
    assert result.status == "failed"
    assert result.outputs != {"a": "x="}
    assert "missing" in (result.error or "")


def test_an_unset_env_var_is_an_error_never_empty_text(tmp_path, monkeypatch):
    monkeypatch.delenv("TIMBAL_SPEC_UNSET", raising=False)
    path = flow_file(tmp_path, 'steps: [{id: a, type: template, text: "x={{ env.TIMBAL_SPEC_UNSET }}"}]\n')
    result = load_flow(path).run_sync({})
    assert result.status == "failed"
    assert "TIMBAL_SPEC_UNSET" in (result.error or "")


def test_templates_run_sandboxed(tmp_path):
    path = flow_file(tmp_path, """\
        steps: [{id: a, type: template, text: "{{ ''.__class__.__mro__[1].__subclasses__() }}"}]
        """)
    try:
        result = load_flow(path).run_sync({})
    except FlowError:
        return  # refused at compile time is fine too
    assert result.status == "failed"
    assert "subclasses" not in str(result.outputs)


# -- the graph


def test_steps_with_no_path_between_them_run_at_the_same_time(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: echo, prompt: a, params: {delay: 0.4}}
          - {id: b, model: echo, prompt: b, params: {delay: 0.4}}
          - {id: c, model: echo, prompt: c, params: {delay: 0.4}}
        """)
    result = load_flow(path).run_sync({})
    assert result.status == "succeeded"
    assert overlapped(result.steps.values())


def test_a_step_that_reads_another_runs_after_it(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: late, type: template, text: "{{ early.return }}+"}
          - {id: early, model: echo, prompt: first, params: {delay: 0.1}}
        outputs: {out: "{{ late.return }}"}
        """)
    result = load_flow(path).run_sync({})
    assert result.outputs == {"out": "echo (1 message): first+"}
    assert result.steps["early"].ended_at <= result.steps["late"].started_at


# -- when


def test_when_false_skips_the_step_and_its_return_is_null(tmp_path):
    path = flow_file(tmp_path, """\
        inputs: {go: {type: boolean}}
        steps:
          - {id: a, type: template, text: ran, when: "{{ inputs.go }}"}
          - {id: b, type: template, text: "{{ a.return is none }}", allow_skipped: true}
        outputs: {a: "{{ a.return }}", b: "{{ b.return }}"}
        """)
    result = load_flow(path).run_sync({"go": False})
    assert result.status == "succeeded"
    assert result.steps["a"].status == "skipped"
    assert result.outputs == {"a": None, "b": True}
    assert load_flow(path).run_sync({"go": True}).outputs["a"] == "ran"


def test_steps_that_need_a_skipped_step_are_skipped_too(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, type: template, text: x, when: "{{ false }}"}
          - {id: b, type: template, text: "{{ a.return }}"}
          - {id: c, type: template, text: "{{ b.return }}"}
          - {id: d, type: template, text: independent}
        """)
    result = load_flow(path).run_sync({})
    assert result.status == "succeeded"
    assert [result.steps[s].status for s in "abcd"] == ["skipped", "skipped", "skipped", "succeeded"]


def test_a_step_that_says_so_runs_although_a_step_it_needs_was_skipped(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, type: template, text: x, when: "{{ false }}"}
          - {id: b, type: template, text: "got {{ a.return }}", allow_skipped: true}
        """)
    assert load_flow(path).run_sync({}).outputs == {"b": "got None"}


# -- outputs


def test_outputs_omitted_the_output_is_the_last_steps_return_under_its_id(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: first, type: template, text: one}
          - {id: second, type: template, text: two}
        """)
    assert load_flow(path).run_sync({}).outputs == {"second": "two"}


def test_outputs_map_names_to_templates(tmp_path):
    path = flow_file(tmp_path, """\
        steps: [{id: a, type: template, text: one}]
        outputs: {x: "{{ a.return }}", both: "{{ a.return }}-{{ a.return }}"}
        """)
    assert load_flow(path).run_sync({}).outputs == {"x": "one", "both": "one-one"}


# -- step kinds


def test_type_defaults_to_llm(tmp_path):
    path = flow_file(tmp_path, "steps: [{id: a, model: echo, prompt: hi}]\n")
    assert load_flow(path).run_sync({}).outputs == {"a": "echo (1 message): hi"}


def test_an_llm_step_takes_prompt_or_messages(tmp_path):
    message = compile_errors(tmp_path, """\
        steps:
          - {id: a, model: echo, prompt: x, messages: [{role: user, content: y}]}
          - {id: b, model: echo}
        """)
    assert "step 'a' takes 'prompt' or 'messages', not both" in message
    assert "step 'b' needs 'prompt' or 'messages'" in message


def test_llm_messages_is_a_list_of_role_content_templates(tmp_path):
    path = flow_file(tmp_path, """\
        inputs: {q: {type: string}}
        steps:
          - id: a
            model: echo
            messages:
              - {role: system, content: be brief}
              - {role: user, content: "first {{ inputs.q }}"}
              - {role: assistant, content: ok}
              - {role: user, content: "second {{ inputs.q }}"}
        """)
    assert load_flow(path).run_sync({"q": "Q"}).outputs == {"a": "echo (4 messages): second Q"}


def test_llm_return_is_parsed_json_when_a_json_response_format_is_asked(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - id: a
            model: echo
            prompt: '{"score": 4}'
            params: {response_format: {type: json_object}}
        outputs: {score: "{{ a.return.score }}"}
        """)
    assert load_flow(path).run_sync({}).outputs == {"score": 4}


def test_llm_params_are_passed_to_the_provider(tmp_path, openai_server):
    path = fake_flow(tmp_path, openai_server, """\
        - {id: a, prompt: hi, params: {temperature: 0.3, max_tokens: 7}}
        """)
    assert load_flow(path).run_sync({}).status == "succeeded"
    body = openai_server.requests[-1]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 7


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")  # inside litellm
def test_llm_timeout_fails_a_call_that_takes_too_long(tmp_path, openai_server):
    from runner.testing import FakeReply

    openai_server.queue(FakeReply("too late", delay=5))
    path = fake_flow(tmp_path, openai_server, "- {id: a, prompt: hi, timeout: 0.5, retries: 0}\n")
    result = load_flow(path).run_sync({})
    assert result.status == "failed"
    assert "timed out" in result.error or "timeout" in result.error.lower(), result.error


def test_llm_retries_are_counted_in_attempts(tmp_path, openai_server):
    from runner.testing import FakeReply

    openai_server.queue(FakeReply.error(500, "boom"), "fine")
    path = fake_flow(tmp_path, openai_server, "- {id: a, prompt: hi, retries: 2}\n")
    result = load_flow(path).run_sync({})
    assert result.outputs == {"a": "fine"}
    assert result.steps["a"].attempts == 2


def test_template_step_renders_text_without_a_model(tmp_path):
    path = flow_file(tmp_path, 'inputs: {n: {type: integer}}\nsteps: [{id: t, type: template, text: "{{ inputs.n * 2 }} items"}]\n')
    result = load_flow(path).run_sync({"n": 4})
    assert result.outputs == {"t": "8 items"}
    assert result.steps["t"].model is None


def test_python_step_calls_sync_and_async_functions_found_next_to_the_flow(tmp_path):
    write(tmp_path / "helpers_spec.py", """\
        import asyncio

        def add(a, b):
            return {"sum": a + b}

        async def shout(word, times=1):
            await asyncio.sleep(0)
            return " ".join([word.upper()] * times)
        """)
    path = flow_file(tmp_path, """\
        inputs: {a: {type: integer}}
        steps:
          - {id: s, type: python, function: "helpers_spec:add", args: {a: "{{ inputs.a }}", b: 2}}
          - {id: l, type: python, function: "helpers_spec:shout", args: ["{{ s.return.sum }}x", 2]}
        outputs: {sum: "{{ s.return.sum }}", loud: "{{ l.return }}"}
        """)
    assert load_flow(path).run_sync({"a": 3}).outputs == {"sum": 5, "loud": "5X 5X"}


def test_python_step_falls_back_to_the_normal_import_path(tmp_path):
    path = flow_file(tmp_path, """\
        steps: [{id: j, type: python, function: "json:dumps", args: [[1, 2]]}]
        """)
    assert load_flow(path).run_sync({}).outputs == {"j": "[1, 2]"}


def test_python_modules_are_found_next_to_the_flow_file_first(tmp_path, monkeypatch):
    elsewhere = tmp_path / "site"
    write(elsewhere / "shadow_spec_mod.py", "def where():\n    return 'import path'\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    folder = tmp_path / "flow"
    write(folder / "shadow_spec_mod.py", "def where():\n    return 'next to the flow'\n")
    path = flow_file(folder, 'steps: [{id: w, type: python, function: "shadow_spec_mod:where"}]\n')
    assert load_flow(path).run_sync({}).outputs == {"w": "next to the flow"}


CHILD = """\
    version: 1
    name: child
    description: Answers in the shared conversation.
    inputs:
      text: {type: string}
    steps:
      - id: reply
        model: echo
        memory_id: chat
        prompt: "{{ inputs.text }}"
    outputs:
      said: "{{ reply.return }}"
"""


def test_flow_step_returns_the_childs_outputs_and_shares_the_parents_memory(tmp_path):
    write(tmp_path / "child.yaml", CHILD)
    path = flow_file(tmp_path, """\
        steps:
          - {id: ask, model: echo, memory_id: chat, prompt: one}
          - {id: sub, type: flow, flow: child.yaml, inputs: {text: two}}
          - {id: after, model: echo, memory_id: chat, prompt: three}
        outputs: {sub: "{{ sub.return }}", after: "{{ after.return }}"}
        """)
    out = load_flow(path).run_sync({}).outputs
    assert out["sub"] == {"said": "echo (3 messages): two"}
    assert out["after"] == "echo (5 messages): three"


def test_flow_step_with_memory_isolated_keeps_its_own_conversation(tmp_path):
    write(tmp_path / "child.yaml", CHILD)
    path = flow_file(tmp_path, """\
        steps:
          - {id: ask, model: echo, memory_id: chat, prompt: one}
          - {id: sub, type: flow, flow: child.yaml, memory: isolated, inputs: {text: two}}
          - {id: after, model: echo, memory_id: chat, prompt: three}
        outputs: {sub: "{{ sub.return.said }}", after: "{{ after.return }}"}
        """)
    out = load_flow(path).run_sync({}).outputs
    assert out == {"sub": "echo (1 message): two", "after": "echo (3 messages): three"}


def test_agent_calls_a_python_tool_and_answers_with_its_result(tmp_path):
    write(tmp_path / "tools_spec.py", '''\
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            return a + b
        ''')
    path = flow_file(tmp_path, """\
        inputs: {prompt: {type: string}}
        steps:
          - id: agent
            type: agent
            model: echo
            memory_id: m
            prompt: "{{ inputs.prompt }}"
            tools: [{python: "tools_spec:add"}]
        """)
    saver = InMemorySaver()
    result = load_flow(path).run_sync({"prompt": 'call add {"a": 2, "b": 3}'}, saver=saver)
    assert result.outputs == {"agent": "5"}
    memory = saver.load_memory(result.run_id)["m"]
    assert [m["role"] for m in memory] == ["user", "assistant", "tool", "assistant"]
    assert memory[1]["tool_calls"][0]["function"]["name"] == "add"


def test_agent_uses_a_flow_as_a_tool_named_by_its_description(tmp_path):
    write(tmp_path / "child.yaml", CHILD)
    path = flow_file(tmp_path, """\
        inputs: {prompt: {type: string}}
        steps:
          - id: agent
            type: agent
            model: echo
            prompt: "{{ inputs.prompt }}"
            tools: [{flow: child.yaml}]
            max_iterations: 3
        """)
    result = load_flow(path).run_sync({"prompt": 'call child {"text": "inner"}'})
    assert result.status == "succeeded", result.error
    assert "inner" in result.outputs["agent"]


def test_a_flow_used_as_a_tool_sees_the_agents_conversation_so_far(tmp_path):
    write(tmp_path / "child.yaml", CHILD)
    path = flow_file(tmp_path, """\
        inputs: {prompt: {type: string}}
        steps:
          - {id: before, model: echo, memory_id: chat, prompt: earlier}
          - id: agent
            type: agent
            model: echo
            memory_id: chat
            prompt: "{{ inputs.prompt }}"
            tools: [{flow: child.yaml}]
        """)
    result = load_flow(path).run_sync({"prompt": 'call child {"text": "inner"}'})
    assert result.status == "succeeded", result.error
    # The child's `chat` step sees before's two messages (at least) besides its own prompt.
    count = int(re.search(r"echo \((\d+) messages?\): inner", result.outputs["agent"]).group(1))
    assert count >= 3


def test_an_agent_counts_as_using_the_memory_ids_of_its_flow_tools(tmp_path):
    write(tmp_path / "child.yaml", CHILD)
    path = flow_file(tmp_path, """\
        steps:
          - {id: agent, type: agent, model: echo, prompt: hi, tools: [{flow: child.yaml}]}
          - {id: after, model: echo, memory_id: chat, prompt: later}
        """)
    assert "agent" in load_flow(path).graph.step("after").deps


def test_agent_tools_are_described_by_docstring_signature_and_flow_description_inputs(
        tmp_path, openai_server):
    write(tmp_path / "tools_spec.py", '''\
        import time

        def nap(label: str) -> str:
            """Sleep a little, then answer."""
            start = time.time()
            time.sleep(0.3)
            return f"slept {label} {start} {time.time()}"
        ''')
    write(tmp_path / "child.yaml", CHILD)
    from runner.testing import FakeReply

    openai_server.queue(FakeReply(tool_calls=[
        {"id": "c1", "name": "nap", "arguments": {"label": "one"}},
        {"id": "c2", "name": "nap", "arguments": {"label": "two"}},
    ]), "done")
    path = fake_flow(tmp_path, openai_server, """\
        - id: agent
          type: agent
          memory_id: m
          prompt: go
          tools: [{python: "tools_spec:nap"}, {flow: child.yaml}]
        """)
    saver = InMemorySaver()
    result = load_flow(path).run_sync({}, saver=saver)
    assert result.outputs == {"agent": "done"}, result.error
    tools = {t["function"]["name"]: t["function"] for t in openai_server.requests[0]["tools"]}
    assert tools["nap"]["description"] == "Sleep a little, then answer."
    assert tools["nap"]["parameters"]["properties"]["label"]["type"] == "string"
    assert tools["child"]["description"] == "Answers in the shared conversation."
    assert list(tools["child"]["parameters"]["properties"]) == ["text"]
    memory = saver.load_memory(result.run_id)["m"]
    (_, _, *one), (_, _, *two) = (m["content"].split() for m in memory[2:4])
    (start1, end1), (start2, end2) = map(float, one), map(float, two)
    assert start1 < end2 and start2 < end1, "the two tool calls did not run at the same time"
    assert [m["role"] for m in memory] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m["tool_call_id"] for m in memory[2:4]] == ["c1", "c2"]


# =========================================================================== §2 memory


def test_an_llm_step_sends_system_then_history_then_user_and_stores_no_system(tmp_path, openai_server):
    openai_server.queue("first reply", "second reply")
    path = fake_flow(tmp_path, openai_server, """\
        - {id: a, memory_id: m, system: "sys A", prompt: "{{ inputs.prompt }}"}
        - {id: b, memory_id: m, system: "sys B", prompt: again}
        """)
    saver = InMemorySaver()
    result = load_flow(path).run_sync({"prompt": "hello"}, saver=saver)
    assert result.status == "succeeded"
    first, second = openai_server.requests
    assert first["messages"] == [
        {"role": "system", "content": "sys A"}, {"role": "user", "content": "hello"}]
    assert second["messages"] == [
        {"role": "system", "content": "sys B"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "first reply"},
        {"role": "user", "content": "again"},
    ]
    assert saver.load_memory(result.run_id) == {"m": [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "first reply"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "second reply"},
    ]}


def test_memory_window_sends_at_most_the_last_n_messages(tmp_path, openai_server):
    path = fake_flow(tmp_path, openai_server, """\
        - {id: a, memory_id: m, prompt: one}
        - {id: b, memory_id: m, prompt: two}
        - {id: c, memory_id: m, prompt: three, memory_window: 2, system: s}
        """)
    assert load_flow(path).run_sync({}).status == "succeeded"
    sent = openai_server.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "s"}
    assert sent[-1] == {"role": "user", "content": "three"}
    assert [m["role"] for m in sent[1:-1]] == ["user", "assistant"]
    assert sent[1]["content"] == "two"


def test_steps_sharing_a_memory_id_run_one_after_another_in_file_order(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: echo, memory_id: m, prompt: one, params: {delay: 0.2}}
          - {id: b, model: echo, memory_id: m, prompt: two}
        """)
    result = load_flow(path).run_sync({})
    assert result.steps["a"].ended_at <= result.steps["b"].started_at
    assert result.outputs == {"b": "echo (3 messages): two"}


def test_different_memory_ids_run_independently(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: echo, memory_id: m1, prompt: one, params: {delay: 0.4}}
          - {id: b, model: echo, memory_id: m2, prompt: two, params: {delay: 0.4}}
        outputs: {a: "{{ a.return }}", b: "{{ b.return }}"}
        """)
    result = load_flow(path).run_sync({})
    assert overlapped(result.steps.values())
    assert result.outputs == {"a": "echo (1 message): one", "b": "echo (1 message): two"}


def test_a_flow_step_counts_as_using_its_sub_flows_memory_ids(tmp_path):
    write(tmp_path / "child.yaml", CHILD)
    path = flow_file(tmp_path, """\
        steps:
          - {id: sub, type: flow, flow: child.yaml, inputs: {text: first}}
          - {id: after, model: echo, memory_id: chat, prompt: second}
        """)
    result = load_flow(path).run_sync({})
    assert result.outputs == {"after": "echo (3 messages): second"}
    assert "sub" in load_flow(path).graph.step("after").deps


def test_a_step_without_memory_id_sees_and_stores_no_history(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: echo, memory_id: m, prompt: one}
          - {id: b, model: echo, prompt: "{{ a.return }} two"}
          - {id: c, model: echo, memory_id: m, prompt: three}
        outputs: {b: "{{ b.return }}", c: "{{ c.return }}"}
        """)
    saver = InMemorySaver()
    result = load_flow(path).run_sync({}, saver=saver)
    assert result.outputs["b"].startswith("echo (1 message):")
    assert result.outputs["c"] == "echo (3 messages): three"
    assert list(saver.load_memory(result.run_id)) == ["m"]


def test_a_failed_step_appends_nothing(tmp_path, openai_server):
    from runner.testing import FakeReply

    openai_server.queue("ok", FakeReply.error(400, "bad request"))
    path = fake_flow(tmp_path, openai_server, """\
        - {id: a, memory_id: m, prompt: one}
        - {id: b, memory_id: m, prompt: two, retries: 0}
        """)
    saver = InMemorySaver()
    result = load_flow(path).run_sync({}, saver=saver)
    assert result.status == "failed"
    assert saver.load_memory(result.run_id) == {"m": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "ok"}]}


def test_a_skipped_step_appends_nothing(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: echo, memory_id: m, prompt: one}
          - {id: b, model: echo, memory_id: m, prompt: two, when: "{{ false }}"}
        """)
    saver = InMemorySaver()
    result = load_flow(path).run_sync({}, saver=saver)
    assert len(saver.load_memory(result.run_id)["m"]) == 2


def test_a_streamed_reply_is_appended_once_complete(tmp_path):
    path = flow_file(tmp_path, ECHO_ONE)
    saver = InMemorySaver()

    async def go() -> tuple[list[Any], list[Any]]:
        events = [e async for e in load_flow(path).stream({"prompt": "a b c"}, saver=saver)]
        return events, saver.load_memory(events[-1].run_id)["s"]

    events, memory = asyncio.run(go())
    chunks = [e.data["text"] for e in events if e.type == "step_chunk"]
    assert len(chunks) > 1
    assert memory == [{"role": "user", "content": "a b c"},
                      {"role": "assistant", "content": "".join(chunks)}]


# =========================================================================== §3 runs and savers


def test_run_ids_are_unique_and_sortable_by_creation_time(tmp_path):
    flow = load_flow(flow_file(tmp_path, "steps: [{id: a, type: template, text: x}]\n"))
    saver = InMemorySaver()
    ids = [flow.run_sync({}, saver=saver).run_id for _ in range(5)]
    assert len(set(ids)) == 5
    assert ids == sorted(ids)


def test_a_run_with_a_parent_starts_with_the_parents_memory_and_without_one_empty(tmp_path):
    flow = load_flow(flow_file(tmp_path, ECHO_ONE))
    saver = SQLiteSaver(str(tmp_path / "s.db"))
    first = flow.run_sync({"prompt": "one"}, saver=saver)
    second = flow.run_sync({"prompt": "two"}, parent_id=first.run_id, saver=saver)
    fresh = flow.run_sync({"prompt": "three"}, saver=saver)
    assert second.parent_id == first.run_id
    assert second.outputs == {"response": "echo (3 messages): two"}
    assert fresh.outputs == {"response": "echo (1 message): three"}


def test_branches_never_see_each_others_messages(tmp_path):
    flow = load_flow(flow_file(tmp_path, ECHO_ONE))
    saver = JSONLSaver(str(tmp_path / "s.jsonl"))
    root = flow.run_sync({"prompt": "root"}, saver=saver)
    left = flow.run_sync({"prompt": "left"}, parent_id=root.run_id, saver=saver)
    right = flow.run_sync({"prompt": "right"}, parent_id=root.run_id, saver=saver)
    assert right.outputs == {"response": "echo (3 messages): right"}
    contents = [m["content"] for m in saver.load_memory(right.run_id)["s"]]
    assert "left" not in contents and contents[0] == "root"
    assert [m["content"] for m in saver.load_memory(left.run_id)["s"]][2] == "left"


def test_resume_reruns_a_failed_run_without_rerunning_succeeded_steps(tmp_path, monkeypatch):
    counter = tmp_path / "count.txt"
    write(tmp_path / "resume_spec.py", f"""\
        import os
        from pathlib import Path

        def once():
            p = Path({str(counter)!r})
            p.write_text(p.read_text() + "x" if p.exists() else "x")
            return len(p.read_text())

        def flaky():
            if os.environ.get("TIMBAL_SPEC_FAIL") == "1":
                raise RuntimeError("flaky failed")
            return "ok"
        """)
    path = flow_file(tmp_path, """\
        steps:
          - {id: first, type: python, function: "resume_spec:once"}
          - {id: second, type: python, function: "resume_spec:flaky", args: []}
          - {id: third, type: template, text: "{{ first.return }} {{ second.return }}"}
        """)
    saver = SQLiteSaver(str(tmp_path / "s.db"))
    flow = load_flow(path)
    monkeypatch.setenv("TIMBAL_SPEC_FAIL", "1")
    failed = flow.run_sync({}, saver=saver)
    assert failed.status == "failed"
    monkeypatch.setenv("TIMBAL_SPEC_FAIL", "0")
    resumed = flow.run_sync({}, resume=failed.run_id, saver=saver)
    assert resumed.status == "succeeded"
    assert resumed.run_id == failed.run_id
    assert resumed.outputs == {"third": "1 ok"}
    assert counter.read_text() == "x"


def test_a_kill_9_loses_at_most_the_steps_in_flight_and_the_run_resumes(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: fast, model: echo, prompt: quick}
          - {id: slow, model: echo, prompt: "{{ fast.return }}", params: {delay: "{{ env.TIMBAL_SPEC_DELAY | float }}"}}
        state_saver: {type: jsonl, path: s.jsonl}
        """)
    proc = start_timbal("run", path, env=child_env(TIMBAL_SPEC_DELAY="30"))
    state = tmp_path / "s.jsonl"
    deadline = time.time() + 20
    while time.time() < deadline and '"step_id":"fast"' not in (state.read_text() if state.exists() else ""):
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    (run,) = JSONLSaver(str(state)).list_runs()
    fast = {s.step_id: s for s in JSONLSaver(str(state)).get_run(run.run_id).steps}["fast"]
    assert fast.status == "succeeded"
    done = timbal("run", path, "--resume", run.run_id, "--json", env=child_env(TIMBAL_SPEC_DELAY="0"))
    assert done.returncode == 0, done.stderr
    after = JSONLSaver(str(state)).get_run(run.run_id)
    assert after.status == "succeeded"
    assert {s.step_id: s for s in after.steps}["fast"].started_at == fast.started_at


def test_a_run_record_holds_every_field_the_spec_lists(tmp_path):
    path = flow_file(tmp_path, """\
        name: fields
        inputs: {prompt: {type: string}}
        steps:
          - {id: chat, model: echo, memory_id: s, prompt: "{{ inputs.prompt }}"}
          - {id: bad, type: template, text: "{{ chat.return }}", when: "{{ false }}"}
        outputs: {response: "{{ chat.return }}"}
        """)
    saver = SQLiteSaver(str(tmp_path / "s.db"))
    parent = load_flow(path).run_sync({"prompt": "a"}, saver=saver)
    result = load_flow(path).run_sync({"prompt": "b"}, parent_id=parent.run_id, saver=saver)
    run = saver.get_run(result.run_id)
    assert run.run_id == result.run_id and run.parent_id == parent.run_id
    assert run.flow_name == "fields"
    assert Path(run.flow_path).resolve() == path.resolve()
    assert re.fullmatch(r"[0-9a-f]{64}", run.flow_hash)
    assert run.status == "succeeded"
    assert run.started_at <= run.ended_at
    assert run.inputs == {"prompt": "b"} and run.outputs == {"response": "echo (3 messages): b"}
    steps = {s.step_id: s for s in run.steps}
    chat = steps["chat"]
    assert chat.status == "succeeded" and chat.return_value == "echo (3 messages): b"
    assert chat.error is None and chat.model == "echo" and chat.usage["total_tokens"] > 0
    assert chat.started_at <= chat.ended_at and chat.attempts == 1
    assert steps["bad"].status == "skipped"
    assert run.memory_delta() == {"s": [{"role": "user", "content": "b"},
                                        {"role": "assistant", "content": "echo (3 messages): b"}]}


def test_a_failed_steps_record_holds_its_error(tmp_path):
    path = flow_file(tmp_path, 'steps: [{id: a, type: python, function: "json:loads", args: ["{"]}]\n')
    saver = InMemorySaver()
    result = load_flow(path).run_sync({}, saver=saver)
    run = saver.get_run(result.run_id)
    assert run.status == "failed"
    (step,) = run.steps
    assert step.status == "failed" and step.error


def test_secrets_are_never_written_to_state(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMBAL_SPEC_TOKEN", "s3cr3t-value-42")
    path = flow_file(tmp_path, """\
        secrets: [TIMBAL_SPEC_TOKEN]
        steps:
          - {id: a, model: echo, memory_id: m, prompt: "token {{ env.TIMBAL_SPEC_TOKEN }}"}
        state_saver: {type: jsonl, path: state.jsonl}
        """)
    result = load_flow(path).run_sync({})
    assert result.status == "succeeded"
    assert "s3cr3t-value-42" not in (tmp_path / "state.jsonl").read_text()


def test_api_keys_and_provider_headers_are_never_written_to_state(tmp_path, openai_server):
    path = flow_file(tmp_path, f"""\
        steps:
          - id: a
            model: openai/fake-model
            memory_id: m
            prompt: hi
            params:
              api_base: "{openai_server.url}"
              api_key: sk-very-secret-999
              extra_headers: {{X-Custom-Auth: tok-header-777}}
        state_saver: {{type: jsonl, path: state.jsonl}}
        """)
    assert load_flow(path).run_sync({}).status == "succeeded"
    assert openai_server.calls[-1].headers["x-custom-auth"] == "tok-header-777"
    state = (tmp_path / "state.jsonl").read_text()
    assert "sk-very-secret-999" not in state and "tok-header-777" not in state


@pytest.mark.parametrize(
    ("block", "cls", "file"),
    [
        ("{type: in_memory}", InMemorySaver, None),
        ("{type: jsonl, path: state.jsonl}", JSONLSaver, "state.jsonl"),
        ("{type: sqlite, path: data/state.db}", SQLiteSaver, "data/state.db"),
    ],
)
def test_state_saver_by_type_with_a_path_relative_to_the_flow_file(tmp_path, block, cls, file):
    folder = tmp_path / "flows"
    path = flow_file(folder, f"steps: [{{id: a, type: template, text: x}}]\nstate_saver: {block}\n")
    flow = load_flow(path)
    assert isinstance(flow.saver, cls)
    result = flow.run_sync({})
    assert flow.saver.get_run(result.run_id).status == "succeeded"
    if file:
        assert (folder / file).is_file()


def test_the_default_saver_is_in_memory(tmp_path):
    flow = load_flow(flow_file(tmp_path, "steps: [{id: a, type: template, text: x}]\n"))
    assert isinstance(flow.saver, InMemorySaver)


@pytest.mark.postgres
def test_postgres_saver_from_a_dsn_in_env_and_from_a_postgresql_uri(tmp_path, postgres_dsn,
                                                                     postgres_schema):
    PostgresSaver(postgres_dsn, schema=postgres_schema).close()  # creates the schema
    sep = "&" if "?" in postgres_dsn else "?"
    dsn = f"{postgres_dsn}{sep}options=-csearch_path%3D{postgres_schema}"
    path = flow_file(tmp_path, ECHO_ONE + """\
    state_saver: {type: postgres, dsn: "{{ env.TIMBAL_SPEC_PG }}"}
    """)
    first = timbal("run", path, "-i", "prompt=one", "--json", env=child_env(TIMBAL_SPEC_PG=dsn))
    assert first.returncode == 0, first.stderr
    second = timbal("run", path, "-i", "prompt=two", "--continue", "--saver", dsn, "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["outputs"] == {"response": "echo (3 messages): two"}
    listed = json.loads(timbal("runs", "list", "--saver", dsn, "--json").stdout)
    assert listed[-1]["run_id"] == json.loads(first.stdout)["run_id"]


def test_a_saver_dsn_from_an_unset_env_var_is_one_clear_error_not_a_crash(tmp_path):
    path = flow_file(tmp_path, """\
        steps: [{id: a, type: template, text: x}]
        state_saver: {type: postgres, dsn: "{{ env.TIMBAL_SPEC_NO_DSN }}"}
        """)
    assert timbal("validate", path).returncode == 0  # validating needs no environment
    proc = timbal("run", path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: state_saver") and "TIMBAL_SPEC_NO_DSN" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore:.*torn last line")
def test_a_torn_last_jsonl_line_is_skipped_not_fatal(tmp_path):
    flow = load_flow(flow_file(tmp_path, ECHO_ONE))
    state = tmp_path / "s.jsonl"
    first = flow.run_sync({"prompt": "one"}, saver=JSONLSaver(str(state)))
    with state.open("a", encoding="utf-8") as f:
        f.write('{"type": "step", "run_id": "' + first.run_id[:5])
    saver = JSONLSaver(str(state))
    assert saver.get_run(first.run_id).status == "succeeded"
    again = flow.run_sync({"prompt": "two"}, parent_id=first.run_id, saver=saver)
    assert again.outputs == {"response": "echo (3 messages): two"}


# =========================================================================== §4 the command line


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return flow_file(tmp_path, ECHO_ONE + "    state_saver: {type: jsonl, path: state.jsonl}\n", "chat.yaml")


def test_run_prints_one_string_output_as_the_text_alone_and_the_run_id_on_stderr(chat_file):
    proc = timbal("run", chat_file, "-i", "prompt=Hello there")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo (1 message): Hello there\n"
    run_id = json.loads((chat_file.parent / "state.jsonl").read_text().splitlines()[0])["run_id"]
    assert run_id in proc.stderr


def test_run_json_prints_run_id_status_outputs_and_usage(chat_file):
    proc = timbal("run", chat_file, "-i", "prompt=Hi", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"run_id", "status", "outputs", "usage"} <= set(data)
    assert data["status"] == "succeeded"
    assert data["outputs"] == {"response": "echo (1 message): Hi"}
    assert data["usage"]["total_tokens"] > 0


def test_run_prints_several_outputs_as_json(tmp_path):
    path = flow_file(tmp_path, "steps: [{id: a, type: template, text: x}]\noutputs: {a: '{{ a.return }}', b: 'y'}\n")
    proc = timbal("run", path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"a": "x", "b": "y"}


def test_run_converts_values_to_the_inputs_declared_type(tmp_path):
    path = flow_file(tmp_path, """\
        inputs:
          n: {type: integer}
          x: {type: number}
          ok: {type: boolean}
          tags: {type: array}
          obj: {type: object}
          s: {type: string}
        steps:
          - id: t
            type: template
            text: "{{ [inputs.n + 1, inputs.x * 2, inputs.ok is sameas true, inputs.tags | length, inputs.obj.k, inputs.s] | tojson }}"
        """)
    proc = timbal("run", path, "-i", "n=41", "-i", "x=1.5", "-i", "ok=true", "-i", 'tags=["a","b"]',
                  "-i", 'obj={"k": 1}', "-i", "s=007", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(json.loads(proc.stdout)["outputs"]["t"]) == [42, 3.0, True, 2, 1, "007"]


def test_run_reads_inputs_from_a_file(chat_file, tmp_path):
    inputs = write(tmp_path / "in.json", '{"prompt": "from a file"}')
    proc = timbal("run", chat_file, "--inputs", inputs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo (1 message): from a file\n"


def test_a_flow_with_one_required_string_input_reads_it_from_stdin(chat_file):
    proc = timbal("run", chat_file, input="piped text\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo (1 message): piped text\n"


def test_an_invalid_input_value_exits_2(tmp_path):
    path = flow_file(tmp_path, "inputs: {n: {type: integer}}\nsteps: [{id: a, type: template, text: '{{ inputs.n }}'}]\n")
    proc = timbal("run", path, "-i", "n=abc")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "n" in proc.stderr


def test_a_missing_required_input_exits_2(tmp_path):
    path = flow_file(tmp_path, """\
        inputs: {a: {type: string}, b: {type: string}}
        steps: [{id: t, type: template, text: "{{ inputs.a }}{{ inputs.b }}"}]
        """)
    proc = timbal("run", path, "-i", "a=x")
    assert proc.returncode == 2
    assert "b" in proc.stderr and "Traceback" not in proc.stderr


def test_run_continue_follows_the_latest_run_of_this_flow_only(chat_file, tmp_path):
    other = flow_file(tmp_path, ECHO_ONE.replace("name: one", "name: other"), "other.yaml")
    uri = f"sqlite:{tmp_path / 'shared.db'}"
    assert timbal("run", chat_file, "-i", "prompt=one", "--saver", uri).returncode == 0
    assert timbal("run", other, "-i", "prompt=elsewhere", "--saver", uri).returncode == 0
    proc = timbal("run", chat_file, "-i", "prompt=two", "--continue", "--saver", uri)
    assert proc.stdout == "echo (3 messages): two\n"


def test_run_parent_and_continue_carry_the_conversation(chat_file):
    first = json.loads(timbal("run", chat_file, "-i", "prompt=one", "--json").stdout)
    second = json.loads(timbal("run", chat_file, "-i", "prompt=two", "--parent", first["run_id"],
                               "--json").stdout)
    assert second["outputs"] == {"response": "echo (3 messages): two"}
    third = json.loads(timbal("run", chat_file, "-i", "prompt=three", "--continue", "--json").stdout)
    assert third["outputs"] == {"response": "echo (5 messages): three"}
    branch = json.loads(timbal("run", chat_file, "-i", "prompt=b", "--parent", first["run_id"],
                               "--json").stdout)
    assert branch["outputs"] == {"response": "echo (3 messages): b"}


def test_run_resume_reruns_a_failed_run(tmp_path):
    write(tmp_path / "flaky_spec.py", """\
        import os

        def flaky():
            if os.environ.get("TIMBAL_SPEC_FAIL") == "1":
                raise RuntimeError("flaky failed")
            return "ok"
        """)
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: echo, prompt: first}
          - {id: b, type: python, function: "flaky_spec:flaky", args: []}
          - {id: c, type: template, text: "{{ a.return }} / {{ b.return }}"}
        state_saver: {type: sqlite, path: s.db}
        """)
    failed = timbal("run", path, "--json", env=child_env(TIMBAL_SPEC_FAIL="1"))
    assert failed.returncode == 1
    data = json.loads(failed.stdout)
    assert data["status"] == "failed"
    ok = timbal("run", path, "--resume", data["run_id"], "--json", env=child_env(TIMBAL_SPEC_FAIL="0"))
    assert ok.returncode == 0, ok.stderr
    resumed = json.loads(ok.stdout)
    assert resumed["run_id"] == data["run_id"] and resumed["status"] == "succeeded"
    assert resumed["outputs"] == {"c": "echo (1 message): first / ok"}
    show = json.loads(timbal("runs", "show", data["run_id"], "--saver", f"sqlite:{tmp_path / 's.db'}",
                             "--json").stdout)
    assert [s["attempts"] for s in show["steps"] if s["step_id"] == "a"] == [1]


@pytest.mark.parametrize("form", ["jsonl", "sqlite", "memory"])
def test_run_saver_uri_overrides_the_files_saver(chat_file, tmp_path, form):
    target = {"jsonl": f"jsonl:{tmp_path / 'o.jsonl'}", "sqlite": f"sqlite:{tmp_path / 'o.db'}",
              "memory": "memory"}[form]
    proc = timbal("run", chat_file, "-i", "prompt=x", "--saver", target, "--json")
    assert proc.returncode == 0, proc.stderr
    assert not (chat_file.parent / "state.jsonl").exists()
    if form != "memory":
        listed = json.loads(timbal("runs", "list", "--saver", target, "--json").stdout)
        assert [r["run_id"] for r in listed] == [json.loads(proc.stdout)["run_id"]]


def test_run_saver_accepts_a_postgresql_uri(chat_file):
    proc = timbal("run", chat_file, "-i", "prompt=x", "--saver",
                  "postgresql://nobody:pw@127.0.0.1:1/none?connect_timeout=1")
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr
    assert "pw@" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2


def test_run_streams_the_output_on_a_terminal_and_prints_it_once(chat_file):
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([*TIMBAL, "run", str(chat_file), "-i", "prompt=a b c"],
                            stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=child_env())
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 1024)
        except OSError:
            break
        if not data:
            break
        out += data
    os.close(master)
    assert proc.wait(timeout=30) == 0
    assert out.decode().replace("\r\n", "\n") == "echo (1 message): a b c\n"


def test_the_example_flow_reads_its_one_required_string_input_from_stdin(tmp_path):
    path = write(tmp_path / "support.yaml", ECHO_EXAMPLE)
    proc = timbal("run", path, "--json", "--saver", "memory", input="Where is my parcel?\n")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["outputs"] == {"response": "echo (3 messages): Say that again in one sentence.",
                               "score": "echo (1 message): Rate this"}  # max_tokens: 5


def test_run_reads_inputs_from_stdin_with_inputs_dash(chat_file):
    proc = timbal("run", chat_file, "--inputs", "-", input='{"prompt": "json on stdin"}')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo (1 message): json on stdin\n"


def test_run_saver_paths_are_relative_to_the_working_directory(chat_file, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = timbal("run", chat_file, "-i", "prompt=x", "--saver", "sqlite:here.db", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "here.db").is_file()


def test_run_with_an_unknown_parent_exits_2(chat_file):
    proc = timbal("run", chat_file, "-i", "prompt=x", "--parent", "01NOSUCHRUN")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_an_interrupted_run_can_be_resumed(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: fast, model: echo, prompt: quick}
          - {id: slow, model: echo, prompt: "{{ fast.return }}", params: {delay: "{{ env.TIMBAL_SPEC_DELAY | float }}"}}
        state_saver: {type: sqlite, path: s.db}
        """)
    proc = start_timbal("run", path, env=child_env(TIMBAL_SPEC_DELAY="30"))
    saver = SQLiteSaver(str(tmp_path / "s.db"))
    deadline = time.time() + 20
    while time.time() < deadline:
        found = (tmp_path / "s.db").exists() and saver.list_runs()
        if found and saver.get_run(found[0].run_id).steps:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    (run,) = saver.list_runs()
    assert saver.get_run(run.run_id).status == "interrupted"
    done = timbal("run", path, "--resume", run.run_id, "--json", env=child_env(TIMBAL_SPEC_DELAY="0"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"slow": "echo (1 message): echo (1 message): quick"}
    steps = saver.get_run(run.run_id).steps
    assert [s.step_id for s in steps if s.status == "succeeded"].count("fast") == 1


def test_validate_takes_several_files_and_exits_2_when_any_is_invalid(tmp_path):
    good = write(tmp_path / "good.yaml", SPEC_EXAMPLE)
    bad = flow_file(tmp_path, "steps: [{id: A, type: template, text: x}]\n", "bad.yaml")
    proc = timbal("validate", good, bad)
    assert proc.returncode == 2
    assert str(good) in proc.stdout and str(bad) in proc.stderr
    assert timbal("validate", good, good).returncode == 0


def test_validate_checks_references_cycles_and_memory_without_running(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, type: template, text: "{{ b.return }}"}
          - {id: b, type: template, text: "{{ a.return }}"}
        """)
    proc = timbal("validate", path)
    assert proc.returncode == 2
    assert "cycle" in proc.stderr


def test_errors_name_the_place_with_the_spec_wording_and_the_offending_line(tmp_path):
    path = write(tmp_path / "flow.yaml", SPEC_EXAMPLE.replace(
        "Rate this reply 1-5: {{ refine.return }}", "Rate this reply 1-5: {{ refien.return }}"))
    proc = timbal("validate", path)
    assert proc.returncode == 2
    line = next(n for n, t in enumerate(SPEC_EXAMPLE.splitlines(), 1) if "Rate this reply" in t)
    assert re.search(
        rf"^{re.escape(str(path))}:{line}:\d+: error: unknown step 'refien' in prompt "
        r"\(did you mean 'refine'\?\)$", proc.stderr, re.M), proc.stderr
    assert '    prompt: "Rate this reply 1-5: {{ refien.return }}"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_run_time_error_in_the_cli_shows_no_traceback_unless_debug(tmp_path):
    path = flow_file(tmp_path, 'steps: [{id: a, type: python, function: "json:loads", args: ["{"]}]\n')
    proc = timbal("run", path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "error" in proc.stderr


def test_an_unexpected_error_shows_a_traceback_only_with_debug(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    path = flow_file(tmp_path, "steps: [{id: a, type: template, text: x}]\n")
    proc = timbal("run", path, "--saver", f"sqlite:{target}/s.db")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    debug = timbal("--debug", "run", path, "--saver", f"sqlite:{target}/s.db")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_exit_code_2_for_an_invalid_command_line(chat_file):
    assert timbal("run", chat_file, "--no-such-flag").returncode == 2
    assert timbal("run", chat_file, "-i", "prompt=x", "--parent", "X", "--continue").returncode == 2
    assert timbal("run", chat_file.parent / "missing.yaml").returncode == 2


def test_exit_code_2_for_an_invalid_flow(tmp_path):
    path = flow_file(tmp_path, "steps: [{id: a, type: template, txt: x}]\n")
    proc = timbal("run", path)
    assert proc.returncode == 2 and "did you mean 'text'" in proc.stderr


def test_exit_code_130_when_interrupted(tmp_path):
    path = flow_file(tmp_path, """\
        steps: [{id: a, model: echo, prompt: slow, params: {delay: 30}}]
        state_saver: {type: jsonl, path: s.jsonl}
        """)
    proc = start_timbal("run", path)
    state = tmp_path / "s.jsonl"
    deadline = time.time() + 20
    while time.time() < deadline and not (state.exists() and state.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    listed = json.loads(timbal("runs", "list", "--saver", f"jsonl:{state}", "--json").stdout)
    assert listed[0]["status"] == "interrupted"


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "text"])
def test_graph_draws_the_execution_graph_in_each_format(tmp_path, fmt):
    path = write(tmp_path / "support.yaml", SPEC_EXAMPLE)
    proc = timbal("graph", path, "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    for sid in ("chat", "refine", "audit"):
        assert sid in proc.stdout
    if fmt == "mermaid":
        assert re.search(r"chat\s*-.*->.*refine", proc.stdout)
    if fmt == "dot":
        assert "digraph" in proc.stdout and "refine -> audit" in proc.stdout


def test_schema_prints_the_json_schema(tmp_path):
    proc = timbal("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert "$schema" in schema and "steps" in schema["properties"]
    assert json.loads(timbal("schema", "--json").stdout) == schema


def test_every_command_that_prints_data_takes_json(tmp_path):
    flow = flow_file(tmp_path, ECHO_ONE + "    state_saver: {type: jsonl, path: state.jsonl}\n")
    uri = f"jsonl:{tmp_path / 'state.jsonl'}"
    run = json.loads(timbal("run", flow, "-i", "prompt=hi", "--json").stdout)
    for args in (("validate", flow), ("graph", flow), ("runs", "list", "--saver", uri),
                 ("runs", "show", run["run_id"], "--saver", uri), ("runs", "tree", "--saver", uri)):
        proc = timbal(*args, "--json")
        assert proc.returncode == 0, (args, proc.stderr)
        json.loads(proc.stdout)


def test_runs_list_json_is_a_list_of_objects_with_run_id_parent_id_status_started_at(chat_file):
    first = json.loads(timbal("run", chat_file, "-i", "prompt=a", "--json").stdout)
    second = json.loads(timbal("run", chat_file, "-i", "prompt=b", "--continue", "--json").stdout)
    proc = timbal("runs", "list", "--saver", f"jsonl:{chat_file.parent / 'state.jsonl'}", "--json")
    runs = json.loads(proc.stdout)
    assert isinstance(runs, list) and len(runs) == 2
    for r in runs:
        assert {"run_id", "parent_id", "status", "started_at"} <= set(r)
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[second["run_id"]]["parent_id"] == first["run_id"]
    assert by_id[first["run_id"]]["parent_id"] is None
    assert {r["status"] for r in runs} == {"succeeded"}


def test_runs_show_tree_and_delete(chat_file):
    uri = f"jsonl:{chat_file.parent / 'state.jsonl'}"
    root = json.loads(timbal("run", chat_file, "-i", "prompt=root", "--json").stdout)["run_id"]
    child = json.loads(timbal("run", chat_file, "-i", "prompt=kid", "--parent", root, "--json").stdout)["run_id"]
    show = json.loads(timbal("runs", "show", child, "--saver", uri, "--json").stdout)
    assert [s["step_id"] for s in show["steps"]] == ["chat"]
    assert [m["content"] for m in show["memory"]["s"]][::2] == ["root", "kid"]
    human = timbal("runs", "show", child, "--saver", uri)
    assert human.returncode == 0 and "chat" in human.stdout
    tree = timbal("runs", "tree", "--saver", uri)
    assert tree.returncode == 0
    assert tree.stdout.index(root) < tree.stdout.index(child)
    assert timbal("runs", "delete", root, "--saver", uri).returncode == 2  # has a child
    deleted = timbal("runs", "delete", child, "--saver", uri, "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert [r["run_id"] for r in json.loads(timbal("runs", "list", "--saver", uri, "--json").stdout)] == [root]


def test_runs_show_of_an_unknown_run_exits_2(chat_file):
    proc = timbal("runs", "show", "NOPE", "--saver", f"jsonl:{chat_file.parent / 'state.jsonl'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("model", "var"), [("openai/gpt-4o-mini", "OPENAI_API_KEY"),
                                            ("anthropic/claude-3-haiku-20240307", "ANTHROPIC_API_KEY")])
def test_missing_provider_keys_give_one_clear_line(tmp_path, monkeypatch, model, var):
    for name in PROVIDER_VARS:
        monkeypatch.delenv(name, raising=False)
    path = flow_file(tmp_path, f"steps: [{{id: a, model: {model}, prompt: hi}}]\n")
    result = load_flow(path).run_sync({})
    assert result.status == "failed"
    assert len(result.error.splitlines()) == 1 and var in result.error, result.error
    assert "Traceback" not in result.error


# =========================================================================== §5 from Python


def test_python_api_run_as_the_spec_writes_it(tmp_path, monkeypatch):
    flows = tmp_path / "flows"
    flow_file(flows, ECHO_ONE, "chat.yaml")
    monkeypatch.chdir(tmp_path)
    from runner import SQLiteSaver as Saver
    from runner import load_flow as load

    async def main() -> Any:
        flow = load("flows/chat.yaml")
        result = await flow.run({"prompt": "Hi"}, parent_id=None, saver=Saver("s.db"))
        return flow, result

    flow, result = asyncio.run(main())
    assert (result.run_id, result.status, result.outputs) == (
        result.run_id, "succeeded", {"response": "echo (1 message): Hi"})
    again = flow.run_sync({"prompt": "Again"}, parent_id=result.run_id, saver=Saver("s.db"))
    assert again.outputs == {"response": "echo (3 messages): Again"}
    assert (tmp_path / "s.db").is_file()


def test_load_flow_raises_flow_error(tmp_path):
    path = flow_file(tmp_path, "steps: [{id: A}]\n")
    with pytest.raises(FlowError):
        load_flow(path)


def test_flow_stream_yields_step_started_chunk_finished_and_run_finished(tmp_path):
    flow = load_flow(flow_file(tmp_path, ECHO_ONE))

    async def main() -> list[Any]:
        return [event async for event in flow.stream({"prompt": "Hi there"})]

    events = asyncio.run(main())
    types = [e.type for e in events]
    assert types[-1] == "run_finished"
    assert "step_started" in types and "step_chunk" in types and "step_finished" in types
    assert types.index("step_started") < types.index("step_chunk") < types.index("step_finished")


def test_the_builder_compiles_through_the_same_compiler(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from runner import Flow
    from runner import JSONLSaver as Saver

    flow = Flow().add_llm("chat", model="echo", memory_id="s").set_input("chat.prompt", "prompt").set_output("chat.return", "response").compile(state_saver=Saver("s.jsonl"))
    result = flow.run_sync({"prompt": "Hi"})
    assert result.status == "succeeded"
    assert result.outputs == {"response": "echo (1 message): Hi"}
    assert (tmp_path / "s.jsonl").is_file()
    again = flow.run_sync({"prompt": "More"}, parent_id=result.run_id)
    assert again.outputs == {"response": "echo (3 messages): More"}


def test_the_builder_reports_errors_like_the_compiler(tmp_path):
    from runner import Flow

    with pytest.raises(FlowError, match="unknown step 'chta'"):
        Flow().add_llm("chat", model="echo").set_output("chta.return", "response").compile()


# =========================================================================== §6 models without a network


def test_echo_shows_the_number_of_messages_and_the_last_user_message(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: echo, system: be nice, prompt: hello world}
        """)
    assert load_flow(path).run_sync({}).outputs == {"a": "echo (2 messages): hello world"}


def test_echo_reports_usage(tmp_path):
    result = load_flow(flow_file(tmp_path, ECHO_ONE)).run_sync({"prompt": "a b"})
    assert result.usage["total_tokens"] > 0
    assert result.steps["chat"].usage["prompt_tokens"] == 2


def test_echo_calls_a_tool_when_asked_and_answers_with_its_result(tmp_path):
    write(tmp_path / "tools_spec.py", '''\
        def greet(name: str) -> str:
            """Greet someone."""
            return f"hello {name}"
        ''')
    path = flow_file(tmp_path, """\
        inputs: {prompt: {type: string}}
        steps:
          - {id: a, type: agent, model: echo, prompt: "{{ inputs.prompt }}", tools: [{python: "tools_spec:greet"}]}
        """)
    assert load_flow(path).run_sync({"prompt": 'call greet {"name": "ada"}'}).outputs == {"a": "hello ada"}


def test_echo_without_the_tool_offered_just_echoes(tmp_path):
    path = flow_file(tmp_path, 'steps: [{id: a, model: echo, prompt: "call greet {}"}]\n')
    assert load_flow(path).run_sync({}).outputs == {"a": "echo (1 message): call greet {}"}


def test_an_unreachable_provider_gives_one_clear_line(tmp_path):
    path = flow_file(tmp_path, """\
        steps:
          - {id: a, model: openai/x, prompt: hi, retries: 0,
             params: {api_base: "http://127.0.0.1:9/v1", api_key: k}}
        """)
    result = load_flow(path).run_sync({})
    assert result.status == "failed"
    assert len(result.error.splitlines()) == 1 and "127.0.0.1:9" in result.error


def test_a_local_gguf_path_that_does_not_exist_gives_one_clear_line(tmp_path):
    path = flow_file(tmp_path, f'steps: [{{id: a, model: "local/{tmp_path}/none.gguf", prompt: hi}}]\n')
    for command in ("validate", "run"):  # a compile error (SPEC §1), before anything runs
        proc = timbal(command, path)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
        assert len(errors) == 1 and f"model file not found: {tmp_path}/none.gguf" in errors[0]


def test_local_smollm2_validates(tmp_path):
    path = flow_file(tmp_path, "steps: [{id: a, model: local/smollm2, prompt: hi}]\n")
    assert timbal("validate", path).returncode == 0
