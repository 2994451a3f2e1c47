"""Model names, checked at compile time (SPEC §1 `llm`): a name no backend can serve is a
located compile error with a did-you-mean, not a failure ten seconds into a run.

- ``echo`` (and ``echo/…``) is built in;
- ``local/smollm2`` and ``local/PATH.gguf``: the file must exist (a relative PATH is
  resolved against the current directory, as the run resolves it);
- a name a registered backend claims by its prefix (a plugin's) is that backend's business;
- ``PROVIDER/MODEL`` otherwise goes to litellm: PROVIDER must be one litellm knows; MODEL
  is the provider's business (self-hosted servers serve any name);
- a bare name (``gpt-4o-mini``) must be one litellm can route without a prefix.

litellm is never imported (it takes seconds, and `timbal validate` must stay fast): its
provider list and model map are read from the files it ships, once, and only for names
that are not built in or common.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path

from ..errors import did_you_mean

__all__ = ["model_problem", "LOCAL_MODELS"]

#: The names `local/NAME` accepts besides `local/PATH.gguf`.
LOCAL_MODELS = ("smollm2",)
BUILT_IN = ("echo", "local/smollm2")
# Providers named every day: known without reading litellm's list.
_COMMON_PROVIDERS = frozenset({
    "openai", "anthropic", "ollama", "ollama_chat", "groq", "mistral", "gemini", "vertex_ai",
    "azure", "bedrock", "cohere", "together_ai", "deepseek", "xai", "openrouter",
    "huggingface", "fireworks_ai", "hosted_vllm", "lm_studio", "custom_openai", "openai_like",
})
_ENUM_VALUE = re.compile(r'^\s+\w+\s*=\s*"([^"]+)"', re.M)


def model_problem(model: str) -> str | None:
    """Why `model` cannot be served (one sentence, with a did-you-mean), or None."""
    if model == "echo" or model.startswith("echo/"):
        return None
    if model.startswith("local/"):
        return _local_problem(model.removeprefix("local/"))
    if _claimed(model):
        return None  # a backend of its own serves it (a plugin's, the native OpenAI client)
    provider, slash, rest = model.partition("/")
    if slash:
        if provider in _COMMON_PROVIDERS:
            return None
        providers = _litellm_providers()
        if providers is None or provider in providers:
            return None
        guess = did_you_mean(provider, providers | _COMMON_PROVIDERS | {"local", "echo"})
        hint = f" (did you mean '{guess}/{rest}'?)" if guess else ""
        return f"unknown model provider '{provider}' in '{model}'{hint}; see https://docs.litellm.ai/docs/providers"
    known = _litellm_models()
    if known is not None and model in known:
        return None
    guess = did_you_mean(model, BUILT_IN) or (did_you_mean(model, known) if known else None)
    hint = f" (did you mean '{guess}'?)" if guess else ""
    return (f"unknown model '{model}'{hint}; use echo, local/smollm2, local/PATH.gguf or "
            "PROVIDER/MODEL (e.g. openai/gpt-4o-mini)")


def _claimed(model: str) -> bool:
    """Whether a registered backend other than the fallback (litellm) claims `model`."""
    from ..registry import model_backends

    return any(
        backend.serves(model) is not None and backend.enabled() for backend in model_backends
    )


def _local_problem(name: str) -> str | None:
    if name in LOCAL_MODELS:
        return None
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        path = path if path.is_absolute() else Path.cwd() / path
        return None if path.is_file() else f"model file not found: {path}"
    guess = did_you_mean(name, LOCAL_MODELS)
    hint = f" (did you mean 'local/{guess}'?)" if guess else ""
    return f"unknown local model '{name}'{hint}; use local/smollm2 or local/PATH.gguf"


def _litellm_root() -> Path | None:
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).parent if spec is not None and spec.origin else None


@functools.cache
def _litellm_providers() -> frozenset[str] | None:
    """The provider prefixes litellm knows (its `LlmProviders` enum, read from its source
    without importing it); None when litellm is not there to ask."""
    root = _litellm_root()
    try:
        source = (root / "types" / "utils.py").read_text(encoding="utf-8") if root else ""
    except OSError:
        return None
    start = source.find("class LlmProviders(")
    if start < 0:
        return None
    end = source.find("\nclass ", start + 1)
    found = frozenset(_ENUM_VALUE.findall(source[start : end if end > 0 else None]))
    return found or None


@functools.cache
def _litellm_models() -> frozenset[str] | None:
    """The model names litellm's model map knows (the file it ships); None without it."""
    root = _litellm_root()
    try:
        data = json.loads((root / "model_prices_and_context_window_backup.json").read_text("utf-8")) if root else None
    except (OSError, ValueError):
        return None
    return frozenset(data) if isinstance(data, dict) else None
