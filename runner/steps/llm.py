"""`llm` steps: one model call with the step's memory (SPEC §2).

Sent: the rendered system message (if any), then the memory's history (windowed by
`memory_window`), then the rendered user message(s). On success the user message(s)
and the assistant reply are appended to the memory; system messages never are.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import StepError
from ..models import DEFAULT_RETRIES, DEFAULT_TIMEOUT, ModelReply, ModelRequest, complete
from ..registry import StepKind
from ..secrets import secret_param_values
from .base import StepContext, StepOutcome

__all__ = ["STEP_KIND", "MODEL_STEP_RENDERED", "execute", "prompt_messages", "make_request", "parse_reply", "stored_reply", "wants_json"]

#: The keys of a model step (llm, agent) rendered at run time.
MODEL_STEP_RENDERED = ("system", "prompt", "messages", "params")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def prompt_messages(ctx: StepContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system messages, new conversation messages) rendered from the step's config."""
    cfg = ctx.config
    system: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    if cfg.get("system") is not None:
        system.append({"role": "system", "content": _text(ctx.render(cfg["system"]))})
    if cfg.get("messages") is not None:
        for item in cfg["messages"]:
            msg = {"role": item["role"], "content": _text(ctx.render(item.get("content", "")))}
            (system if msg["role"] == "system" else new).append(msg)
    if cfg.get("prompt") is not None:
        new.append({"role": "user", "content": _text(ctx.render(cfg["prompt"]))})
    return system, new


def make_request(
    ctx: StepContext, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> ModelRequest:
    """The model call for this step: params rendered, secrets noted, timeout and retries set."""
    cfg = ctx.config
    params = dict(ctx.render(cfg.get("params") or {}))
    for value in secret_param_values(params):
        ctx.add_secret(value)
    return ModelRequest(
        model=str(ctx.render(cfg.get("model") or "echo")),
        messages=messages,
        params=params,
        tools=tools,
        timeout=float(cfg.get("timeout") or DEFAULT_TIMEOUT),
        retries=int(cfg["retries"]) if cfg.get("retries") is not None else DEFAULT_RETRIES,
        stream=ctx.on_chunk is not None,
    )


def wants_json(params: dict[str, Any]) -> bool:
    """Whether a JSON response format was asked for."""
    fmt = params.get("response_format")
    if isinstance(fmt, dict):
        return fmt.get("type") in ("json_object", "json_schema")
    return isinstance(fmt, str) and fmt.startswith("json")


def parse_reply(ctx: StepContext, request: ModelRequest, reply: ModelReply) -> Any:
    """The step's `return`: the reply text, or its parsed JSON when JSON was asked for."""
    if not wants_json(request.params):
        return reply.text
    text = reply.text.strip()
    if text.startswith("```"):  # models often fence JSON; the fence is not part of the value
        text = text.strip("`").removeprefix("json").strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = reply.text[:80].replace("\n", " ")
        raise StepError(
            f"the model's reply is not valid JSON ({exc.msg} at char {exc.pos}): {snippet!r}",
            ctx.spec.id,
        ) from None


async def execute(ctx: StepContext) -> StepOutcome:
    """Call the model once with system + history + the new message(s)."""
    cfg = ctx.config
    memory_id = cfg.get("memory_id")
    system, new = prompt_messages(ctx)
    history = ctx.memory.history(memory_id, cfg.get("memory_window")) if memory_id else []
    request = make_request(ctx, system + history + new)
    reply = await complete(request, ctx.on_chunk)
    try:
        value = parse_reply(ctx, request, reply)
    except StepError as exc:  # the call succeeded: its tokens were spent
        exc.usage = dict(reply.usage)
        raise
    stored = {memory_id: [*new, stored_reply(reply)]} if memory_id else {}
    return StepOutcome(
        return_value=value,
        usage=reply.usage,
        model=reply.model or request.model,
        attempts=reply.attempts,
        messages=stored,
    )


def stored_reply(reply: ModelReply) -> dict[str, Any]:
    """The assistant message as memory keeps it (OpenAI form, no provider extras). Its
    `content` is always text, empty when the model only called tools: servers other than
    OpenAI's (llama.cpp's templates) refuse an assistant message without it."""
    content = reply.message.get("content")
    if not isinstance(content, str | list):
        content = reply.text or ""
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if reply.message.get("tool_calls"):
        msg["tool_calls"] = reply.message["tool_calls"]
    return msg


STEP_KIND = StepKind(
    name="llm",
    execute=execute,
    cacheable=True,
    rendered=MODEL_STEP_RENDERED,
    defaults={"timeout": DEFAULT_TIMEOUT, "retries": DEFAULT_RETRIES},
    uses_model=True,
    description="One model call with the step's memory.",
)
