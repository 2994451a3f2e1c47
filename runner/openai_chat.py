"""OpenAI's chat completions API over a flow: the request -> a run's arguments, the run ->
the response objects (whole or as `chat.completion.chunk`s).

The last user message goes to the flow's chat input (the rule of `timbal chat`, see
`line_input_name`). The messages before it become the starting history of
the memory id of the step that feeds the output, unless the request continues a saved
run (`parent_run_id`): then the history comes from that run and the request's earlier
messages are ignored. System messages never join a history (SPEC §2: they are never
stored); the flow's own steps say their system prompts.

    from runner import load_flow
    from runner.openai_chat import chat_request, completion
    flow = load_flow("flows/chat.yaml")
    req = chat_request(flow.graph, body["messages"])
    result = await flow.run(req.inputs, parent_id=req.parent_id, history=req.history)
    completion(result.run_id, flow.name, reply_text(result.outputs), result.usage)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Diagnostic, InputError
from .graph import ExecutionGraph
from .tools import single_text_output

__all__ = [
    "line_input_name",
    "reply_text",
    "ChatRequest",
    "chat_request",
    "history_memory_id",
    "content_text",
    "streams_verbatim",
    "openai_usage",
    "completion",
    "completion_chunk",
    "model_object",
]

_KEPT_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
_SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class ChatRequest:
    """What a chat completion request asks of a flow: its inputs, the history to start
    from (memory id -> messages; empty when there is none) and the run to continue."""

    inputs: dict[str, Any]
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    parent_id: str | None = None


def _invalid(message: str) -> InputError:
    return InputError([Diagnostic(message)])


def content_text(content: Any) -> str:
    """The text of a request message's `content`: a string, or a list of parts whose text
    parts are joined. Stricter than the models' reading: InputError for anything else
    (an image part, a number), so a client learns what was not understood."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise _invalid(f"message content parts of type {kind!r} are not supported (only text)")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise _invalid("message content must be a string or a list of text parts")


def history_memory_id(graph: ExecutionGraph) -> str | None:
    """The memory id of the step that feeds the flow's output (where a chat's earlier
    messages go), or None when no single step clearly does or it keeps no memory."""
    step = graph.output_step
    return graph.step(step).memory_id if step is not None else None


def chat_request(
    graph: ExecutionGraph,
    messages: Sequence[Any],
    parent_run_id: str | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> ChatRequest:
    """Map OpenAI `messages` (and the optional `parent_run_id`, and extra flow `inputs`)
    onto a run of `graph`. InputError when there is no user message or a message is
    malformed, or the flow has no input for chat lines."""

    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        raise _invalid("'messages' must be a list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise _invalid(f"messages[{i}] must be an object with a 'role'")
    last_user = next(
        (i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None
    )
    if last_user is None:
        raise _invalid("'messages' has no user message")
    values = dict(inputs or {})
    values[line_input_name(graph)] = content_text(messages[last_user].get("content"))
    if parent_run_id is not None:
        return ChatRequest(values, {}, parent_run_id)
    earlier = []
    for message in messages[:last_user]:
        if message["role"] in _SYSTEM_ROLES:
            continue
        kept = {k: message[k] for k in _KEPT_KEYS if k in message}
        if "tool_calls" not in kept or kept.get("content") is not None:
            kept["content"] = content_text(message.get("content"))
        earlier.append(kept)
    memory_id = history_memory_id(graph)
    history = {memory_id: earlier} if earlier and memory_id is not None else {}
    return ChatRequest(values, history, None)


def streams_verbatim(graph: ExecutionGraph) -> bool:
    """Whether the reply is exactly the output step's return, so that step's streamed
    chunks can be sent as they come (else the reply is sent whole at the end)."""
    step = graph.output_step
    if step is None:
        return False
    if graph.outputs is None:
        return True
    (template,) = graph.outputs.values()
    expression = "".join(template.source.split())  # `{{ chat.return }}` -> `{{chat.return}}`
    return template.native and expression == f"{{{{{step}.return}}}}"


def openai_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    """A run's usage in OpenAI's form (prompt, completion and total tokens)."""
    prompt = int(usage.get("prompt_tokens", 0) or 0)
    completion_tokens = int(usage.get("completion_tokens", 0) or 0)
    total = int(usage.get("total_tokens", 0) or 0) or prompt + completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": total}


def completion(
    run_id: str, model: str, text: str, usage: Mapping[str, Any], created: int | None = None
) -> dict[str, Any]:
    """A `chat.completion` object answering with `text`; its id is the run id."""
    return {
        "id": run_id,
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": openai_usage(usage),
    }


def completion_chunk(
    run_id: str,
    model: str,
    created: int,
    delta: Mapping[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk`: a delta of the reply, its end (`finish_reason`), or,
    with `usage` (and no delta), the usage chunk that ends the stream."""
    chunk: dict[str, Any] = {
        "id": run_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
    }
    if usage is not None:
        chunk["usage"] = openai_usage(usage)
    else:
        chunk["choices"] = [
            {"index": 0, "delta": dict(delta or {}), "finish_reason": finish_reason, "logprobs": None}
        ]
    return chunk


def model_object(name: str, created: int = 0) -> dict[str, Any]:
    """A flow as an entry of `GET /v1/models`."""
    return {"id": name, "object": "model", "created": created, "owned_by": "timbal"}


_LINE_INPUT_NAMES = ("prompt", "message")


def line_input_name(graph: ExecutionGraph) -> str:
    """The input each chat line goes to: the flow's single required string input, else an
    input named `prompt` or `message`. InputError when there is none."""
    required = [
        i for i in graph.inputs
        if i.required and "default" not in i.schema and i.type in (None, "string")
    ]
    if len(required) == 1:
        return required[0].name
    names = {i.name for i in graph.inputs}
    for name in _LINE_INPUT_NAMES:
        if name in names:
            return name
    raise InputError(
        [
            Diagnostic(
                f"flow '{graph.name}' has no input for chat lines: it needs one required "
                "string input, or an input named 'prompt' or 'message'"
            )
        ]
    )


def reply_text(outputs: Any) -> str:
    """A run's outputs as one reply: the text of a single string output, else compact JSON."""
    text = single_text_output(outputs)
    if text is not None:
        return text
    return json.dumps(outputs, ensure_ascii=False, default=str)
