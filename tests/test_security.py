"""What a flow file, its inputs and its state can and cannot do (SPEC §1, §3, §4):

- templates run in Jinja's sandbox: Python internals are refused with a clear error;
- YAML is loaded as plain data: a `!!python/...` tag is a located error, never executed;
- state files are readable by their owner only (0600), whatever the umask;
- secrets (OPENAI_API_KEY and other secret-looking variables, an `api_key` param, the
  variables a flow lists under `secrets:`) never reach the state, the logs or `runs show`;
- sub-flows, python modules and state files are found relative to the flow file, never
  the working directory.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from testkit import ROOT, TIMBAL, child_env, timbal, write

from runner import JSONLSaver, SQLiteSaver, load_flow
from runner.errors import FlowError
from runner.testing import FakeOpenAIServer, FakeReply

OWNER_ONLY = 0o600


# -- the template sandbox ---------------------------------------------------------------
ESCAPES = [
    "''.__class__.__mro__",
    "''.__class__.__base__.__subclasses__()",
    "inputs.__class__",
    "inputs.x.__class__.__mro__[1].__subclasses__()",
    "cycler.__init__.__globals__",
    "joiner.__init__.__globals__.os",
    "namespace.__init__.__globals__",
    "lipsum.__globals__['os']",
    "self._TemplateReference__context",
    "env.__class__",
    "inputs|attr('__class__')",
    "'{0.__class__}'.format(inputs)",
    "inputs.tags.append(1)",
]


def escape_flow(folder: Path, expression: str) -> Path:
    return write(folder / "escape.yaml", f"""
        version: 1
        name: escape
        inputs:
          x: {{type: string, default: a}}
          tags: {{type: array, default: []}}
        steps:
          - id: a
            type: template
            text: "{{{{ {expression} }}}}"
        """)


@pytest.mark.parametrize("expression", ESCAPES)
def test_templates_cannot_reach_python_internals(tmp_path: Path, expression: str) -> None:
    flow = escape_flow(tmp_path, expression)
    try:
        runnable = load_flow(flow)
    except FlowError as exc:  # found at compile time: a located error
        assert exc.diagnostics[0].location is not None
        assert exc.diagnostics[0].location.line == 9
        return
    result = runnable.run_sync()
    assert result.status == "failed"
    assert "refused by the template sandbox" in result.error or "undefined" in result.error
    assert "<class" not in result.error and "<module" not in result.error


def test_a_sandbox_refusal_exits_1_and_a_compile_time_one_exits_2(tmp_path: Path) -> None:
    at_run = timbal("run", str(escape_flow(tmp_path / "run", "''.__class__.__mro__")), "--json")
    assert at_run.returncode == 1, at_run.stderr
    assert json.loads(at_run.stdout)["status"] == "failed"
    assert "refused by the template sandbox: access to attribute '__class__'" in at_run.stderr
    at_compile = timbal("run", str(escape_flow(tmp_path / "compile", "inputs.__class__")))
    assert at_compile.returncode == 2
    assert "escape.yaml:9:15: error: unknown input '__class__'" in at_compile.stderr
    assert "Traceback" not in at_run.stderr + at_compile.stderr


# -- YAML is plain data ------------------------------------------------------------------
def test_a_python_yaml_tag_is_a_located_error_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    flow = write(tmp_path / "evil.yaml", f"""
        version: 1
        name: evil
        steps:
          - id: a
            type: template
            text: !!python/object/apply:os.system ["touch {marker}"]
        """)
    inputs = write(tmp_path / "inputs.yaml", f"""
        prompt: !!python/object/apply:os.system ["touch {marker}"]
        """)
    saver_flow = write(tmp_path / "saver.yaml", f"""
        version: 1
        steps: [{{id: a, type: template, text: hi}}]
        state_saver: {{type: jsonl, path: !!python/object/apply:os.system ["touch {marker}"]}}
        """)
    plain = write(tmp_path / "plain.yaml", """
        version: 1
        inputs: {prompt: {type: string}}
        steps: [{id: a, type: template, text: "{{ inputs.prompt }}"}]
        """)
    for args in (["validate", str(flow)], ["run", str(flow)],
                 ["run", str(plain), "--inputs", str(inputs)],
                 ["runs", "list", "--saver", str(saver_flow)]):
        proc = timbal(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert "evil.yaml:6:11: error: tag '!!python/object/apply:os.system' is not allowed" in (
        timbal("validate", str(flow)).stderr)
    assert not marker.exists(), "a YAML tag ran a command"


# -- state files are the owner's ---------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    flow = write(tmp_path / "f.yaml", """
        version: 1
        name: f
        steps: [{id: a, model: echo, memory_id: m, prompt: hi}]
        """)
    for uri in (f"jsonl:{tmp_path / 'state.jsonl'}", f"sqlite:{tmp_path / 'state.db'}"):
        proc = subprocess.run(
            [*TIMBAL, "run", str(flow), "--saver", uri],
            env=child_env(), capture_output=True, text=True, timeout=60,
            preexec_fn=lambda: os.umask(0o022),
        )
        assert proc.returncode == 0, proc.stderr
    assert mode(tmp_path / "state.jsonl") == OWNER_ONLY
    assert mode(tmp_path / "state.jsonl.idx") == OWNER_ONLY
    assert mode(tmp_path / "state.db") == OWNER_ONLY
    # A rebuilt index is owner-only too.
    (tmp_path / "state.jsonl.idx").unlink()
    with JSONLSaver(tmp_path / "state.jsonl") as saver:
        assert len(saver.list_runs()) == 1
    assert mode(tmp_path / "state.jsonl.idx") == OWNER_ONLY


def test_sqlite_wal_and_shm_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with SQLiteSaver(tmp_path / "s.db") as saver:
            saver.list_runs()
            extra = [p for p in tmp_path.iterdir() if p.name != "s.db"]
            assert {p.name for p in extra} >= {"s.db-wal", "s.db-shm"}
            assert {p.name: mode(p) for p in extra} == {p.name: OWNER_ONLY for p in extra}
    finally:
        os.umask(old)


# -- secrets -----------------------------------------------------------------------------
PHRASE = "correct-horse-battery-staple"


def assert_nowhere(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text, f"secret found in: {text[:500]}"


def test_secret_env_values_never_reach_state_logs_or_runs_show(tmp_path: Path) -> None:
    write(tmp_path / "boom.py", """
        def fail(x):
            raise ValueError(f"could not use {x}")
        """)
    flow = write(tmp_path / "sec.yaml", """
        version: 1
        name: sec
        secrets: [DB_PHRASE]
        inputs:
          prompt: {type: string}
        steps:
          - id: a
            model: echo
            memory_id: m
            prompt: "{{ inputs.prompt }} {{ env.DB_PHRASE }}"
          - id: b
            type: python
            function: boom:fail
            args: {x: "{{ a.return }}"}
        outputs:
          answer: "{{ a.return }}"
        state_saver: {type: jsonl, path: sec.jsonl}
        """)
    env = child_env(DB_PHRASE=PHRASE)
    proc = timbal("run", str(flow), "-i", f"prompt=say {PHRASE}", env=env)
    assert proc.returncode == 1, proc.stderr
    assert_nowhere(PHRASE, proc.stderr)  # the error line quotes the step's error: redacted
    state = (tmp_path / "sec.jsonl").read_text(encoding="utf-8")
    assert_nowhere(PHRASE, state)
    assert "***" in state
    (run,) = [json.loads(line) for line in state.splitlines() if '"run_started"' in line]
    for args in (["runs", "show", run["run_id"]], ["runs", "show", run["run_id"], "--json"],
                 ["runs", "list"], ["runs", "tree"]):
        shown = timbal(*args, "--saver", f"jsonl:{tmp_path / 'sec.jsonl'}", env=env)
        assert shown.returncode == 0, shown.stderr
        assert_nowhere(PHRASE, shown.stdout, shown.stderr)


def test_api_keys_never_reach_the_state(
    tmp_path: Path, openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_key, param_key = "sk-live-env-0123456789abcdef", "sk-param-fedcba9876543210"
    monkeypatch.setenv("OPENAI_API_KEY", env_key)
    # The provider quotes the key back in its error, as real providers do.
    openai_server.queue("ok", FakeReply.error(401, message=f"Incorrect API key provided: {param_key}"))
    flow = write(tmp_path / "keys.yaml", f"""
        version: 1
        name: keys
        steps:
          - id: with_env_key
            model: openai/fake-model
            memory_id: m
            prompt: "the key is {{{{ env.OPENAI_API_KEY }}}}"
            params: {{api_base: "{openai_server.url}"}}
          - id: with_param_key
            model: openai/fake-model
            prompt: "{{{{ with_env_key.return }}}}"
            params: {{api_base: "{openai_server.url}", api_key: {param_key}}}
            retries: 0
        """)
    db = tmp_path / "keys.db"
    with SQLiteSaver(db) as saver:
        result = load_flow(flow).run_sync(saver=saver)
    assert result.status == "failed"
    headers = [c.headers.get("authorization", "") for c in openai_server.calls]
    assert headers == [f"Bearer {env_key}", f"Bearer {param_key}"], "the keys were used"
    assert_nowhere(env_key, result.error or "")
    assert_nowhere(param_key, result.error or "")
    with SQLiteSaver(db) as saver:
        run = saver.get_run(result.run_id)
        stored: Any = [run.to_dict(), saver.load_memory(result.run_id)]
    dumped = json.dumps(stored)
    assert_nowhere(env_key, dumped, db.read_bytes().decode("utf-8", "replace"))
    assert_nowhere(param_key, dumped, db.read_bytes().decode("utf-8", "replace"))
    assert "Incorrect API key provided: ***" in dumped


# -- paths are the flow file's -------------------------------------------------------------
def test_subflows_modules_and_state_resolve_next_to_the_flow_not_the_cwd(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project" / "flows", tmp_path / "elsewhere"
    marker = tmp_path / "decoy-ran"
    write(project / "helpers.py", """
        def shout(text):
            return text.upper()
        """)
    write(project / "child.yaml", """
        version: 1
        name: child
        inputs: {text: {type: string}}
        steps: [{id: c, type: template, text: "child saw {{ inputs.text }}"}]
        """)
    write(project / "prompt.txt", "template file says {{ inputs.text }}")
    flow = write(project / "main.yaml", """
        version: 1
        name: main
        inputs: {text: {type: string}}
        steps:
          - {id: loud, type: python, function: helpers:shout, args: {text: "{{ inputs.text }}"}}
          - {id: sub, type: flow, flow: child.yaml, inputs: {text: "{{ loud.return }}"}}
          - {id: filed, type: template, file: prompt.txt}
        outputs:
          loud: "{{ loud.return }}"
          sub: "{{ sub.return }}"
          filed: "{{ filed.return }}"
        state_saver: {type: jsonl, path: state.jsonl}
        """)
    # Decoys in the working directory: used if paths were resolved against the cwd.
    write(elsewhere / "helpers.py", f"""
        open({str(marker)!r}, "w").close()
        def shout(text):
            return "decoy"
        """)
    write(elsewhere / "child.yaml", """
        version: 1
        name: decoy
        inputs: {text: {type: string}}
        steps: [{id: c, type: template, text: decoy}]
        """)
    write(elsewhere / "prompt.txt", "decoy")
    proc = timbal("run", os.path.relpath(flow, elsewhere), "-i", "text=hi", "--json",
                  cwd=elsewhere, env=child_env(PYTHONPATH=f"{ROOT}{os.pathsep}{elsewhere}"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {
        "loud": "HI", "sub": {"c": "child saw HI"}, "filed": "template file says hi"}
    assert not marker.exists(), "a module from the working directory was imported"
    assert (project / "state.jsonl").exists() and not (elsewhere / "state.jsonl").exists()


def test_validate_and_graph_never_import_a_flows_python_modules(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    write(tmp_path / "mod.py", f"""
        open({str(marker)!r}, "w").close()
        def f():
            return 1
        """)
    flow = write(tmp_path / "v.yaml", """
        version: 1
        steps:
          - {id: a, type: python, function: mod:f}
          - {id: b, type: agent, model: echo, prompt: hi, tools: [{python: mod:f}]}
        """)
    for command in ("validate", "graph"):
        proc = timbal(command, str(flow))
        assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), "checking a flow ran its code"
