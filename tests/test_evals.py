"""`timbal test` (SPEC §9): cases, every kind of check, parent turns, filters, JUnit, exit codes."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from testkit import FAKE_API_KEY, ROOT, LiveProcess, edit, timbal, write

FLOWS = ROOT / "flows"

ECHO_FLOW = """
    # yaml-language-server: $schema=../schemas/flow.schema.json
    version: 1
    name: greeter
    inputs:
      name: {type: string}
    defaults: {model: echo}
    steps:
      - id: greet
        memory_id: chat
        prompt: "Hello {{ inputs.name }}"
    outputs:
      reply: "{{ greet.return }}"
"""


def _flow_with_tests(tmp_path: Path, tests: str, flow: str = ECHO_FLOW) -> Path:
    """`flow` with `tests` (a YAML list) as its tests: block, written to tmp_path/flow.yaml."""
    text = textwrap.dedent(flow).strip("\n") + "\ntests:\n" + textwrap.indent(textwrap.dedent(tests).strip("\n"), "  ")
    path = tmp_path / "flow.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _json(proc) -> dict:
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


# ------------------------------------------------------------------ the gallery example


def test_the_gallery_example_passes_every_check(tmp_path):
    proc = timbal("test", FLOWS / "support_tests.yaml", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = _json(proc)
    assert report["passed"] is True
    assert report["summary"]["cases"] == 3
    kinds = {c["check"] for case in report["cases"] for c in case["checks"]}
    assert kinds == {"equals", "contains", "not_contains", "matches", "json_schema", "python", "judge",
                     "max_tokens", "max_cost", "max_seconds"}


def test_a_folder_runs_every_flow_with_tests_and_writes_junit(tmp_path):
    report = tmp_path / "report.xml"
    proc = timbal("test", "flows/", "--junit", report)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from junitparser import JUnitXml

    xml = JUnitXml.fromfile(str(report))
    suites = {suite.name: suite for suite in xml}
    assert "support-tests" in suites
    assert suites["support-tests"].tests == 3
    assert xml.failures == 0 and xml.errors == 0


def test_the_cases_file_example_runs(tmp_path):
    proc = timbal("test", "flows/support_tests.yaml", "--cases", "flows/cases/support.cases.yaml", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [c["name"] for c in _json(proc)["cases"]] == ["repeats the question"]


# ------------------------------------------------------------------ every check fails when it should


@pytest.mark.parametrize(
    ("check", "reason"),
    [
        ('equals: "Hello Bob"', "not equal"),
        ("contains: Alice", "'Alice' not found"),
        ("not_contains: Bob", "'Bob' found"),
        ('matches: "^Hello"', "no match"),
        ("json_schema: {type: object}", "is not of type 'object'"),
        ("judge: \"greets 'Alice'\"", "does not contain 'Alice'"),
        ("python: checks:never", "the reply is not good enough"),
        ("max_tokens: 2", "tokens > 2"),
    ],
)
def test_a_failing_check_exits_1_and_shows_the_value_and_the_reason(tmp_path, check, reason):
    write(tmp_path / "checks.py", """
        def never(output):
            return "the reply is not good enough"
    """)
    flow = _flow_with_tests(tmp_path, f"""
        - name: greets Bob
          inputs: {{name: Bob}}
          assert:
            - {check}
    """)
    proc = timbal("test", flow, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (case,) = _json(proc)["cases"]
    (result,) = case["checks"]
    assert case["status"] == "failed" and result["passed"] is False
    assert reason in result["reason"]
    if check.startswith("max_tokens"):
        assert isinstance(result["actual"], int) and result["actual"] > 2  # the count it saw
    else:
        assert result["actual"] == "echo (1 message): Hello Bob"  # the value it saw
    table = timbal("test", flow)
    assert table.returncode == 1
    assert "FAIL" in table.stdout and "got " in table.stdout, table.stdout


def test_max_seconds_fails_a_slow_run(tmp_path):
    flow = _flow_with_tests(tmp_path, """
        - name: slow
          inputs: {name: Bob}
          assert:
            - max_seconds: 0.05
    """, ECHO_FLOW.replace("prompt:", "params: {delay: 0.3}\n        prompt:"))
    proc = timbal("test", flow, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (check,) = _json(proc)["cases"][0]["checks"]
    assert check["actual"] >= 0.3 and "> 0.05s" in check["reason"]


def test_max_cost_reads_the_cost_the_provider_reports(tmp_path, openai_server):
    # gpt-4o-mini is in litellm's (local) price list, so the run has a real cost.
    flow_text = f"""
        version: 1
        name: priced
        inputs: {{name: {{type: string}}}}
        defaults: {{model: openai/gpt-4o-mini, retries: 0,
                    params: {{api_base: "{openai_server.url}", api_key: {FAKE_API_KEY}}}}}
        steps:
          - id: greet
            prompt: "Hello {{{{ inputs.name }}}}"
    """
    openai_server.queue("Hi Bob, nice to meet you", "Hi Bob, nice to meet you")
    flow = _flow_with_tests(tmp_path, """
        - name: cheap enough
          inputs: {name: Bob}
          assert:
            - max_cost: 1.0
        - name: too dear
          inputs: {name: Bob}
          assert:
            - max_cost: 0
    """, flow_text)
    proc = timbal("test", flow, "--json", "--concurrency", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cases = {c["name"]: c for c in _json(proc)["cases"]}
    assert cases["cheap enough"]["status"] == "passed"
    (dear,) = cases["too dear"]["checks"]
    assert dear["passed"] is False and dear["actual"] > 0


def test_a_python_check_gets_the_context_when_it_asks_for_it(tmp_path):
    write(tmp_path / "checks.py", """
        def same_name(output, context):
            return context["inputs"]["name"] in output and context["case"] == "ctx" and bool(context["run_id"])
    """)
    flow = _flow_with_tests(tmp_path, """
        - name: ctx
          inputs: {name: Zoe}
          assert:
            - python: checks:same_name
    """)
    proc = timbal("test", flow, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_failed_run_is_an_error_with_the_runs_error(tmp_path):
    write(tmp_path / "boom.py", """
        def explode(text):
            raise RuntimeError("kaboom " + text)
    """)
    flow_text = """
        version: 1
        name: boom
        inputs: {name: {type: string}}
        steps:
          - id: blow
            type: python
            function: boom:explode
            args: {text: "{{ inputs.name }}"}
    """
    flow = _flow_with_tests(tmp_path, """
        - name: explodes
          inputs: {name: Bob}
          assert:
            - contains: Bob
    """, flow_text)
    proc = timbal("test", flow, "--json")
    assert proc.returncode == 1
    (case,) = _json(proc)["cases"]
    assert case["status"] == "error" and "kaboom Bob" in case["error"]


# ------------------------------------------------------------------ conversations, filters, concurrency


def test_parent_turns_run_first_as_one_conversation_of_that_case_only(tmp_path):
    flow = _flow_with_tests(tmp_path, """
        - name: third turn
          parent: [{name: Ann}, {name: Ben}]
          inputs: {name: Cid}
          assert:
            - equals: "echo (5 messages): Hello Cid"
        - name: first turn
          inputs: {name: Dan}
          assert:
            - equals: "echo (1 message): Hello Dan"
    """)
    proc = timbal("test", flow, "--json", "--concurrency", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_filter_runs_only_the_matching_cases(tmp_path):
    flow = _flow_with_tests(tmp_path, """
        - name: alpha case
          inputs: {name: A}
          assert: [{contains: A}]
        - name: beta case
          inputs: {name: B}
          assert: [{contains: nope}]
    """)
    proc = timbal("test", flow, "--filter", "ALPHA", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [c["name"] for c in _json(proc)["cases"]] == ["alpha case"]
    assert timbal("test", flow, "--filter", "zzz").returncode == 2


def test_cases_run_at_the_same_time_up_to_the_concurrency(tmp_path):
    write(tmp_path / "clock.py", """
        import time

        def hold(name):
            started = time.time()
            time.sleep(0.3)
            return {"name": name, "started": started, "ended": time.time()}
    """)
    flow_text = """
        version: 1
        name: clock
        inputs: {name: {type: string}}
        steps:
          - id: hold
            type: python
            function: clock:hold
            args: {name: "{{ inputs.name }}"}
    """
    flow = _flow_with_tests(tmp_path, "\n".join(
        f"- {{name: c{i}, inputs: {{name: c{i}}}, assert: [{{json_schema: {{type: object}}}}]}}" for i in range(4)),
        flow_text)
    proc = timbal("test", flow, "--json", "--concurrency", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = [c["outputs"]["hold"] for c in _json(proc)["cases"]]
    assert max(s["started"] for s in spans) < min(s["ended"] for s in spans)  # all four overlapped
    proc = timbal("test", flow, "--json", "--concurrency", "1")
    spans = sorted((c["outputs"]["hold"] for c in _json(proc)["cases"]), key=lambda s: s["started"])
    assert all(a["ended"] <= b["started"] for a, b in zip(spans, spans[1:], strict=False))  # one after another


# ------------------------------------------------------------------ JUnit


def test_junit_xml_names_the_failed_check_and_the_errored_run(tmp_path):
    from junitparser import Error, Failure, JUnitXml

    write(tmp_path / "boom.py", """
        def explode(name):
            if name == "X":
                raise RuntimeError("no X allowed")
            return "ok " + name
    """)
    flow_text = """
        version: 1
        name: junit-demo
        inputs: {name: {type: string}}
        steps:
          - id: call
            type: python
            function: boom:explode
            args: {name: "{{ inputs.name }}"}
    """
    flow = _flow_with_tests(tmp_path, """
        - name: passes
          inputs: {name: A}
          assert: [{equals: ok A}]
        - name: fails <&> "quoted"
          inputs: {name: B}
          assert: [{contains: "zzz"}]
        - name: errors
          inputs: {name: X}
          assert: [{contains: ok}]
    """, flow_text)
    report = tmp_path / "out" / "report.xml"
    proc = timbal("test", flow, "--junit", report)
    assert proc.returncode == 1
    xml = JUnitXml.fromfile(str(report))
    (suite,) = list(xml)
    assert (suite.name, suite.tests, suite.failures, suite.errors) == ("junit-demo", 3, 1, 1)
    by_name = {case.name: case for case in suite}
    assert by_name["passes"].is_passed
    (failure,) = by_name['fails <&> "quoted"'].result
    assert isinstance(failure, Failure) and "contains" in failure.message and "zzz" in failure.message
    (error,) = by_name["errors"].result
    assert isinstance(error, Error) and "no X allowed" in error.message
    assert all(case.classname == "junit-demo" for case in suite)


# ------------------------------------------------------------------ invalid cases: exit 2, located


def test_an_unknown_key_in_a_case_is_a_located_error_with_a_suggestion(tmp_path):
    flow = _flow_with_tests(tmp_path, """
        - name: typo
          inputs: {name: A}
          assert:
            - contians: A
    """)
    proc = timbal("test", flow)
    assert proc.returncode == 2
    assert re.search(r"flow\.yaml:\d+:\d+: error: .*contians", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert timbal("validate", flow).returncode == 2  # the schema knows tests: too


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("{name: a, inputs: {nam: A}, assert: [{contains: A}]}", "unknown input 'nam' (did you mean 'name'?)"),
        ("{name: a, inputs: {name: A}, assert: [{output: repl, contains: A}]}",
         "unknown output 'repl' (did you mean 'reply'?)"),
        ("{name: a, inputs: {name: A}, assert: [{matches: '(unclosed'}]}", "invalid regular expression"),
        ("{name: a, inputs: {name: A}, assert: [{contains: A, equals: B}]}", "exactly one of"),
        ("{name: a, inputs: {name: A}, assert: [{python: nowhere:fn}]}", "python check 'nowhere:fn'"),
        ("{name: a, inputs: {name: A}, assert: [{max_tokens: 3, model: echo}]}", "'model' belongs to a judge"),
    ],
)
def test_a_case_that_cannot_run_exits_2_before_anything_runs(tmp_path, case, message):
    flow = _flow_with_tests(tmp_path, f"- {case}\n")
    proc = timbal("test", flow)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert re.search(r"flow\.yaml:\d+:\d+: error:", proc.stderr), proc.stderr


def test_cases_files_in_yaml_and_jsonl_run_and_their_errors_are_located(tmp_path):
    flow = write(tmp_path / "flow.yaml", ECHO_FLOW)
    yaml_cases = write(tmp_path / "cases.yaml", """
        - name: from yaml
          inputs: {name: Yan}
          assert: [{contains: Yan}]
    """)
    jsonl_cases = tmp_path / "cases.jsonl"
    jsonl_cases.write_text(
        json.dumps({"name": "from jsonl", "inputs": {"name": "Jo"}, "assert": [{"contains": "Jo"}]}) + "\n\n"
        + json.dumps({"name": "second", "inputs": {"name": "Al"}, "assert": [{"equals": "echo (1 message): Hello Al"}]})
        + "\n")
    for cases, names in ((yaml_cases, ["from yaml"]), (jsonl_cases, ["from jsonl", "second"])):
        proc = timbal("test", flow, "--cases", cases, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [c["name"] for c in _json(proc)["cases"]] == names
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"name": "ok", "inputs": {"name": "A"}}\n{"name": "broken",\n')
    proc = timbal("test", flow, "--cases", bad_jsonl)
    assert proc.returncode == 2 and "bad.jsonl:2:" in proc.stderr, proc.stderr
    bad_yaml = write(tmp_path / "bad.yaml", """
        - name: one
          inputs: {name: A}
          asert: [{contains: A}]
    """)
    proc = timbal("test", flow, "--cases", bad_yaml)
    assert proc.returncode == 2
    assert "bad.yaml:3:3: error: unknown key 'asert' (did you mean 'assert'?)" in proc.stderr, proc.stderr
    dup = write(tmp_path / "dup.yaml", """
        - {name: same, inputs: {name: A}}
        - {name: same, inputs: {name: B}}
    """)
    proc = timbal("test", flow, "--cases", dup)
    assert proc.returncode == 2 and "two cases are named 'same'" in proc.stderr


def test_an_invalid_flow_exits_2(tmp_path):
    flow = write(tmp_path / "flow.yaml", ECHO_FLOW.replace("inputs.name", "inputs.nmae") + """
    tests:
      - {name: a, inputs: {name: A}}
    """)
    proc = timbal("test", flow)
    assert proc.returncode == 2 and "nmae" in proc.stderr


# ------------------------------------------------------------------ judge on a real provider


def test_judge_on_an_openai_compatible_server_uses_its_verdict_and_reason(tmp_path, openai_server):
    flow = _flow_with_tests(tmp_path, """
        - name: judged
          inputs: {name: Bob}
          assert:
            - judge: "The reply is polite"
              model: openai/fake-judge
            - judge: "The reply is short"
              model: openai/fake-judge
    """)
    openai_server.queue('{"pass": false, "reason": "it is rude"}', "PASS: it is short enough")
    env_extra = {"OPENAI_API_BASE": openai_server.url, "OPENAI_API_KEY": FAKE_API_KEY}
    from testkit import child_env

    proc = timbal("test", flow, "--json", "--concurrency", "1", env=child_env(**env_extra))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    polite, short = _json(proc)["cases"][0]["checks"]
    assert (polite["passed"], polite["reason"]) == (False, "it is rude")
    assert (short["passed"], short["reason"]) == (True, "it is short enough")
    asked = openai_server.requests[0]
    question = json.loads(asked["messages"][-1]["content"])
    assert question == {"task": "grade", "criterion": "The reply is polite", "output": "echo (1 message): Hello Bob"}
    assert asked["response_format"] == {"type": "json_object"}


def test_a_judge_without_a_model_uses_the_flows_own(tmp_path):
    flow = _flow_with_tests(tmp_path, """
        - name: judged
          inputs: {name: Bob}
          assert: [{judge: "greets 'Bob'"}]
    """, ECHO_FLOW.replace("defaults: {model: echo}", "").replace("prompt:", "model: echo\n        prompt:"))
    proc = timbal("test", flow, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (check,) = _json(proc)["cases"][0]["checks"]
    assert check["passed"] is True and "quoted phrase" in check["reason"]
    no_model = _flow_with_tests(tmp_path, """
        - name: judged
          assert: [{judge: "says hi"}]
    """, """
        version: 1
        steps:
          - {id: hi, type: template, text: "hi"}
    """)
    proc = timbal("test", no_model)
    assert proc.returncode == 2 and "a judge needs a model" in proc.stderr, proc.stderr


@pytest.mark.local_model
def test_judge_on_the_local_model_gives_a_verdict(tmp_path):
    flow = _flow_with_tests(tmp_path, """
        - name: judged locally
          inputs: {name: Bob}
          assert:
            - judge: "The reply greets someone"
              model: local/smollm2
    """)
    proc = timbal("test", flow, "--json", timeout=600)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    (check,) = _json(proc)["cases"][0]["checks"]
    # The verdict's JSON Schema becomes a llama.cpp grammar: even the 135M model answers with one.
    assert isinstance(check["passed"], bool) and "no verdict" not in check["reason"]


# ------------------------------------------------------------------ --watch


def test_watch_runs_again_on_change_and_reuses_unchanged_steps(tmp_path):
    flow_text = """
        version: 1
        name: two-steps
        inputs: {name: {type: string}}
        defaults: {model: echo}
        steps:
          - id: first
            prompt: "First {{ inputs.name }}"
          - id: second
            prompt: "Second {{ first.return }}"
        outputs: {reply: "{{ second.return }}"}
    """
    flow = _flow_with_tests(tmp_path, """
        - name: ok
          inputs: {name: Bob}
          assert: [{contains: Bob}]
    """, flow_text)
    live = LiveProcess("test", str(flow), "--watch", cwd=tmp_path)
    try:
        live.stderr_until(r"watching .* round 1")
        assert "1 case: 1 passed" in _read_until(live, r"\d+ cases?: ")
        edit(flow, "Second {{ first.return }}", "Second: {{ first.return }}")
        live.stderr_until(r"change detected: .*flow\.yaml — round 2")
        assert "1 case: 1 passed" in _read_until(live, r"\d+ cases?: ")
        assert "reused 1 unchanged step" in live.stderr_until(r"reused \d+ unchanged")
        edit(flow, "contains: Bob", "contains: Nobody")
        live.stderr_until(r"round 3")
        assert "1 failed" in _read_until(live, r"\d+ cases?: ")
        edit(flow, "steps:", "stepz:")  # broken: errors shown, the watcher goes on
        live.stderr_until(r"keeping the last good flows")
        assert live.interrupt() == 130
    finally:
        live.close()


def _read_until(live: LiveProcess, pattern: str) -> str:
    while True:
        line = live.line()
        if re.search(pattern, line):
            return line


def test_no_test_cases_is_an_error(tmp_path):
    shutil.copy(FLOWS / "quickstart.yaml", tmp_path / "quickstart.yaml")
    proc = timbal("test", tmp_path)
    assert proc.returncode == 2 and "no test cases" in proc.stderr


def test_a_terminal_shows_a_progress_bar_of_cases(tmp_path):
    from testkit import timbal_at_a_terminal

    flow = _flow_with_tests(tmp_path, "\n".join(
        f"- {{name: c{i}, inputs: {{name: c{i}}}, assert: [{{contains: c{i}}}]}}" for i in range(3)),
        ECHO_FLOW.replace("prompt:", "params: {delay: 0.4}\n        prompt:"))
    code, out, screen = timbal_at_a_terminal("test", flow, "--concurrency", "1", cwd=tmp_path)
    assert code == 0 and "3 cases: 3 passed" in out
    assert "cases" in screen and re.search(r"[0-3]/3", screen) and "0 failed" in screen, screen
