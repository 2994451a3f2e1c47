"""Loops, map and human input (SPEC §7): `type: map`, `type: loop`, `type: input`.

Flows run on the offline echo model, through the Python API and the CLI as a real
subprocess, on real savers (SQLite and JSONL files, PostgreSQL)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import ROOT, TIMBAL, WAIT, child_env, timbal, write

from runner import FlowError, InputError, JSONLSaver, PostgresSaver, SQLiteSaver, load_flow
from runner.builder import Flow
from runner.cache import StepCache
from runner.runnable import RunnableFlow
from runner.savers import InMemorySaver
from runner.savers.base import Saver

FLOWS = ROOT / "flows"


def flow_file(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    """A flow file in tmp_path: `version: 1` on line 1, then `text` (dedented) from line 2."""
    return write(tmp_path / name, "version: 1\n" + textwrap.dedent(text).lstrip("\n"))


def compile_errors(path: Path) -> list[str]:
    """`file:line:col: message` of every diagnostic compiling `path` raises."""
    with pytest.raises(FlowError) as info:
        load_flow(path)
    return [f"{d.location.line}:{d.location.col}: {d.message}" if d.location else d.message
            for d in info.value.diagnostics]


def steps_of(saver: Saver, run_id: str) -> dict[str, Any]:
    """The saved step records of a run by path."""
    return {s.step_id: s for s in saver.get_run(run_id).steps}


# --------------------------------------------------------------------------- compile checks


def test_map_body_error_is_located_at_the_body_line(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [1, 2]
            steps:
              - id: inner
                type: template
                text: "{{ inputs.nope }} {{ inerr.return }}"
        """)
    errors = compile_errors(path)
    assert any(e.startswith("9:") and "unknown input 'nope'" in e for e in errors), errors
    assert any(e.startswith("9:") and "unknown step 'inerr'" in e and "did you mean 'inner'" in e
               for e in errors), errors


def test_the_outer_flow_reads_only_the_body_result(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [1]
            steps:
              - {id: inner, type: template, text: "x"}
          - id: after
            type: template
            text: "{{ inner.return }}"
        """)
    (error,) = compile_errors(path)
    assert error.startswith("10:") and "inside map 'fan'" in error


def test_a_body_step_may_read_outer_steps_inputs_and_the_item(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        inputs: {greeting: {type: string, default: hi}}
        steps:
          - {id: first, type: template, text: "A"}
          - id: fan
            type: map
            items: [x, y]
            as: letter
            steps:
              - {id: inner, type: template, text: "{{ inputs.greeting }} {{ first.return }} {{ letter }}"}
        """)
    flow = load_flow(path)
    assert flow.graph.step("fan").deps == {"first"}  # the map waits for what its body reads
    result = flow.run_sync({})
    assert result.outputs == {"fan": ["hi A x", "hi A y"]}


def test_unknown_keys_inside_bodies_are_located_with_did_you_mean(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [1]
            steps:
              - id: inner
                type: template
                txt: "x"
        """)
    errors = compile_errors(path)
    assert any(e.startswith("9:") and "unknown key 'txt' in step 'inner'" in e and "did you mean 'text'" in e
               for e in errors), errors


def test_loop_needs_max_iterations_of_at_most_1000(tmp_path: Path) -> None:
    body = "    steps: [{id: inner, type: template, text: x}]\n"
    missing = flow_file(tmp_path, "steps:\n  - id: again\n    type: loop\n" + body, "a.yaml")
    assert any("needs 'max_iterations'" in e for e in compile_errors(missing))
    too_many = flow_file(tmp_path, "steps:\n  - id: again\n    type: loop\n    max_iterations: 1001\n" + body,
                         "b.yaml")
    (error,) = compile_errors(too_many)
    assert error.startswith("5:") and "must be at most 1000" in error


def test_a_body_is_inline_steps_or_a_flow_not_both(tmp_path: Path) -> None:
    write(tmp_path / "child.yaml", "version: 1\nsteps: [{id: c, type: template, text: x}]\n")
    neither = flow_file(tmp_path, "steps:\n  - {id: fan, type: map, items: [1]}\n", "a.yaml")
    assert any("needs 'steps' or 'flow'" in e for e in compile_errors(neither))
    both = flow_file(tmp_path, "steps:\n  - id: fan\n    type: map\n    items: [1]\n    flow: child.yaml\n"
                     "    steps: [{id: c, type: template, text: x}]\n", "b.yaml")
    assert any("not both" in e for e in compile_errors(both))


def test_body_ids_and_item_names_may_not_shadow_outer_names(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - {id: first, type: template, text: x}
          - id: fan
            type: map
            items: [1]
            as: inputs
            steps:
              - {id: first, type: template, text: x}
        """)
    errors = compile_errors(path)
    assert any(e.startswith("7:") and "reserved name" in e for e in errors), errors
    assert any(e.startswith("9:") and "already used by the enclosing flow" in e for e in errors), errors


def test_loop_templates_read_last_iterations_and_loop_index_checked(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: again
            type: loop
            max_iterations: 3
            until: "{{ again.lst }}"
            steps:
              - {id: inner, type: template, text: "{{ loop.indx }}"}
        """)
    errors = compile_errors(path)
    assert any(e.startswith("6:") and "did you mean 'last'" in e for e in errors), errors
    assert any(e.startswith("8:") and "did you mean 'index'" in e for e in errors), errors


def test_input_schema_must_be_a_json_schema(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: ask
            type: input
            prompt: "Go?"
            schema: {type: boolen}
        """)
    (error,) = compile_errors(path)
    assert error.startswith("6:") and "not a valid JSON Schema" in error


def test_timbal_schema_describes_the_new_kinds_for_editors() -> None:
    proc = timbal("schema")
    schema = json.loads(proc.stdout)
    for kind in ("mapStep", "loopStep", "inputStep"):
        assert kind in schema["$defs"]
    assert schema["$defs"]["mapStep"]["properties"]["steps"]["items"] == {"$ref": "#/$defs/step"}


# --------------------------------------------------------------------------- map


def test_map_returns_results_in_item_order_whatever_order_they_finish(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [0.2, 0.1, 0.0]
            as: pause
            steps:
              - {id: say, model: echo, prompt: "{{ pause }}", params: {delay: "{{ pause }}"}}
        """)
    saver = SQLiteSaver(tmp_path / "s.db")
    result = load_flow(path).run_sync({}, saver=saver)
    assert result.outputs == {"fan": ["echo (1 message): 0.2", "echo (1 message): 0.1",
                                      "echo (1 message): 0.0"]}
    records = steps_of(saver, result.run_id)
    assert records["fan[2]/say"].ended_at < records["fan[0]/say"].ended_at  # ran at once


def test_map_max_concurrency_bounds_the_items_running_at_once(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [1, 2, 3, 4, 5, 6]
            max_concurrency: 2
            steps:
              - {id: say, model: echo, prompt: "{{ item }}", params: {delay: 0.05}}
        """)
    saver = SQLiteSaver(tmp_path / "s.db")
    result = load_flow(path).run_sync({}, saver=saver)
    assert result.ok
    spans = [(s.started_at, s.ended_at) for s in saver.get_run(result.run_id).steps if "/say" in s.step_id]
    assert len(spans) == 6
    most = max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)
    assert most <= 2


def test_map_over_an_empty_list_returns_an_empty_list(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        inputs: {docs: {type: array}}
        steps:
          - id: fan
            type: map
            items: "{{ inputs.docs }}"
            steps: [{id: say, model: echo, prompt: "{{ item }}"}]
        """)
    assert load_flow(path).run_sync({"docs": []}).outputs == {"fan": []}


def test_map_items_must_render_to_a_list(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        inputs: {docs: {type: string}}
        steps:
          - id: fan
            type: map
            items: "{{ inputs.docs }}"
            steps: [{id: say, model: echo, prompt: "{{ item }}"}]
        """)
    result = load_flow(path).run_sync({"docs": "abc"})
    assert result.status == "failed" and "items must render to a list" in (result.error or "")


def test_each_map_item_starts_from_the_memory_at_the_map_and_keeps_what_it_adds(tmp_path: Path) -> None:
    saver = SQLiteSaver(tmp_path / "s.db")
    result = load_flow(FLOWS / "map_summaries.yaml").run_sync({}, saver=saver)
    assert result.ok, result.error
    # Each item saw the brief (2 messages) and its own prompt: 3, never the other items'.
    assert all(s.startswith(("Tide", "Kelp", "Reefs")) and "(3 messages)" in s
               for s in result.outputs["summaries"])
    memory = saver.load_memory(result.run_id)
    assert set(memory) == {"notes"}
    assert [m["content"] for m in memory["notes"] if m["role"] == "user"] == [
        "Summaries should be one line.", "Join: " + " / ".join(result.outputs["summaries"])]
    records = steps_of(saver, result.run_id)
    item = records["summaries[1]/summary"]
    assert item.messages["notes"][0]["content"] == "Summarize: Kelp forests shelter otters."
    assert "(3 messages)" in result.outputs["joined"]  # the wrap-up saw no item's messages


def test_one_failed_item_fails_the_map_the_others_finish_and_resume_reruns_only_it(tmp_path: Path) -> None:
    write(tmp_path / "work.py", '''
        from pathlib import Path

        def handle(n: int) -> int:
            here = Path(__file__).parent
            with open(here / "calls.log", "a") as log:
                log.write(f"{n}\\n")
            if n == 2 and (here / "broken").exists():
                raise RuntimeError("item two is broken")
            return n * 10
        ''')
    (tmp_path / "broken").touch()
    path = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [1, 2, 3]
            as: n
            steps:
              - {id: work, type: python, function: "work:handle", args: {n: "{{ n }}"}}
        """)
    saver = SQLiteSaver(tmp_path / "s.db")
    flow = load_flow(path)
    failed = flow.run_sync({}, saver=saver)
    assert failed.status == "failed" and "item two is broken" in (failed.error or "")
    records = steps_of(saver, failed.run_id)
    assert records["fan[0]/work"].status == "succeeded" and records["fan[2]/work"].status == "succeeded"
    assert records["fan[1]/work"].status == "failed" and records["fan"].status == "failed"
    (tmp_path / "broken").unlink()
    resumed = flow.run_sync({}, saver=saver, resume=failed.run_id)
    assert resumed.ok and resumed.outputs == {"fan": [10, 20, 30]}
    calls = (tmp_path / "calls.log").read_text().split()
    assert sorted(calls[:3]) == ["1", "2", "3"] and calls[3:] == ["2"]


def test_map_over_a_flow_file_with_inputs(tmp_path: Path) -> None:
    write(tmp_path / "child.yaml", """
        version: 1
        inputs: {word: {type: string}}
        steps: [{id: shout, type: template, text: "{{ inputs.word | upper }}"}]
        outputs: {loud: "{{ shout.return }}"}
        """)
    path = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [a, b]
            as: w
            flow: child.yaml
            inputs: {word: "{{ w }}!"}
        """)
    saver = SQLiteSaver(tmp_path / "s.db")
    result = load_flow(path).run_sync({}, saver=saver)
    assert result.outputs == {"fan": [{"loud": "A!"}, {"loud": "B!"}]}
    assert "fan[1]/shout" in steps_of(saver, result.run_id)


# --------------------------------------------------------------------------- loop


def test_loop_runs_until_the_condition_holds_sharing_memory(tmp_path: Path) -> None:
    saver = SQLiteSaver(tmp_path / "s.db")
    result = load_flow(FLOWS / "refine_loop.yaml").run_sync({}, saver=saver)
    assert result.ok, result.error
    assert result.outputs["score"] == 8 and result.outputs["rounds"] == 2
    records = steps_of(saver, result.run_id)
    assert "(3 messages)" in records["polish#2/improve"].return_value  # memory shared across iterations
    assert "Improve round 2 (last score 5)" in records["polish#2/improve"].return_value
    assert "polish#3/improve" not in records
    assert len(saver.load_memory(result.run_id)["editor"]) == 4


def test_loop_that_never_meets_until_fails_or_succeeds_as_told(tmp_path: Path) -> None:
    text = """
        steps:
          - id: again
            type: loop
            max_iterations: 3
            until: "{{ again.last > 10 }}"
            on_max_iterations: ON
            steps: [{id: count, type: template, text: "{{ loop.index }}"}]
        """
    failing = load_flow(flow_file(tmp_path, text.replace("ON", "fail"), "a.yaml")).run_sync({})
    assert failing.status == "failed" and "max_iterations (3)" in (failing.error or "")
    passing = load_flow(flow_file(tmp_path, text.replace("ON", "succeed"), "b.yaml")).run_sync({})
    assert passing.ok and passing.outputs == {"again": 3}


def test_loop_last_is_null_before_the_first_iteration_and_iterations_is_readable(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: grow
            type: loop
            max_iterations: 4
            until: "{{ grow.last | length >= 3 }}"
            steps:
              - {id: step, type: template, text: "{{ (grow.last or []) + [loop.index] }}"}
          - {id: report, type: template, text: "{{ grow.iterations }}:{{ grow.return }}"}
        """)
    assert load_flow(path).run_sync({}).outputs == {"report": "3:[1, 2, 3]"}


def test_a_resumed_loop_keeps_its_finished_iterations(tmp_path: Path) -> None:
    write(tmp_path / "work.py", '''
        from pathlib import Path

        def tick(i: int) -> int:
            here = Path(__file__).parent
            with open(here / "calls.log", "a") as log:
                log.write(f"{i}\\n")
            if i == 3 and (here / "broken").exists():
                raise RuntimeError("third time unlucky")
            return i
        ''')
    (tmp_path / "broken").touch()
    path = flow_file(tmp_path, """
        steps:
          - id: again
            type: loop
            max_iterations: 4
            steps:
              - {id: tick, type: python, function: "work:tick", args: {i: "{{ loop.index }}"}}
        """)
    saver = SQLiteSaver(tmp_path / "s.db")
    flow = load_flow(path)
    failed = flow.run_sync({}, saver=saver)
    assert failed.status == "failed"
    (tmp_path / "broken").unlink()
    resumed = flow.run_sync({}, saver=saver, resume=failed.run_id)
    assert resumed.ok and resumed.outputs == {"again": 4}
    assert (tmp_path / "calls.log").read_text().split() == ["1", "2", "3", "3", "4"]


# --------------------------------------------------------------------------- input


def test_input_step_waits_while_the_steps_that_dont_need_it_run(tmp_path: Path) -> None:
    saver = SQLiteSaver(tmp_path / "s.db")
    events: list[Any] = []
    result = load_flow(FLOWS / "approval.yaml").run_sync({}, saver=saver, listener=events.append)
    assert result.status == "waiting" and result.outputs is None
    question = {"step_id": "approve", "schema": {"type": "boolean"},
                "prompt": "Publish this post? echo (1 message): Write a post about tide pools"}
    assert result.to_dict()["waiting"] == [question]
    waiting = [e for e in events if e.type == "run_waiting"]
    assert waiting and waiting[0].data == {"waiting": [question]}
    assert events.index(waiting[0]) < len(events) - 1 and events[-1].type == "run_finished"
    records = steps_of(saver, result.run_id)
    assert records["announce"].status == "succeeded" and "publish" not in records
    assert saver.get_run(result.run_id).status == "waiting"


def test_a_wrong_answer_raises_and_the_run_stays_waiting(tmp_path: Path) -> None:
    saver = SQLiteSaver(tmp_path / "s.db")
    flow = load_flow(FLOWS / "approval.yaml")
    result = flow.run_sync({}, saver=saver)
    with pytest.raises(InputError, match="must be of type boolean"):
        flow.run_sync(None, saver=saver, resume=result.run_id, answers={"approve": "sure"})
    with pytest.raises(InputError, match="did you mean 'approve'"):
        flow.run_sync(None, saver=saver, resume=result.run_id, answers={"aprove": True})
    assert saver.get_run(result.run_id).status == "waiting"
    done = flow.run_sync(None, saver=saver, resume=result.run_id, answers={"approve": False})
    assert done.ok and done.outputs == {"result": "Shelved."}


def test_answers_given_to_a_new_run_are_taken_without_waiting(tmp_path: Path) -> None:
    flow = load_flow(FLOWS / "approval.yaml")
    saver = SQLiteSaver(tmp_path / "s.db")
    result = flow.run_sync({}, saver=saver, answers={"approve": False})
    assert result.ok and result.outputs == {"result": "Shelved."}
    with pytest.raises(InputError, match="no input step 'draft'"):
        flow.run_sync({}, saver=saver, answers={"draft": "x"})
    with pytest.raises(InputError, match="must be of type boolean"):
        flow.run_sync({}, saver=saver, answers={"approve": "no"})


def test_an_input_inside_a_loop_waits_and_is_answered_by_its_path(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: review
            type: loop
            max_iterations: 3
            until: "{{ review.last == 'ok' }}"
            steps:
              - {id: verdict, type: input, prompt: "Round {{ loop.index }}: ok?", schema: {enum: [ok, again]}}
        """)
    saver = SQLiteSaver(tmp_path / "s.db")
    flow = load_flow(path)
    first = flow.run_sync({}, saver=saver)
    assert first.waiting == [{"step_id": "review#1/verdict", "prompt": "Round 1: ok?",
                              "schema": {"enum": ["ok", "again"]}}]
    second = flow.run_sync(None, saver=saver, resume=first.run_id, answers={"review#1/verdict": "again"})
    assert [q["step_id"] for q in second.waiting] == ["review#2/verdict"]
    done = flow.run_sync(None, saver=saver, resume=first.run_id, answers={"review#2/verdict": "ok"})
    assert done.ok and done.outputs == {"review": "ok"}


# --------------------------------------------------------------------------- the command line


def test_run_exits_3_with_the_command_to_answer_and_answers_are_typed(tmp_path: Path) -> None:
    flow = write(tmp_path / "approval.yaml", (FLOWS / "approval.yaml").read_text())
    proc = timbal("run", flow, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    match = re.search(r"timbal run (\S+) --resume (\S+) --answer approve=VALUE", proc.stderr)
    assert match, proc.stderr
    assert "Publish this post?" in proc.stderr
    run_id = match.group(2)
    wrong = timbal("run", flow, "--resume", run_id, "--answer", "approve=perhaps", cwd=tmp_path)
    assert wrong.returncode == 2 and "approve" in wrong.stderr and "Traceback" not in wrong.stderr
    status = json.loads(timbal("runs", "show", run_id, "--saver", flow, "--json", cwd=tmp_path).stdout)
    assert status["status"] == "waiting" and status["waiting"][0]["schema"] == {"type": "boolean"}
    right = timbal("run", match.group(1), "--resume", run_id, "--answer", "approve=yes", "--json",
                   cwd=tmp_path)
    assert right.returncode == 0, right.stderr
    assert json.loads(right.stdout)["outputs"]["result"].startswith("Published:")


def test_run_json_of_a_waiting_run_lists_the_questions(tmp_path: Path) -> None:
    flow = write(tmp_path / "approval.yaml", (FLOWS / "approval.yaml").read_text())
    proc = timbal("run", flow, "--json", cwd=tmp_path)
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["status"] == "waiting" and data["waiting"][0]["step_id"] == "approve"


def test_answer_without_resume_is_a_usage_error(tmp_path: Path) -> None:
    proc = timbal("run", FLOWS / "approval.yaml", "--answer", "approve=yes", cwd=tmp_path)
    assert proc.returncode == 2 and "--resume" in proc.stderr


def _pty_run(args: list[str], cwd: Path, answers: list[str]) -> tuple[int, str]:
    """Run `timbal ARGS` on a pseudo-terminal (stdin and stdout are ttys); type each answer
    once the question before it shows. The exit code and everything printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*TIMBAL, *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                            env=child_env(), close_fds=True)
    os.close(slave)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + WAIT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                if pending and seen.rstrip().endswith(b":"):
                    os.write(master, pending.pop(0).encode() + b"\n")
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=WAIT), seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_at_a_terminal_run_asks_the_question_and_goes_on(tmp_path: Path) -> None:
    flow = write(tmp_path / "approval.yaml", (FLOWS / "approval.yaml").read_text())
    code, seen = _pty_run(["run", str(flow)], tmp_path, ["perhaps", "yes"])
    assert code == 0, seen
    assert "Publish this post?" in seen and "not a valid boolean" in seen
    assert "Published: echo (1 message): Write a post about tide pools" in seen


def test_chat_asks_at_the_prompt(tmp_path: Path) -> None:
    flow = flow_file(tmp_path, """
        inputs: {prompt: {type: string}}
        steps:
          - {id: ask, type: input, prompt: "Sign as?"}
          - {id: reply, model: echo, prompt: "{{ inputs.prompt }} -- {{ ask.return }}"}
        """)
    proc = timbal("chat", flow, input="hello\nAda\n", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Sign as?" in proc.stderr
    assert "echo (1 message): hello -- Ada" in proc.stdout


def test_runs_show_nests_items_and_iterations(tmp_path: Path) -> None:
    saver_uri = f"sqlite:{tmp_path / 's.db'}"
    for name in ("map_summaries.yaml", "refine_loop.yaml"):
        assert timbal("run", FLOWS / name, "--saver", saver_uri, cwd=tmp_path).returncode == 0
    runs = json.loads(timbal("runs", "list", "--saver", saver_uri, "--json").stdout)
    loop_run, map_run = runs[0]["run_id"], runs[1]["run_id"]
    text = timbal("runs", "show", map_run, "--saver", saver_uri).stdout
    lines = [line.rstrip() for line in text.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("summaries[0]") and "/" not in line)
    assert lines[at + 1].lstrip().startswith("summaries[0]/summary")
    assert len(lines[at + 1]) - len(lines[at + 1].lstrip()) > len(lines[at]) - len(lines[at].lstrip())
    loop_text = timbal("runs", "show", loop_run, "--saver", saver_uri).stdout
    assert loop_text.index("polish#1") < loop_text.index("polish#1/improve") < loop_text.index("polish#2")
    data = json.loads(timbal("runs", "show", map_run, "--saver", saver_uri, "--json").stdout)
    assert {"summaries", "summaries[0]/summary", "summaries[2]/labelled"} <= {s["step_id"] for s in data["steps"]}


@pytest.mark.parametrize("fmt,marks", [
    ("mermaid", ["subgraph summaries[", "summaries__summary[", "end"]),
    ("dot", ["subgraph cluster_summaries {", "summaries__summary [label="]),
    ("text", ["map over doc: 2 steps", "summary"]),
])
def test_graph_draws_bodies_as_clusters(fmt: str, marks: list[str]) -> None:
    proc = timbal("graph", FLOWS / "map_summaries.yaml", "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    for mark in marks:
        assert mark in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- savers, cache, builder


@pytest.fixture(params=["in_memory", "jsonl", "sqlite", "postgres"])
def open_saver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Saver]]:
    """Opens savers on one fresh store of each kind (a new object per call: a new process's view)."""
    opened: list[Saver] = []
    shared = InMemorySaver()
    kind = request.param
    if kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("postgres_schema")

    def make() -> Saver:
        saver: Saver
        if kind == "in_memory":
            return shared
        if kind == "jsonl":
            saver = JSONLSaver(tmp_path / "s.jsonl")
        elif kind == "sqlite":
            saver = SQLiteSaver(tmp_path / "s.db")
        else:
            saver = PostgresSaver(dsn, schema=schema)
        opened.append(saver)
        return saver

    yield make
    for saver in opened:
        saver.close()


def test_items_iterations_and_waiting_runs_are_recorded_in_every_saver(
    open_saver: Callable[[], Saver], tmp_path: Path
) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [a, b]
            steps: [{id: say, model: echo, memory_id: m, prompt: "{{ item }}"}]
          - id: again
            type: loop
            max_iterations: 2
            steps: [{id: say, model: echo, memory_id: m, prompt: "round {{ loop.index }}"}]
          - {id: ok, type: input, prompt: "Fine?", schema: {type: boolean}}
        """)
    flow = load_flow(path)
    result = flow.run_sync({}, saver=open_saver())
    assert result.status == "waiting"
    later = open_saver()  # another process sharing the store
    run = later.get_run(result.run_id)
    assert run.status == "waiting"
    paths = {s.step_id for s in run.steps}
    assert {"fan[0]/say", "fan[1]/say", "again#1/say", "again#2/say", "ok"} <= paths
    memory = later.load_memory(result.run_id)
    assert [m["content"] for m in memory["m"] if m["role"] == "user"] == ["round 1", "round 2"]
    done = flow.run_sync(None, saver=later, resume=result.run_id, answers={"ok": True})
    assert done.ok and open_saver().get_run(result.run_id).status == "succeeded"


def test_the_incremental_cache_reuses_steps_inside_bodies(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        inputs: {docs: {type: array}}
        steps:
          - id: fan
            type: map
            items: "{{ inputs.docs }}"
            steps: [{id: say, model: echo, prompt: "{{ item }}"}]
        """)
    cache = StepCache()
    flow = RunnableFlow(load_flow(path).graph, InMemorySaver(), cache=cache)
    flow.run_sync({"docs": ["a", "b"]})
    cache.begin_run()
    again = flow.run_sync({"docs": ["a", "c"]})
    assert again.outputs == {"fan": ["echo (1 message): a", "echo (1 message): c"]}
    assert cache.reused == ["fan[0]/say"]


def test_the_builder_adds_maps_loops_and_input_steps() -> None:
    body = Flow().add_llm("summary", model="echo", prompt="Sum: {{ doc }}")
    flow = (
        Flow("built")
        .add_input("docs", "array")
        .add_map("sums", "{{ inputs.docs }}", body, as_="doc", max_concurrency=2)
        .add_loop("count", [{"id": "n", "type": "template", "text": "{{ loop.index }}"}],
                  max_iterations=5, until="{{ count.last == 2 }}")
        .add_input("ok", "boolean", prompt="ok? {{ sums.return | length }}")
        .set_output("sums.return", "sums").set_output("count.return", "count")
        .set_output("ok.return", "ok")
    )
    spec = flow.to_spec()
    assert spec["steps"][0]["steps"][0]["id"] == "summary" and spec["steps"][2]["type"] == "input"
    runnable = flow.compile(InMemorySaver())
    waiting = runnable.run_sync({"docs": ["x", "y"]})
    assert waiting.waiting[0]["prompt"] == "ok? 2"
    done = runnable.run_sync(None, resume=waiting.run_id, answers={"ok": True})
    assert done.outputs == {"sums": ["echo (1 message): Sum: x", "echo (1 message): Sum: y"],
                            "count": 2, "ok": True}


def test_an_input_named_items_is_the_input_not_the_dict_method(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        inputs: {items: {type: array}}
        steps:
          - id: fan
            type: map
            items: "{{ inputs.items }}"
            steps: [{id: say, type: template, text: "{{ item }}!"}]
        """)
    assert load_flow(path).run_sync({"items": ["a", "b"]}).outputs == {"fan": ["a!", "b!"]}


def test_watch_reruns_an_edited_body_step_and_reuses_the_rest(watch, tmp_path: Path) -> None:
    flow = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [a, b]
            steps:
              - {id: first, model: echo, prompt: "first {{ item }}"}
              - {id: second, model: echo, prompt: "second {{ first.return }}"}
            outputs: {text: "{{ second.return }}"}
          - {id: join, type: template, text: "{{ fan.return | map(attribute='text') | join(' | ') }}"}
        """)
    live = watch(flow.name)
    assert live.line() == ("echo (1 message): second echo (1 message): first a | "
                           "echo (1 message): second echo (1 message): first b")
    flow.write_text(flow.read_text().replace('"second {{', '"2nd {{'))
    assert live.line().startswith("echo (1 message): 2nd echo (1 message): first a")
    assert "fan[0]/first, fan[1]/first" in live.stderr_until("reused")


def test_nested_bodies_read_every_enclosing_name(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        inputs: {prefix: {type: string, default: ">"}}
        steps:
          - {id: base, type: template, text: "B"}
          - id: rows
            type: map
            items: [x, y]
            as: row
            steps:
              - id: cells
                type: loop
                max_iterations: 2
                steps:
                  - {id: cell, type: template, text: "{{ inputs.prefix }}{{ base.return }}{{ row }}{{ loop.index }}"}
        """)
    flow = load_flow(path)
    assert flow.graph.step("rows").deps == {"base"}
    saver = SQLiteSaver(tmp_path / "s.db")
    result = flow.run_sync({}, saver=saver)
    assert result.outputs == {"rows": [">Bx2", ">By2"]}
    assert steps_of(saver, result.run_id)["rows[1]/cells#2/cell"].return_value == ">By2"


def test_a_map_killed_mid_way_resumes_only_the_unfinished_items(tmp_path: Path) -> None:
    write(tmp_path / "work.py", '''
        import time
        from pathlib import Path

        def handle(n: int) -> int:
            here = Path(__file__).parent
            with open(here / "calls.log", "a") as log:
                log.write(f"{n}\\n")
            while n == 2 and not (here / "go").exists():
                time.sleep(0.01)
            return n
        ''')
    flow = flow_file(tmp_path, """
        steps:
          - id: fan
            type: map
            items: [0, 1, 2]
            max_concurrency: 1
            as: n
            steps:
              - {id: work, type: python, function: "work:handle", args: {n: "{{ n }}"}}
        state_saver: {type: sqlite, path: s.db}
        """)
    proc = subprocess.Popen([*TIMBAL, "run", str(flow)], cwd=tmp_path, env=child_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = tmp_path / "calls.log"
    deadline = time.monotonic() + WAIT
    while not (log.exists() and log.read_text().split() == ["0", "1", "2"]):
        assert time.monotonic() < deadline and proc.poll() is None, "item 2 never started"
        time.sleep(0.01)  # polling the file the step writes, with a deadline
    proc.kill()  # kill -9 while item 2 is in flight
    proc.wait(timeout=WAIT)
    saver = SQLiteSaver(tmp_path / "s.db")
    (run,) = saver.list_runs()
    assert run.status == "running"  # killed: never finished
    kept = steps_of(saver, run.run_id)
    assert set(kept) == {"fan[0]/work", "fan[1]/work"}
    (tmp_path / "go").touch()
    resumed = timbal("run", flow, "--resume", run.run_id, "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["outputs"] == {"fan": [0, 1, 2]}
    assert log.read_text().split() == ["0", "1", "2", "2"]


def test_until_may_not_read_a_body_step_and_says_what_to_read(tmp_path: Path) -> None:
    path = flow_file(tmp_path, """
        steps:
          - id: again
            type: loop
            max_iterations: 3
            until: "{{ check.return == 'ok' }}"
            steps:
              - {id: check, type: template, text: ok}
        """)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    (diag,) = info.value.diagnostics
    assert diag.location is not None and diag.location.line == 6
    assert "inside the body of 'again'" in diag.message and "again.last" in (diag.hint or "")


def test_a_flow_tool_that_asks_a_person_is_a_compile_error(tmp_path: Path) -> None:
    write(tmp_path / "ask.yaml", """
        version: 1
        name: ask_human
        description: Ask a person
        inputs: {q: {type: string}}
        steps:
          - {id: ask, type: input, prompt: "{{ inputs.q }}"}
        """)
    path = flow_file(tmp_path, """
        steps:
          - {id: bot, type: agent, model: echo, prompt: hi, tools: [{flow: ask.yaml}]}
        """)
    (error,) = compile_errors(path)
    assert error.startswith("3:") and "cannot wait for an answer" in error
