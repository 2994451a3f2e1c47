"""`timbal run FLOW --watch` (hot reload) as a user runs it: a real subprocess, real edits
on disk, SPEC §4. Every wait has a timeout, so a hung watcher fails the test, never hangs it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from testkit import WAIT, child_env, edit, write


@pytest.fixture()
def flow(tmp_path: Path) -> Path:
    return write(tmp_path / "flow.yaml", """
        version: 1
        name: greeter
        inputs:
          name: {type: string}
        steps:
          - id: greet
            model: echo
            prompt: "Hello {{ inputs.name }}"
        """)


def test_watch_prints_the_first_output_then_a_new_one_after_an_edit(watch, flow):
    live = watch("flow.yaml", "-i", "name=Ada")
    assert live.line() == "echo (1 message): Hello Ada"
    live.stderr_until(r"succeeded")
    edit(flow, "Hello", "Goodbye")
    assert live.line() == "echo (1 message): Goodbye Ada"
    assert "change detected: flow.yaml — run 2" in live.stderr_until(r"change detected")


def test_a_broken_edit_prints_located_errors_and_the_watcher_keeps_going(watch, flow):
    live = watch("flow.yaml", "-i", "name=Ada")
    assert live.line() == "echo (1 message): Hello Ada"
    edit(flow, "{{ inputs.name }}", "{{ inputs.nmae }}")
    line = live.stderr_until(r"error:")
    assert re.search(r"flow\.yaml:\d+:\d+: error: .*nmae", line), line
    live.stderr_until(r"keeping the last good flow")
    assert live.proc.poll() is None
    edit(flow, "{{ inputs.nmae }}", "{{ inputs.name }}!")
    assert live.line() == "echo (1 message): Hello Ada!"


def test_a_failed_run_keeps_the_watcher_alive(watch, tmp_path):
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        name: json
        steps:
          - id: ask
            model: echo
            prompt: "{{ env.TIMBAL_TEST_UNSET_VARIABLE }}"
        """)
    live = watch("flow.yaml")
    live.stderr_until(r"failed")
    edit(flow, "{{ env.TIMBAL_TEST_UNSET_VARIABLE }}", "fine now")
    assert live.line().endswith("fine now")


def test_an_edit_to_a_sub_flow_runs_the_parent_again(watch, tmp_path):
    write(tmp_path / "child.yaml", """
        version: 1
        name: child
        inputs:
          who: {type: string}
        steps:
          - id: say
            type: template
            text: "child says hi to {{ inputs.who }}"
        """)
    write(tmp_path / "flow.yaml", """
        version: 1
        name: parent
        steps:
          - id: sub
            type: flow
            flow: child.yaml
            inputs: {who: parent}
        outputs:
          text: "{{ sub.return.say }}"
        """)
    live = watch("flow.yaml")
    assert live.line() == "child says hi to parent"
    edit(tmp_path / "child.yaml", "says hi", "says bye")
    assert live.line() == "child says bye to parent"
    assert "child.yaml" in live.stderr_until(r"change detected")


def test_an_edited_python_step_module_is_reloaded(watch, tmp_path):
    module = write(tmp_path / "helpers.py", """
        def shout(text):
            return text.upper()
        """)
    write(tmp_path / "flow.yaml", """
        version: 1
        name: py
        steps:
          - id: loud
            type: python
            function: helpers:shout
            args: {text: hey}
        outputs:
          text: "{{ loud.return }}"
        """)
    # Bytecode is written, as on a user's machine.
    env = child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    live = watch("flow.yaml", env=env)
    assert live.line() == "HEY"
    # An edit of the same size within the same second (as a quick edit is) must not be
    # served from the stale .pyc, which Python checks by whole seconds and size.
    before = module.stat()
    edit(module, "text.upper()", "text.title()")
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    assert live.line() == "Hey"


def test_a_save_by_atomic_rename_is_seen(watch, flow, tmp_path):
    live = watch("flow.yaml", "-i", "name=Ada")
    assert live.line() == "echo (1 message): Hello Ada"
    tmp = tmp_path / ".flow.yaml.swp"
    tmp.write_text(flow.read_text(encoding="utf-8").replace("Hello", "Hi"), encoding="utf-8")
    os.replace(tmp, flow)
    assert live.line() == "echo (1 message): Hi Ada"
    # The new file (new inode) is watched as well.
    tmp.write_text(flow.read_text(encoding="utf-8").replace("Hi", "Hey"), encoding="utf-8")
    os.replace(tmp, flow)
    assert live.line() == "echo (1 message): Hey Ada"


def test_a_yml_flow_is_watched(watch, flow, tmp_path):
    flow.rename(tmp_path / "flow.yml")
    live = watch("flow.yml", "-i", "name=Ada")
    assert live.line() == "echo (1 message): Hello Ada"
    edit(tmp_path / "flow.yml", "Hello", "Hallo")
    assert live.line() == "echo (1 message): Hallo Ada"


def test_a_template_file_added_by_an_edit_is_watched_too(watch, flow, tmp_path):
    (tmp_path / "note.txt").write_text("first note", encoding="utf-8")
    live = watch("flow.yaml", "-i", "name=Ada")
    assert live.line() == "echo (1 message): Hello Ada"
    with flow.open("a", encoding="utf-8") as f:
        f.write("  - id: note\n    type: template\n    file: note.txt\n")
    assert live.line() == "first note"
    (tmp_path / "note.txt").write_text("second note", encoding="utf-8")
    assert live.line() == "second note"


def test_ctrl_c_stops_the_watcher_with_exit_130_and_no_traceback(watch, flow):
    live = watch("flow.yaml", "-i", "name=Ada")
    assert live.line() == "echo (1 message): Hello Ada"
    live.stderr_until(r"succeeded")
    assert live.interrupt() == 130
    rest = live.stderr_text() + live.proc.stderr.read()
    assert "Traceback" not in rest


def test_runs_never_overlap_an_edit_during_a_run_starts_one_run_after_it(watch, tmp_path):
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        name: slow
        steps:
          - id: think
            model: echo
            prompt: "v1"
            params: {delay: 1.0}
        """)
    live = watch("flow.yaml")
    live.stderr_until(r"run 1")  # compiled and started: its step takes 1 s, so the edit lands during it
    edit(flow, "v1", "v2")
    assert live.line() == "echo (1 message): v1"  # the run in flight ends on the old flow
    assert live.line() == "echo (1 message): v2"


def test_invalid_inputs_at_start_exit_2(watch, flow):
    # A flow broken from the start waits for a fix (test_cli_first_hour); inputs can't be fixed
    # by an edit, so they end the watcher as `timbal run` would.
    live = watch("flow.yaml", "-i", "nobody=Ada")
    assert live.proc.wait(timeout=WAIT) == 2


def test_invalid_inputs_at_start_give_back_the_callers_sigterm_handler(flow):
    import signal

    from runner.cli.watch import watch_and_run
    from runner.errors import InputError

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(InputError):
        watch_and_run(flow, ("nobody=Ada",), None, None, False, True)
    assert signal.getsignal(signal.SIGTERM) is before
