"""Real providers through litellm: ``openai/gpt-4o-mini``, ``anthropic/claude-…``, ….

litellm is imported lazily, on the first call (it takes seconds and `timbal validate`
never needs it). Our own retry loop (``runner.models.complete``) does the retries, so
litellm's are off, and every failure becomes one `ProviderError` line that says what
went wrong and where: a missing key names its environment variable; an unreachable
provider names the address; rate limits carry the server's Retry-After.

An openai-compatible server needs no real key when an ``api_base`` is given (in
``params`` or the ``OPENAI_API_BASE`` / ``OPENAI_BASE_URL`` environment variables).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from typing import Any

from ..errors import ProviderError
from ..registry import ModelBackend
from . import ChunkCallback, ModelReply, ModelRequest
from .provider import (
    DUMMY_KEY,
    assistant_message,
    broken_error,
    empty_error,
    env_api_base,
    exception_chain,
    http_error,
    json_response_format,
    malformed_error,
    missing_key_error,
    refused_error,
    retry_after_seconds,
    short,
    timeout_error,
    unreachable_error,
    wire_messages,
)

__all__ = ["MODEL_BACKEND", "complete", "load_litellm"]

# Providers that speak the OpenAI protocol and accept any key on a self-hosted api_base.
_OPENAI_COMPATIBLE = {"openai", "custom_openai", "openai_like", "text-completion-openai"}
_DEFAULT_ADDRESS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "ollama": "http://localhost:11434",
}
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|CREDENTIAL|PASSWORD", re.I)

_litellm: Any = None
_import_lock = threading.Lock()


def load_litellm() -> Any:
    """Import litellm once, configured to stay offline and quiet on import and on errors."""
    global _litellm
    if _litellm is not None:
        return _litellm
    with _import_lock:
        if _litellm is None:
            # Without this, importing litellm fetches the model cost map from the network.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners
            litellm.disable_hf_tokenizer_download = True
            if not os.environ.get("LITELLM_LOG"):
                # Our ProviderError says what failed, once; litellm's own log lines would repeat it.
                for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                    logging.getLogger(name).setLevel(logging.CRITICAL)
            _litellm = litellm
    return _litellm


async def complete(request: ModelRequest, on_chunk: ChunkCallback | None = None) -> ModelReply:
    """Call the provider of `request.model` through litellm (one attempt, no retries).

    Streams when `on_chunk` is given or `request.stream` is set, delivering text deltas to
    `on_chunk`; the reply is the complete assistant message (with tool calls) either way.
    `request.timeout` bounds the whole call. Failures raise `ProviderError`.
    """
    litellm = _litellm if _litellm is not None else await asyncio.to_thread(load_litellm)
    kwargs, provider, address = _call_arguments(litellm, request)
    if on_chunk is not None or request.stream:
        kwargs["stream"] = True
        if "stream_options" not in kwargs and _streams_usage(litellm, request.model, provider):
            kwargs["stream_options"] = {"include_usage": True}
    try:
        return await asyncio.wait_for(
            _call(litellm, request, kwargs, address, on_chunk), request.timeout
        )
    except asyncio.TimeoutError:
        raise timeout_error(request.model, address, request.timeout) from None


def _call_arguments(litellm: Any, request: ModelRequest) -> tuple[dict[str, Any], str, str]:
    """The keyword arguments for `litellm.acompletion`, the provider, and its address."""
    params = json_response_format(request.params)
    try:
        _, provider, _, _ = litellm.get_llm_provider(model=request.model)
    except Exception as exc:
        raise ProviderError(
            f"{request.model}: unknown model or provider ({short(exc)}); "
            "use a litellm model string such as openai/gpt-4o-mini"
        ) from None
    api_base = params.get("api_base") or params.get("base_url")
    if not api_base and provider in _OPENAI_COMPATIBLE:
        api_base = env_api_base()
    if not params.get("api_key"):
        if api_base and provider in _OPENAI_COMPATIBLE:
            if not os.environ.get("OPENAI_API_KEY"):
                params["api_key"] = DUMMY_KEY  # self-hosted servers accept any key
        else:
            _check_keys(litellm, request.model, api_base)
    address = str(api_base or _DEFAULT_ADDRESS.get(provider) or f"the {provider} API")
    if api_base:
        params["api_base"] = api_base
    kwargs: dict[str, Any] = {
        **params,
        "model": request.model,
        "messages": wire_messages(request.messages),
        "timeout": request.timeout,
        "num_retries": 0,
        "max_retries": 0,
    }
    if request.tools:
        kwargs["tools"] = request.tools
        kwargs["_skip_mcp_handler"] = True  # else litellm imports MCP helpers we don't ship
    return kwargs, provider, address


def _check_keys(litellm: Any, model: str, api_base: str | None) -> None:
    """Refuse early, naming the variable, when the provider's API key is not set."""
    try:
        env = litellm.validate_environment(model=model, api_base=api_base)
    except Exception:  # the call itself will then report what is wrong
        return
    missing = [k for k in env.get("missing_keys") or [] if _SECRET_NAME.search(k)]
    if missing:
        raise missing_key_error(model, missing)


async def _call(
    litellm: Any,
    request: ModelRequest,
    kwargs: dict[str, Any],
    address: str,
    on_chunk: ChunkCallback | None,
) -> ModelReply:
    streaming = bool(kwargs.get("stream"))
    try:
        response = await litellm.acompletion(**kwargs)
    except Exception as exc:
        raise _provider_error(exc, request, address) from None
    if not streaming:
        if not getattr(response, "choices", None):
            raise empty_error(request.model, address)
        return _reply(litellm, request, response, address)

    chunks: list[Any] = []
    iterator = response.__aiter__()
    while True:
        try:
            chunk = await iterator.__anext__()
        except StopAsyncIteration:
            break
        except Exception as exc:
            raise _provider_error(exc, request, address) from None
        chunks.append(chunk)
        if on_chunk is not None and chunk.choices:
            text = getattr(chunk.choices[0].delta, "content", None)
            if text:
                on_chunk(text)  # outside the try: a failing callback is not a provider error
    built = litellm.stream_chunk_builder(chunks, messages=request.messages) if chunks else None
    if built is None or not built.choices:
        raise empty_error(request.model, address)
    reply = _reply(litellm, request, built, address)
    if (
        getattr(response, "received_finish_reason", "") is None
        and not reply.text
        and not reply.tool_calls
    ):
        # litellm fills in a blank choice when the provider streamed none.
        raise empty_error(request.model, address)
    return reply


def _streams_usage(litellm: Any, model: str, provider: str) -> bool:
    """Whether litellm passes `stream_options` to this provider (stream usage is an OpenAI extra)."""
    try:
        supported = litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
    except Exception:
        return False
    return bool(supported) and "stream_options" in supported


def _reply(litellm: Any, request: ModelRequest, response: Any, address: str) -> ModelReply:
    """The assistant message in the OpenAI form, with usage and, when litellm knows it, cost."""
    message = response.choices[0].message
    tool_calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.function.name, "arguments": call.function.arguments or "{}"},
        }
        for call in getattr(message, "tool_calls", None) or []
    ]
    content = message.content
    if not isinstance(content, str | type(None)):
        raise malformed_error(request.model, address, "content is not text")
    out = assistant_message(content, tool_calls)
    usage: dict[str, Any] = {}
    raw_usage = getattr(response, "usage", None)
    if raw_usage is not None:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            usage[key] = int(getattr(raw_usage, key, 0) or 0)
    hidden = getattr(response, "_hidden_params", None) or {}
    if "response_cost" in hidden:  # litellm priced it already (None: unknown model)
        cost = hidden["response_cost"]
    else:
        try:
            cost = litellm.completion_cost(completion_response=response, model=request.model)
        except Exception:  # unknown models (self-hosted, fakes) have no price
            cost = None
    if cost is not None:
        usage["cost"] = float(cost)
    return ModelReply(text=content or "", message=out, usage=usage, model=request.model)


# -- errors ----------------------------------------------------------------------------

_REFUSED = {"ConnectionRefusedError"}
_UNREACHABLE = {"ClientConnectorError", "ConnectError", "gaierror", "ClientConnectorDNSError"}
_BROKEN = {
    "ReadError",
    "RemoteProtocolError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ConnectionResetError",
    "TransferEncodingError",
    "IncompleteRead",
}
_TIMEOUT = {
    "Timeout",
    "APITimeoutError",
    "TimeoutException",
    "ReadTimeout",
    "ConnectTimeout",
    "TimeoutError",
    "ServerTimeoutError",
}
_MALFORMED = {"JSONDecodeError", "APIResponseValidationError", "ValidationError"}


def _provider_error(exc: Exception, request: ModelRequest, address: str) -> ProviderError:
    """One clear line for a failed provider call, retryable when trying again can help."""
    model = request.model
    names = {type(e).__name__ for e in exception_chain(exc)}
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    if names & _TIMEOUT:
        return timeout_error(model, address, request.timeout)
    if names & _REFUSED:
        return refused_error(model, address)
    if names & _UNREACHABLE:
        cause = next(e for e in exception_chain(exc) if type(e).__name__ in _UNREACHABLE)
        return unreachable_error(model, address, str(cause))
    if names & _MALFORMED:
        return malformed_error(model, address, status=status)
    if names & _BROKEN or (status in (None, 500) and _message(exc) == "Connection error."):
        return broken_error(model, address)
    if status is None:
        return ProviderError(f"{model}: call to {address} failed: {_message(exc)}")
    return http_error(model, address, status, _message(exc), _retry_after(exc))


_PREFIX = re.compile(
    r"^\s*(?:litellm\.\w+:\s*|\w+(?:Error|Exception)\s*(?::|-)\s*|Original exception:\s*)+"
)


def _message(exc: BaseException) -> str:
    """The provider's own message, without litellm's class-name prefixes, on one line."""
    text = str(getattr(exc, "message", None) or exc)
    text = _PREFIX.sub("", text)
    start = text.find("{")
    if start >= 0:
        try:
            body = json.loads(text[start:])
            if isinstance(body, dict):
                err = body.get("error", body)
                text = str(err.get("message") if isinstance(err, dict) else err) or text
        except ValueError:
            pass
    return short(text)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds from the Retry-After header of the error response litellm wraps."""
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        seconds = retry_after_seconds(headers)
        if seconds is not None:
            return seconds
    return None


MODEL_BACKEND = ModelBackend(name="litellm", complete=complete, fallback=True)
