"""What only our httpx client of the OpenAI protocol promises (its behaviour shared with
litellm is tested over both clients in test_models_litellm.py): it serves ``openai/…``
models unless told otherwise, reads prices without litellm, and a run on it never imports
litellm."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from testkit import PYTHON, child_env, write

from runner.errors import ProviderError
from runner.models import OPENAI_CLIENT_VAR, ModelRequest, backend_for
from runner.models.openai_http import complete as native_complete
from runner.models.prices import call_cost, model_prices, price_table_path
from runner.testing import FakeOpenAIServer


def test_openai_models_use_the_native_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPENAI_CLIENT_VAR, raising=False)
    assert backend_for("openai/gpt-4o-mini") is native_complete


def test_the_variable_sends_openai_models_to_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPENAI_CLIENT_VAR, "litellm")
    assert backend_for("openai/gpt-4o-mini") is not native_complete
    assert backend_for("openai/gpt-4o-mini").__module__ == "runner.models.litellm_adapter"


def test_other_providers_stay_on_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPENAI_CLIENT_VAR, raising=False)
    assert backend_for("anthropic/claude-3-haiku-20240307").__module__ == (
        "runner.models.litellm_adapter"
    )


def test_price_table_is_litellms_own_file() -> None:
    path = price_table_path()
    assert path is not None and path.name == "model_prices_and_context_window_backup.json"
    table = json.loads(path.read_text(encoding="utf-8"))
    assert model_prices("gpt-4o-mini") == table["gpt-4o-mini"]
    assert model_prices("no-such-model-anywhere") is None


def test_prices_match_litellm_for_known_models() -> None:
    import litellm
    from litellm.types.utils import Usage

    for name in ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo", "o3-mini"):
        usage = {"prompt_tokens": 1234, "completion_tokens": 321, "total_tokens": 1555}
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=name, custom_llm_provider="openai", usage_object=Usage(**usage)
        )
        assert call_cost(f"openai/{name}", usage) == pytest.approx(
            prompt_cost + completion_cost, rel=1e-9
        ), name


def test_unknown_models_have_no_price() -> None:
    assert call_cost("openai/fake-model", {"prompt_tokens": 5, "completion_tokens": 5}) is None


def test_a_run_on_the_native_client_never_imports_litellm(tmp_path: Path) -> None:
    flow = write(tmp_path / "one.yaml", """
        version: 1
        name: one
        inputs: {prompt: {type: string}}
        steps:
          - {id: answer, model: openai/gpt-4o-mini, prompt: "{{ inputs.prompt }}"}
        """)
    with FakeOpenAIServer() as server:
        env = child_env(OPENAI_API_BASE=server.url, PYTHONPROFILEIMPORTTIME="1")
        env.pop(OPENAI_CLIENT_VAR, None)
        proc = subprocess.run(
            [PYTHON, "-m", "runner.cli", "run", str(flow), "-i", "prompt=hi", "--json"],
            capture_output=True, text=True, env=env, timeout=60,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["outputs"] == {"answer": "reply to: hi"}
    assert result["usage"]["cost"] > 0
    imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "httpx" in imported
    # Nor what a non-interactive run never uses: httpx's CLI (rich, pygments), HTTP/2 (h2).
    unused = ("litellm", "openai", "rich", "pygments", "h2")
    assert not [name for name in imported if name.split(".")[0] in unused]


def test_importing_the_client_does_not_import_httpx() -> None:
    code = "import sys, runner.models.openai_http; print('httpx' in sys.modules)"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True,
                         env=child_env())
    assert out.stdout.strip() == "False"


# -- streams that end early, from a server that closes the connection cleanly ---------------

# What the server streams, by the user message: SSE `data:` payloads, then it closes.
STREAMS = {
    "truncated": ["one ", "two "],  # no finish reason, no [DONE]: the reply is not complete
    "finished": ["one ", "two ", None],  # a finish reason and no [DONE]: complete
    "error": ["one ", {"error": {"message": "the model is overloaded"}}],
}


class _StreamHandler(BaseHTTPRequestHandler):
    """HTTP/1.0: the body ends when the server closes the connection, as a proxy may."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in STREAMS[body["messages"][-1]["content"]]:
            if isinstance(piece, dict):
                event = piece
            else:
                delta = {"content": piece} if piece else {}
                finish = None if piece else "stop"
                event = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def closing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StreamHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _streamed(api_base: str, prompt: str) -> tuple[str, list[str]]:
    request = ModelRequest("openai/any", [{"role": "user", "content": prompt}],
                           params={"api_base": api_base}, retries=0, stream=True)
    chunks: list[str] = []
    reply = asyncio.run(native_complete(request, chunks.append))
    return reply.text, chunks


def test_a_stream_closed_before_its_end_is_a_retryable_error(closing_server: str) -> None:
    with pytest.raises(ProviderError) as info:
        _streamed(closing_server, "truncated")
    assert info.value.retryable
    assert str(info.value) == (f"openai/any: the connection to {closing_server} closed "
                               "before the reply was complete")


def test_a_stream_with_a_finish_reason_needs_no_done_marker(closing_server: str) -> None:
    assert _streamed(closing_server, "finished") == ("one two ", ["one ", "two "])


def test_an_error_event_in_a_stream_is_a_retryable_error(closing_server: str) -> None:
    with pytest.raises(ProviderError) as info:
        _streamed(closing_server, "error")
    assert info.value.retryable and "the model is overloaded" in str(info.value)
