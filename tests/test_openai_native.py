"""What only our httpx client of the OpenAI protocol promises (its behaviour shared with
litellm is tested over both clients in test_models_litellm.py): it serves ``openai/…``
models unless told otherwise, reads prices without litellm, and a run on it never imports
litellm."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from testkit import PYTHON, child_env, write

from runner.models import OPENAI_CLIENT_VAR, backend_for
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
