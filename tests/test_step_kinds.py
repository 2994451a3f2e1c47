"""Step kinds beyond llm (SPEC §1 "Step kinds"): `python` and `flow` steps, end to end.

Python functions live in real module files next to real flow files; sub-flow memory is
checked on the exact messages the loopback fake server received, over litellm.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from testkit import ROOT, fake_defaults, timbal, write

from runner import InMemorySaver, JSONLSaver, load_flow
from runner.testing import FakeOpenAIServer


def python_flow(tmp_path: Path, function: str, args: str = "{}", module: str | None = None) -> Path:
    """A one-step flow calling `function`; `module` is the text of helpers.py beside it."""
    if module is not None:
        write(tmp_path / "helpers.py", module)
    return write(tmp_path / "flow.yaml", f"""
        version: 1
        name: py
        inputs:
          text: {{type: string, default: "a bb ccc"}}
        steps:
          - id: call
            type: python
            function: {function}
            args: {args}
    """)


HELPERS = """
    import asyncio
    import threading


    def stats(text, sep=" "):
        words = text.split(sep)
        return {"words": len(words), "longest": max(words, key=len)}


    def join(*parts):
        return "-".join(str(p) for p in parts)


    async def later(value):
        await asyncio.sleep(0)
        return {"awaited": value}


    def thread_name():
        return threading.current_thread().name


    def explode(text):
        raise ValueError(f"cannot handle {text!r}")
"""


# -- python steps ------------------------------------------------------------------------


def test_python_step_calls_the_function_with_keyword_args_from_templates(tmp_path):
    flow = python_flow(tmp_path, "helpers:stats", '{text: "{{ inputs.text }}"}', HELPERS)
    result = load_flow(flow).run_sync({"text": "one two sevens"})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"call": {"words": 3, "longest": "sevens"}}


def test_python_step_passes_a_list_of_args_as_positional_arguments(tmp_path):
    flow = python_flow(tmp_path, "helpers:join", '["{{ inputs.text }}", 2, true]', HELPERS)
    result = load_flow(flow).run_sync({"text": "x"})
    assert result.outputs == {"call": "x-2-True"}


def test_python_step_awaits_an_async_function(tmp_path):
    flow = python_flow(tmp_path, "helpers:later", "[41]", HELPERS)
    assert load_flow(flow).run_sync().outputs == {"call": {"awaited": 41}}


def test_python_step_runs_a_sync_function_off_the_event_loop(tmp_path):
    flow = python_flow(tmp_path, "helpers:thread_name", "[]", HELPERS)
    name = load_flow(flow).run_sync().outputs["call"]
    assert name != "MainThread"


def test_python_step_return_feeds_later_templates(tmp_path):
    write(tmp_path / "helpers.py", HELPERS)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - id: stats
            type: python
            function: helpers:stats
            args: {text: "to be or not"}
          - id: say
            type: template
            text: "{{ stats.return.words }} words, longest {{ stats.return.longest }}"
    """)
    assert load_flow(flow).run_sync().outputs == {"say": "4 words, longest not"}


def test_python_step_finds_a_module_on_the_normal_import_path(tmp_path):
    flow = python_flow(tmp_path, "json:dumps", "[[1, 2]]")
    assert load_flow(flow).run_sync().outputs == {"call": "[1, 2]"}


def test_module_next_to_the_flow_wins_over_the_import_path(tmp_path):
    # `json` next to the flow shadows the standard library's, for this flow only.
    write(tmp_path / "json.py", "def dumps(value):\n    return 'local json'\n")
    flow = python_flow(tmp_path, "json:dumps", "[1]")
    assert load_flow(flow).run_sync().outputs == {"call": "local json"}
    assert json.dumps(1) == "1"


def test_two_flows_with_same_named_modules_do_not_mix(tmp_path):
    flow_a = python_flow(tmp_path / "a", "helpers:who", "[]", "def who():\n    return 'a'\n")
    flow_b = python_flow(tmp_path / "b", "helpers:who", "[]", "def who():\n    return 'b'\n")
    path_before = list(sys.path)
    assert load_flow(flow_a).run_sync().outputs == {"call": "a"}
    assert load_flow(flow_b).run_sync().outputs == {"call": "b"}
    assert load_flow(flow_a).run_sync().outputs == {"call": "a"}
    assert sys.path == path_before
    assert "helpers" not in sys.modules


def test_modules_in_a_package_next_to_the_flow_are_found(tmp_path):
    write(tmp_path / "tools" / "__init__.py", "")
    write(tmp_path / "tools" / "_base.py", "PREFIX = 'pkg:'\n")
    write(tmp_path / "tools" / "text.py", """
        from ._base import PREFIX


        def tag(value):
            return PREFIX + value
    """)
    flow = python_flow(tmp_path, "tools.text:tag", '["{{ inputs.text }}"]')
    assert load_flow(flow).run_sync({"text": "x"}).outputs == {"call": "pkg:x"}


def test_an_edited_module_is_imported_again(tmp_path):
    flow = python_flow(tmp_path, "helpers:version", "[]", "def version():\n    return 1\n")
    assert load_flow(flow).run_sync().outputs == {"call": 1}
    write(tmp_path / "helpers.py", "def version():\n    return 'two'\n")
    later = time.time() + 5  # a new mtime even on coarse-grained file systems
    os.utime(tmp_path / "helpers.py", (later, later))
    assert load_flow(flow).run_sync().outputs == {"call": "two"}


def test_an_exception_fails_the_step_with_its_message_and_location(tmp_path):
    flow = python_flow(tmp_path, "helpers:explode", '["{{ inputs.text }}"]', HELPERS)
    result = load_flow(flow).run_sync({"text": "boom"})
    assert result.status == "failed"
    error = result.steps["call"].error
    assert "ValueError: cannot handle 'boom'" in error
    line = HELPERS.splitlines().index("    def explode(text):") + 1  # the raise is the next line
    assert f"helpers.py:{line} in explode" in error
    assert "Traceback" not in error


def test_an_error_while_importing_the_module_names_its_line(tmp_path):
    flow = python_flow(tmp_path, "helpers:f", "[]", "import json\nraise RuntimeError('bad module')\n")
    result = load_flow(flow).run_sync()
    assert result.status == "failed"
    error = result.steps["call"].error
    assert "cannot load 'helpers:f': RuntimeError: bad module (at helpers.py:2 in <module>)" in error


def test_the_cli_reports_a_python_step_error_and_exits_1(tmp_path):
    flow = python_flow(tmp_path, "helpers:explode", '["{{ inputs.text }}"]', HELPERS)
    done = timbal("run", flow, "-i", "text=x")
    assert done.returncode == 1
    assert "ValueError: cannot handle 'x' (at helpers.py:" in done.stderr
    assert "Traceback" not in done.stderr


def test_wrong_arguments_fail_the_step_with_a_clear_message(tmp_path):
    flow = python_flow(tmp_path, "helpers:stats", "{txt: hello}", HELPERS)
    result = load_flow(flow).run_sync()
    assert result.status == "failed"
    assert "bad arguments for 'helpers:stats'" in result.steps["call"].error
    assert "unexpected argument 'txt' (did you mean 'text'?)" in result.steps["call"].error


def test_a_missing_function_fails_the_step_naming_it(tmp_path):
    flow = python_flow(tmp_path, "helpers:nope", "[]", HELPERS)
    result = load_flow(flow).run_sync()
    assert result.status == "failed"
    assert "helpers" in result.error and "nope" in result.error


def test_python_returns_are_saved_as_json(tmp_path):
    write(tmp_path / "helpers.py", """
        from pydantic import BaseModel


        class Person(BaseModel):
            name: str
            age: int


        def mixed():
            return {"person": Person(name="Ada", age=36), "tags": {"b", "a"}, "pair": (1, 2)}
    """)
    flow = python_flow(tmp_path, "helpers:mixed", "[]")
    saver = JSONLSaver(tmp_path / "state.jsonl")
    result = load_flow(flow).run_sync(saver=saver)
    expected = {"person": {"name": "Ada", "age": 36}, "tags": ["a", "b"], "pair": [1, 2]}
    assert result.outputs == {"call": expected}
    saved = JSONLSaver(tmp_path / "state.jsonl").get_run(result.run_id)
    assert [s.return_value for s in saved.steps] == [expected]


# -- flow steps --------------------------------------------------------------------------


def parent_flow(tmp_path: Path, server: FakeOpenAIServer, memory: str) -> Path:
    """parent.yaml: `ask` and `after` in conversation `chat`, with child/summarize.yaml
    between them as the flow step `sub` (its step `summary` also uses `chat`)."""
    write(tmp_path / "child" / "summarize.yaml", f"""
        version: 1
        name: summarize
        inputs:
          text: {{type: string}}
        {fake_defaults(server)}
        steps:
          - id: summary
            memory_id: chat
            prompt: "Summarise: {{{{ inputs.text }}}}"
        outputs:
          summary: "{{{{ summary.return }}}}"
    """)
    return write(tmp_path / "parent.yaml", f"""
        version: 1
        name: parent
        {fake_defaults(server)}
        steps:
          - id: ask
            memory_id: chat
            prompt: "Hello"
          - id: sub
            type: flow
            flow: child/summarize.yaml
            memory: {memory}
            inputs: {{text: "{{{{ ask.return }}}}"}}
          - id: after
            memory_id: chat
            prompt: "Thanks"
        outputs:
          sub: "{{{{ sub.return }}}}"
          after: "{{{{ after.return }}}}"
    """)


def sent(server: FakeOpenAIServer) -> dict[str, list[dict[str, str]]]:
    """Each request's messages, keyed by its last message's text."""
    return {c.body["messages"][-1]["content"]: c.body["messages"] for c in server.calls}


def test_a_flow_step_shares_the_parent_memory_by_default(tmp_path, openai_server):
    result = load_flow(parent_flow(tmp_path, openai_server, "shared")).run_sync()
    assert result.status == "succeeded", result.error
    messages = sent(openai_server)
    assert messages["Summarise: reply to: Hello"] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "reply to: Hello"},
        {"role": "user", "content": "Summarise: reply to: Hello"},
    ]
    # The child's messages joined the parent's conversation.
    assert messages["Thanks"] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "reply to: Hello"},
        {"role": "user", "content": "Summarise: reply to: Hello"},
        {"role": "assistant", "content": "reply to: Summarise: reply to: Hello"},
        {"role": "user", "content": "Thanks"},
    ]


def test_an_isolated_flow_step_keeps_its_conversation_apart(tmp_path, openai_server):
    saver = InMemorySaver()
    result = load_flow(parent_flow(tmp_path, openai_server, "isolated")).run_sync(saver=saver)
    assert result.status == "succeeded", result.error
    messages = sent(openai_server)
    assert messages["Summarise: reply to: Hello"] == [
        {"role": "user", "content": "Summarise: reply to: Hello"},
    ]
    assert messages["Thanks"] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "reply to: Hello"},
        {"role": "user", "content": "Thanks"},
    ]
    memory = saver.load_memory(result.run_id)
    assert [m["content"] for m in memory["chat"]] == [
        "Hello", "reply to: Hello", "Thanks", "reply to: Thanks",
    ]
    isolated = [k for k in memory if k != "chat"]
    assert len(isolated) == 1 and isolated[0].endswith("chat")


def test_a_flow_step_returns_the_child_outputs(tmp_path, openai_server):
    result = load_flow(parent_flow(tmp_path, openai_server, "shared")).run_sync()
    assert result.outputs["sub"] == {"summary": "reply to: Summarise: reply to: Hello"}


def test_child_steps_are_recorded_under_the_parent_step(tmp_path, openai_server):
    saver = JSONLSaver(tmp_path / "state.jsonl")
    result = load_flow(parent_flow(tmp_path, openai_server, "shared")).run_sync(saver=saver)
    steps = {s.step_id: s for s in saver.get_run(result.run_id).steps}
    assert set(steps) == {"ask", "sub/summary", "sub", "after"}
    assert steps["sub/summary"].return_value == "reply to: Summarise: reply to: Hello"
    assert steps["sub/summary"].messages["chat"][0] == {
        "role": "user", "content": "Summarise: reply to: Hello",
    }


def test_runs_show_lists_child_steps_nested_under_the_flow_step(tmp_path):
    write(tmp_path / "child.yaml", """
        version: 1
        steps:
          - {id: inner, type: template, text: "inner text"}
    """)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: outer, type: flow, flow: child.yaml}
    """)
    state = tmp_path / "state.jsonl"
    result = load_flow(flow).run_sync(saver=JSONLSaver(state))
    show = ["runs", "show", result.run_id, "--saver", f"jsonl:{state}"]
    text = timbal(*show)
    assert text.returncode == 0, text.stderr
    assert "outer/inner" in text.stdout
    data = timbal(*show, "--json")
    assert [s["step_id"] for s in json.loads(data.stdout)["steps"]] == ["outer/inner", "outer"]


def test_a_shared_flow_step_runs_after_earlier_steps_of_its_memory_ids(tmp_path):
    # No data reference between `ask` and `sub`: the shared memory id alone orders them.
    write(tmp_path / "child.yaml", """
        version: 1
        steps:
          - {id: inner, model: echo, memory_id: chat, prompt: "and you?"}
    """)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: ask, model: echo, memory_id: chat, prompt: "Hello", params: {delay: 0.05}}
          - {id: sub, type: flow, flow: child.yaml}
    """)
    assert load_flow(flow).run_sync().outputs == {"sub": {"inner": "echo (3 messages): and you?"}}


def test_a_skipped_flow_step_does_not_run_its_child(tmp_path):
    write(tmp_path / "child.yaml", """
        version: 1
        steps:
          - {id: inner, type: template, text: "ran"}
    """)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: sub, type: flow, flow: child.yaml, when: "{{ false }}"}
    """)
    result = load_flow(flow).run_sync()
    assert result.status == "succeeded"
    assert result.steps["sub"].status == "skipped"
    assert "sub/inner" not in result.steps


def test_resume_keeps_the_child_steps_that_succeeded(tmp_path):
    write(tmp_path / "helpers.py", """
        from pathlib import Path


        def count(folder):
            marker = Path(folder) / "count.txt"
            n = int(marker.read_text()) + 1 if marker.exists() else 1
            marker.write_text(str(n))
            return n


        def fail_if(folder):
            if (Path(folder) / "fail").exists():
                raise RuntimeError("asked to fail")
            return "fine"
    """)
    write(tmp_path / "child.yaml", f"""
        version: 1
        steps:
          - {{id: first, type: python, function: "helpers:count", args: ["{tmp_path}"]}}
          - {{id: second, type: python, function: "helpers:fail_if", args: ["{tmp_path}"]}}
        outputs:
          first: "{{{{ first.return }}}}"
          second: "{{{{ second.return }}}}"
    """)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: sub, type: flow, flow: child.yaml}
    """)
    (tmp_path / "fail").touch()
    saver = InMemorySaver()
    runnable = load_flow(flow)
    failed = runnable.run_sync(saver=saver)
    assert failed.status == "failed"
    (tmp_path / "fail").unlink()
    resumed = runnable.run_sync(saver=saver, resume=failed.run_id)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.outputs == {"sub": {"first": 1, "second": "fine"}}
    assert (tmp_path / "count.txt").read_text() == "1"


def test_a_failing_child_fails_the_flow_step_and_the_run(tmp_path):
    write(tmp_path / "helpers.py", HELPERS)
    write(tmp_path / "child.yaml", """
        version: 1
        steps:
          - id: bad
            type: python
            function: helpers:explode
            args: [x]
    """)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: sub, type: flow, flow: child.yaml}
          - {id: next, type: template, text: "{{ sub.return }}"}
    """)
    result = load_flow(flow).run_sync()
    assert result.status == "failed"
    assert result.steps["sub/bad"].status == "failed"
    assert "cannot handle 'x'" in result.steps["sub/bad"].error
    assert result.steps["sub"].status == "failed"
    assert "next" not in result.steps
    assert "sub/bad" in result.error


# A child flow with one input and no `outputs:`.
GREETER = """
    version: 1
    inputs: {name: {type: string}}
    steps:
      - {id: greet, type: template, text: "hi {{ inputs.name }}"}
"""


def test_child_inputs_of_the_wrong_type_fail_the_flow_step_plainly(tmp_path):
    write(tmp_path / "child.yaml", GREETER)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: sub, type: flow, flow: child.yaml, inputs: {name: "{{ [1, 2] }}"}}
    """)
    result = load_flow(flow).run_sync()
    assert result.status == "failed"
    assert result.steps["sub"].error == (
        "inputs of flow 'child': input 'name' must be of type string, got list"
    )


def test_a_child_without_outputs_returns_its_last_step_under_its_id(tmp_path):
    write(tmp_path / "child.yaml", GREETER)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: sub, type: flow, flow: child.yaml, inputs: {name: Ada}}
    """)
    assert load_flow(flow).run_sync().outputs == {"sub": {"greet": "hi Ada"}}


def test_a_python_step_in_a_child_flow_finds_modules_next_to_the_child(tmp_path):
    write(tmp_path / "lib" / "helpers.py", "def where():\n    return 'lib'\n")
    write(tmp_path / "helpers.py", "def where():\n    return 'top'\n")
    write(tmp_path / "lib" / "child.yaml", """
        version: 1
        steps:
          - {id: where, type: python, function: "helpers:where"}
    """)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - {id: mine, type: python, function: "helpers:where"}
          - {id: sub, type: flow, flow: lib/child.yaml}
        outputs:
          mine: "{{ mine.return }}"
          child: "{{ sub.return.where }}"
    """)
    assert load_flow(flow).run_sync().outputs == {"mine": "top", "child": "lib"}


# -- the example flows -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "inputs", "expected"),
    [
        ("python_step", {"text": "a bb ccc"},
         {"words": 3, "comment": "echo (1 message): 3 words; the longest, shouted: CCC CCC"}),
        ("subflows", {"prompt": "Hi"}, {
            "shared": "echo (3 messages): Summarise: echo (1 message): Hi",
            "isolated": "echo (1 message): Summarise: Hi",
            "follow_up": "echo (5 messages): Thanks.",
        }),
    ],
)
def test_example_flows_run_offline(name, inputs, expected):
    result = load_flow(ROOT / "flows" / f"{name}.yaml").run_sync(inputs, saver=InMemorySaver())
    assert result.status == "succeeded", result.error
    assert result.outputs == expected
