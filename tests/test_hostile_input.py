"""Hostile input at the command line (SPEC §4): broken flow files and random `-i` values
end in one of our own errors (a located FlowError or an InputError) with exit 2, never a
traceback, a crash or a hang.

tests/test_fuzz_compiler.py fuzzes `load`/`compile` on data; here the flow files are
mutated as text (lines deleted or duplicated, characters swapped, indentation changed)
and fed to `timbal validate` / `timbal run`, and `-i` values are random text for typed
inputs. The CLI runs in-process through click for the many hypothesis examples, and as
real subprocesses (each with a timeout) for the cases that once crashed the process.
TIMBAL_FUZZ_EXAMPLES raises the number of examples (default 60 here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testkit import ROOT, TIMBAL, child_env

from runner.cli import main
from runner.compiler import compile_document
from runner.errors import FlowError
from runner.loader import load_text

FLOWS = ROOT / "flows"
EXAMPLES = sorted(p.name for p in FLOWS.glob("*.yaml") if p.name != "local_model.yaml")
FUZZ = settings(
    max_examples=int(os.environ.get("TIMBAL_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TYPED_FLOW = """\
version: 1
name: typed
inputs:
  text: {type: string, minLength: 1}
  count: {type: integer, default: 1}
  ratio: {type: number, default: 0.5}
  loud: {type: boolean, default: false}
  tags: {type: array, default: []}
  opts: {type: object, default: {}}
  tone: {type: string, enum: [friendly, formal], default: friendly}
steps:
  - id: show
    type: template
    text: "{{ inputs.text }} {{ inputs.count + 1 }} {{ inputs.ratio * 2 }} {{ inputs.loud }}
      {{ inputs.tags | length }} {{ inputs.opts | length }} {{ inputs.tone }}"
"""
INPUT_NAMES = ["text", "count", "ratio", "loud", "tags", "opts", "tone"]


@pytest.fixture(scope="module")
def flows_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example flows (with their sub-flows and python modules) in a scratch folder."""
    folder = tmp_path_factory.mktemp("flows") / "flows"
    shutil.copytree(FLOWS, folder)
    (folder / "typed.yaml").write_text(TYPED_FLOW, encoding="utf-8")
    return folder


def cli(*args: str) -> Any:
    """`timbal ARGS` through click, in this process (stdin empty, not a terminal)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def assert_own_error(result: Any, allowed: tuple[int, ...] = (0, 2)) -> None:
    """Exit 0 or 2; on 2, our own error lines; never an exception escaping or a traceback."""
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"an exception escaped: {result.exception!r}\n{output}")
    assert result.exit_code in allowed, (result.exit_code, output)
    assert "Traceback" not in output
    if result.exit_code == 2:
        assert "error" in output.lower(), output


# -- flow files mutated as text -----------------------------------------------------------
@st.composite
def mutated_text(draw: st.DrawFn) -> tuple[str, str]:
    """(example name, its text after 1-4 random edits of lines and characters)."""
    name = draw(st.sampled_from(EXAMPLES))
    lines = (FLOWS / name).read_text(encoding="utf-8").splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "insert"]))
        line = lines[i]
        if edit == "delete":
            del lines[i]
        elif edit == "duplicate":
            lines.insert(i, line)
        elif edit == "swap" and len(line) > 2:
            j = draw(st.integers(0, len(line) - 2))
            lines[i] = line[:j] + line[j + 1] + line[j] + line[j + 2:]
        elif edit == "indent":
            lines[i] = " " * draw(st.integers(1, 5)) + line
        elif edit == "dedent":
            lines[i] = line.lstrip(" ")
        else:
            j = draw(st.integers(0, len(line)))
            char = draw(st.sampled_from(["\t", ":", "-", "{", "}", "[", "]", "'", '"', "&a", "*a",
                                         "!", "|", ">", "#", "%", "\u00e9", "\u202e", "\x00"])
                        | st.characters())
            lines[i] = line[:j] + char + line[j:]
    return name, "".join(lines)


@FUZZ
@given(mutated_text())
def test_mutated_flow_text_compiles_or_raises_flow_error(case: tuple[str, str]) -> None:
    _, text = case
    try:
        compile_document(load_text(text, str(FLOWS / "fuzz.yaml")))
    except FlowError as exc:
        assert exc.diagnostics
        exc.format()


@FUZZ
@given(mutated_text())
def test_timbal_validate_of_a_mutated_flow_exits_0_or_2(flows_copy: Path, case: tuple[str, str]) -> None:
    name, text = case
    path = flows_copy / f"fuzz-{name}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = cli("validate", str(path))
    assert_own_error(result)
    if result.exit_code == 2:
        assert f"fuzz-{name}" in result.output, "errors name the file"


# -- -i values ----------------------------------------------------------------------------
values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "0", "-1", "1e400", "nan", "-inf", "1_000", "0x1f", "true", "NO",
                     "null", "[]", "{}", "[1,", "{\"a\":", "[NaN]", "{\"a\": Infinity}", "\"x\"",
                     "9" * 400, "\udcff", "a\x00b", "\u202e", "formal", "friendly"]),
    st.from_regex(r"[\[\]{}\",:0-9a-z .eE+-]{0,20}", fullmatch=True),
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(INPUT_NAMES) | st.text(max_size=8), values),
                min_size=1, max_size=4))
def test_random_input_values_run_or_exit_2(flows_copy: Path, pairs: list[tuple[str, str]]) -> None:
    args = ["run", str(flows_copy / "typed.yaml"), "-i", "text=hi"]
    for name, value in pairs:
        args += ["-i", f"{name}={value}"]
    result = cli(*args)
    assert_own_error(result)
    if result.exit_code == 2:
        assert "input" in result.output or "-i" in result.output, result.output


@FUZZ
@given(st.text(max_size=40))
def test_a_malformed_assignment_exits_2(flows_copy: Path, text: str) -> None:
    result = cli("run", str(flows_copy / "typed.yaml"), "-i", text.replace("=", ""))
    assert_own_error(result, allowed=(2,))


# -- real processes: the inputs that once crashed or escaped ------------------------------
def hostile_cases(folder: Path) -> dict[str, list[str | bytes]]:
    """name -> arguments of `timbal`; every one must exit 2 with our own error."""
    files = {
        "flow_brackets_100k_deep.yaml": "steps: " + "[" * 100_000 + "]" * 100_000,
        "block_sequences_50k_deep.yaml": "steps:\n  " + "- " * 50_000 + "x\n",
        "template_3000_parens.yaml": "version: 1\nsteps:\n  - id: a\n    type: template\n"
        f"    text: \"{{{{ {'(' * 3000}1{')' * 3000} }}}}\"\n",
        "nul_byte.yaml": "version: 1\nsteps: [\x00]\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "random_bytes.yaml").write_bytes(bytes(range(256)) * 8)
    typed = str(folder / "typed.yaml")
    cases: dict[str, list[str | bytes]] = {
        name: ["validate", str(folder / name)] for name in [*files, "random_bytes.yaml"]}
    cases["alias_bomb"] = ["validate", str(ROOT / "tests" / "broken" / "alias_bomb.yaml")]
    cases["input_not_utf8"] = ["run", typed, "-i", b"text=\xff\xfe"]
    cases["input_nan"] = ["run", typed, "-i", "text=hi", "-i", "ratio=nan"]
    cases["input_infinite_json"] = ["run", typed, "-i", "text=hi", "-i", "tags=[1e999]"]
    return cases


def test_hostile_files_and_values_exit_2_in_a_real_process(flows_copy: Path) -> None:
    procs = {
        name: subprocess.Popen([*TIMBAL, *args], cwd=flows_copy,
                               env=child_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, args in hostile_cases(flows_copy).items()
    }
    failures = []
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            failures.append(f"{name}: hung")
            continue
        text = err.decode("utf-8", "replace")
        if proc.returncode != 2 or "Traceback" in text or "error" not in text:
            failures.append(f"{name}: exit {proc.returncode}: {text[:300]}")
    assert not failures, "\n".join(failures)
