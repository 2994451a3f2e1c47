"""`local/smollm2` and `local/PATH.gguf`: a real model in-process through llama-cpp-python.

Skipped when llama-cpp-python is not installed, except under CI (CI=true), where it must run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import ProviderError
from runner.models import ModelReply, ModelRequest, complete

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(
    not HAVE_LLAMA and os.environ.get("CI") != "true",
    reason="llama-cpp-python is not installed (pip install -e '.[local]')",
)
PARAMS = {"max_tokens": 16, "seed": 42, "temperature": 0.0}
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def run(request: ModelRequest, stream: bool = False) -> tuple[ModelReply, list[str]]:
    chunks: list[str] = []
    reply = asyncio.run(complete(request, chunks.append if stream else None))
    return reply, chunks


@pytest.mark.local_model
@needs_llama
def test_smollm2_answers() -> None:
    reply, _ = run(ModelRequest("local/smollm2", MESSAGES, params=PARAMS))
    assert reply.text.strip()
    assert reply.message == {"role": "assistant", "content": reply.text}
    assert reply.model == "local/smollm2"
    usage = reply.usage
    assert usage["prompt_tokens"] > 5
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.local_model
@needs_llama
def test_smollm2_streams_and_is_deterministic_with_a_seed() -> None:
    plain, _ = run(ModelRequest("local/smollm2", MESSAGES, params=PARAMS))
    streamed, chunks = run(ModelRequest("local/smollm2", MESSAGES, params=PARAMS), stream=True)
    assert len(chunks) > 1
    assert "".join(chunks) == streamed.text
    assert streamed.text == plain.text


@pytest.mark.local_model
@needs_llama
def test_the_model_is_loaded_once_per_process() -> None:
    from runner.models import local

    run(ModelRequest("local/smollm2", MESSAGES, params={"max_tokens": 2}))
    llama = local.load_model(local.smollm2_path())
    run(ModelRequest("local/smollm2", MESSAGES, params={"max_tokens": 2}))
    assert local.load_model(local.smollm2_path()) is llama


@pytest.mark.local_model
@needs_llama
def test_concurrent_calls_are_serialized() -> None:
    async def both() -> list[ModelReply]:
        calls = [complete(ModelRequest("local/smollm2", MESSAGES, params=PARAMS)) for _ in range(2)]
        return await asyncio.gather(*calls)

    first, second = asyncio.run(both())
    assert first.text == second.text


@pytest.mark.local_model
@needs_llama
def test_a_gguf_path_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.models.local import smollm2_path

    (tmp_path / "model.gguf").symlink_to(smollm2_path())
    monkeypatch.chdir(tmp_path)
    reply, _ = run(ModelRequest("local/model.gguf", MESSAGES, params={"max_tokens": 4, "seed": 1}))
    assert reply.text.strip()


@pytest.mark.local_model
@needs_llama
def test_loading_running_and_exiting_print_nothing_on_stderr() -> None:
    code = (
        "import asyncio\n"
        "from runner.models import ModelRequest, complete\n"
        "request = ModelRequest('local/smollm2', [{'role': 'user', 'content': 'Hi'}],\n"
        "                       params={'max_tokens': 2})\n"
        "print(asyncio.run(complete(request, lambda text: None)).usage['completion_tokens'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert out.stderr == ""
    assert out.stdout.strip() == "2"


def test_a_missing_gguf_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProviderError) as info:
        run(ModelRequest("local/models/missing.gguf", MESSAGES))
    assert str(tmp_path / "models" / "missing.gguf") in str(info.value)
    assert not info.value.retryable


def test_an_unknown_local_model_says_what_is_accepted() -> None:
    with pytest.raises(ProviderError, match="local/smollm2 or local/PATH.gguf"):
        run(ModelRequest("local/gpt5", MESSAGES))
