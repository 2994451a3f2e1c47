"""`timbal chat FLOW` as a script uses it: piped lines in, one reply per line out, SPEC §4.
The echo model shows the memory: its reply counts the messages it was sent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from testkit import LiveProcess, edit, timbal, write

TIMEOUT = 60


def chat(flow: Path, lines: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`timbal chat FLOW ARGS` with `lines` piped in."""
    return timbal("chat", flow, *args, input="".join(f"{line}\n" for line in lines), cwd=flow.parent)


@pytest.fixture()
def flow(tmp_path: Path) -> Path:
    return write(tmp_path / "chat.yaml", """
        version: 1
        name: chat
        inputs:
          prompt: {type: string}
        steps:
          - id: reply
            model: echo
            memory_id: conversation
            prompt: "{{ inputs.prompt }}"
        """)


def test_each_piped_line_is_one_turn_and_the_memory_grows(flow):
    proc = chat(flow, ["hello", "how are you", "bye"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "echo (1 message): hello",
        "echo (3 messages): how are you",
        "echo (5 messages): bye",
    ]


def test_piped_chat_prints_no_prompt_or_banner_on_stdout(flow):
    proc = chat(flow, ["hi"])
    assert proc.stdout == "echo (1 message): hi\n"


def test_a_multi_line_reply_is_one_piped_line_with_its_newlines_escaped(tmp_path):
    path = write(tmp_path / "lines.yaml", """
        version: 1
        name: lines
        inputs:
          prompt: {type: string}
        steps:
          - id: reply
            type: template
            text: "first {{ inputs.prompt }}\\nsecond \\\\ third"
        """)
    proc = chat(path, ["a", "b"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["first a\\nsecond \\\\ third", "first b\\nsecond \\\\ third"]


def test_rewind_past_the_only_turn_says_there_is_one(flow):
    proc = chat(flow, ["hi", "/rewind 5"])
    assert "error: there is 1 turn to rewind: /rewind 1" in proc.stderr


def test_a_line_goes_to_the_single_required_string_input(tmp_path):
    path = write(tmp_path / "ask.yaml", """
        version: 1
        name: ask
        inputs:
          question: {type: string}
          style: {type: string, default: plain}
        steps:
          - id: answer
            model: echo
            memory_id: m
            prompt: "{{ inputs.style }}: {{ inputs.question }}"
        """)
    proc = chat(path, ["why", "how"], "-i", "style=short")
    assert proc.stdout.splitlines() == ["echo (1 message): short: why", "echo (3 messages): short: how"]


def test_an_edit_between_turns_takes_effect_and_keeps_the_conversation(flow):
    live = LiveProcess("chat", str(flow), cwd=flow.parent, stdin=True)
    try:
        live.send("one")
        assert live.line() == "echo (1 message): one"
        edit(flow, '"{{ inputs.prompt }}"', '"edited: {{ inputs.prompt }}"')
        live.send("two")
        assert live.line() == "echo (3 messages): edited: two"
        live.proc.stdin.close()
        assert live.proc.wait(timeout=TIMEOUT) == 0
    finally:
        live.close()


def test_a_broken_edit_between_turns_keeps_the_last_good_flow(flow):
    live = LiveProcess("chat", str(flow), cwd=flow.parent, stdin=True)
    try:
        live.send("one")
        assert live.line() == "echo (1 message): one"
        edit(flow, "{{ inputs.prompt }}", "{{ inputs.promt }}")
        live.send("two")
        assert live.line() == "echo (3 messages): two"
        assert "chat.yaml:" in live.stderr_until(r"error: .*promt")
    finally:
        live.close()


def test_rewind_branches_from_an_earlier_turn(flow):
    proc = chat(flow, ["a", "b", "c", "/rewind 2", "d"])
    assert proc.stdout.splitlines()[-1] == "echo (3 messages): d"


def test_reset_starts_a_fresh_conversation(flow):
    proc = chat(flow, ["a", "b", "/reset", "c"])
    assert proc.stdout.splitlines()[-1] == "echo (1 message): c"


def test_history_shows_the_turns_of_the_current_branch(flow):
    proc = chat(flow, ["first", "second", "/rewind", "/history"])
    assert proc.stdout.splitlines()[-2:] == ["[1] > first", "    echo (1 message): first"]


def test_quit_ends_the_chat_with_exit_0(flow):
    proc = chat(flow, ["a", "/quit", "never sent"])
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["echo (1 message): a"]


def test_continue_picks_up_the_latest_conversation_from_a_jsonl_saver(flow, tmp_path):
    saver = f"jsonl:{tmp_path / 'state.jsonl'}"
    first = chat(flow, ["my name is Ada", "ok"], "--saver", saver)
    assert first.returncode == 0, first.stderr
    later = chat(flow, ["what is my name?"], "--saver", saver, "--continue")
    assert later.returncode == 0, later.stderr
    assert later.stdout == "echo (5 messages): what is my name?\n"


def test_parent_picks_up_the_conversation_that_led_to_that_run(flow, tmp_path):
    saver = f"jsonl:{tmp_path / 'state.jsonl'}"
    first = chat(flow, ["a", "b"], "--saver", saver, "--json")
    run_ids = [json.loads(line)["run_id"] for line in first.stdout.splitlines()]
    later = chat(flow, ["c", "/history"], "--saver", saver, "--parent", run_ids[0])
    assert later.stdout.splitlines() == [
        "echo (3 messages): c",
        "[1] > a",
        "    echo (1 message): a",
        "[2] > c",
        "    echo (3 messages): c",
    ]


def _branch_note(parent: str, others: str) -> str:
    return (f"note: run {parent} was already continued by {others}: this run is a new branch beside it "
            "(timbal runs tree shows both)")


def test_a_chat_from_a_run_already_continued_says_it_is_a_new_branch(flow, tmp_path):
    saver = f"jsonl:{tmp_path / 'state.jsonl'}"
    first = chat(flow, ["a", "b"], "--saver", saver, "--json")
    a, b = (json.loads(line)["run_id"] for line in first.stdout.splitlines())
    later = chat(flow, ["c", "d"], "--saver", saver, "--parent", a, "--json")
    assert later.returncode == 0, later.stderr
    c = json.loads(later.stdout.splitlines()[0])["run_id"]
    assert later.stderr.splitlines().count(_branch_note(a, b)) == 1  # the first turn only
    assert "new branch" not in later.stdout
    # The same note as `timbal run --parent` prints, now naming both earlier branches.
    run = timbal("run", flow, "-i", "prompt=e", "--saver", saver, "--parent", a, cwd=tmp_path)
    assert f"note: run {a} was already continued by {b}, {c}: this run is a new branch beside them" in run.stderr


def test_a_chat_that_continues_the_tip_of_a_conversation_prints_no_branch_note(flow, tmp_path):
    saver = f"jsonl:{tmp_path / 'state.jsonl'}"
    assert chat(flow, ["a", "b"], "--saver", saver).returncode == 0
    later = chat(flow, ["c"], "--saver", saver, "--continue")
    assert later.returncode == 0, later.stderr
    assert "new branch" not in later.stderr


def test_the_turn_after_a_rewind_says_it_is_a_new_branch(flow):
    proc = chat(flow, ["a", "b", "/rewind", "c", "d"], "--json")
    assert proc.returncode == 0, proc.stderr
    a, b, c, d = (json.loads(line)["run_id"] for line in proc.stdout.splitlines())
    assert [line for line in proc.stderr.splitlines() if "new branch" in line] == [_branch_note(a, b)]


def test_each_turn_is_a_run_whose_parent_is_the_previous_turn(flow, tmp_path):
    saver = f"jsonl:{tmp_path / 'state.jsonl'}"
    proc = chat(flow, ["a", "b"], "--saver", saver, "--json")
    turns = [json.loads(line) for line in proc.stdout.splitlines()]
    assert turns[0]["parent_id"] is None
    assert turns[1]["parent_id"] == turns[0]["run_id"]
    assert turns[1]["status"] == "succeeded"


def test_a_failed_turn_prints_an_empty_reply_line_and_the_chat_goes_on(tmp_path):
    path = write(tmp_path / "strict.yaml", """
        version: 1
        name: strict
        inputs:
          prompt: {type: string, maxLength: 5}
        steps:
          - id: reply
            model: echo
            prompt: "{{ inputs.prompt }}"
        """)
    proc = chat(path, ["far too long", "ok"])
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["", "echo (1 message): ok"]
    assert "prompt" in proc.stderr


def test_a_flow_without_a_line_input_is_refused_with_exit_2(tmp_path):
    path = write(tmp_path / "none.yaml", """
        version: 1
        name: none
        steps:
          - id: reply
            model: echo
            prompt: hi
        """)
    proc = chat(path, ["hello"])
    assert proc.returncode == 2
    assert "prompt" in proc.stderr and "Traceback" not in proc.stderr


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("cause", ["unknown parent run", "no input for chat lines"])
def test_a_chat_that_cannot_start_leaves_no_state_file_open(tmp_path, cause):
    from runner.cli.chat import chat as run_chat
    from runner.errors import TimbalError

    inputs = "inputs: {prompt: {type: string}}" if cause == "unknown parent run" else ""
    path = write(tmp_path / "c.yaml", f"""
        version: 1
        name: c
        {inputs}
        steps:
          - id: reply
            model: echo
            prompt: hi
        """)
    parent = "no-such-run" if cause == "unknown parent run" else None
    before = _open_fds()
    with pytest.raises(TimbalError):
        run_chat(path, saver_uri=f"jsonl:{tmp_path / 'state.jsonl'}", parent=parent)
    assert _open_fds() == before
