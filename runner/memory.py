"""Conversations per memory_id during one run: what the run started with, plus what it added.

`base` is the memory as it stood at the end of the parent run (loaded once from the
saver); `added` collects this run's messages, which are what gets saved (deltas). An
isolated sub-flow sees the same store through a namespace, so its conversations are
kept apart under ``step_path:memory_id`` keys and never mix with the parent's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

__all__ = [
    "ConversationStore", "MemoryView", "ForkedMemoryView", "SnapshotMemoryView", "window_messages",
    "steps_delta", "join_deltas", "in_map_item",
]

Message = dict[str, Any]
Delta = dict[str, list[Message]]


class DeltaRecord(Protocol):
    """What `steps_delta` reads of a step record (`runner.savers.base.StepRecord`)."""

    seq: int
    step_id: str
    status: str
    messages: Delta




def window_messages(history: list[Message], window: int | None) -> list[Message]:
    """The last `window` messages, never starting with a tool result cut off from its call."""
    if window is None or window >= len(history):
        return list(history)
    if window <= 0:
        return []
    start = len(history) - window
    while start < len(history) and history[start].get("role") == "tool":
        start += 1
    return list(history[start:])


class ConversationStore:
    """All conversations of one run, keyed by memory id."""

    def __init__(self, base: dict[str, list[Message]] | None = None) -> None:
        self.base: dict[str, list[Message]] = {k: list(v) for k, v in (base or {}).items()}
        self.added: dict[str, list[Message]] = {}

    def history(self, memory_id: str) -> list[Message]:
        """Every message of the conversation `memory_id`, oldest first."""
        return self.base.get(memory_id, []) + self.added.get(memory_id, [])

    def append(self, memory_id: str, messages: Iterable[Message]) -> None:
        """Add messages (a step's user message and reply) to a conversation."""
        self.added.setdefault(memory_id, []).extend(messages)

    def view(self, namespace: str = "") -> MemoryView:
        """A view whose memory ids are prefixed by `namespace` (empty: the store itself)."""
        return MemoryView(self, namespace)


class MemoryView:
    """The store as a step sees it: shared (no namespace) or isolated (namespaced keys)."""

    def __init__(self, store: ConversationStore, namespace: str = "") -> None:
        self.store = store
        self.namespace = namespace

    def key(self, memory_id: str) -> str:
        """The key under which `memory_id` is stored and saved."""
        return f"{self.namespace}{memory_id}"

    def history(self, memory_id: str, window: int | None = None) -> list[Message]:
        """The conversation, windowed to its last `window` messages."""
        return window_messages(self.store.history(self.key(memory_id)), window)

    def append(self, memory_id: str, messages: Iterable[Message]) -> None:
        self.store.append(self.key(memory_id), messages)

    def nested(self, namespace: str) -> MemoryView:
        """A deeper namespace (an isolated sub-flow inside an isolated sub-flow)."""
        return MemoryView(self.store, self.namespace + namespace)

    def fork(self, memory_id: str, key: str, prefix: list[Message]) -> MemoryView:
        """This view with `memory_id` forked at `prefix`: see `ForkedMemoryView`."""
        return ForkedMemoryView(self, memory_id, key, prefix)


class ForkedMemoryView(MemoryView):
    """A view in which one conversation is forked; every other memory id is the parent's.

    `memory_id` reads `prefix` (the conversation as it stood at the fork) followed by
    what was written to it since, which is stored under `key` and never reaches the
    parent's conversation. An agent's flow tools see its conversation this way: they
    read it so far, and their own exchanges cannot land between a tool call and its result.
    """

    def __init__(self, parent: MemoryView, memory_id: str, key: str, prefix: list[Message]) -> None:
        super().__init__(parent.store, parent.namespace)
        self.parent = parent
        self.memory_id = memory_id
        self.fork_key = key
        self.prefix = list(prefix)

    def key(self, memory_id: str) -> str:
        return self.fork_key if memory_id == self.memory_id else self.parent.key(memory_id)

    def history(self, memory_id: str, window: int | None = None) -> list[Message]:
        if memory_id != self.memory_id:
            return self.parent.history(memory_id, window)
        # Only what this call wrote in this run: a fork key seen in an earlier run (the same
        # agent step and call number in the parent run) holds that run's private exchange.
        return window_messages(self.prefix + self.store.added.get(self.fork_key, []), window)


class SnapshotMemoryView(MemoryView):
    """The conversations `memory_ids` as they stood when the view was made, in a store of
    its own: what is written through it never reaches `parent`'s store (one map item)."""

    def __init__(self, parent: MemoryView, memory_ids: Iterable[str]) -> None:
        super().__init__(
            ConversationStore({parent.key(m): parent.history(m) for m in memory_ids}),
            parent.namespace,
        )
        self.parent = parent

    def key(self, memory_id: str) -> str:
        return self.parent.key(memory_id)


# -- the delta algebra: a run's memory = its ancestors' deltas, then its own, in order


def in_map_item(step_id: str) -> bool:
    """Whether a step record belongs to one item of a map (`STEP[i]/child`): what an item
    adds to a conversation stays in its records and never joins the run's memory."""
    return "[" in step_id  # step ids and tool names never hold '['


def steps_delta(steps: Iterable[DeltaRecord]) -> Delta:
    """The messages some step records added, per memory id (succeeded steps, in seq order;
    map items' steps left out)."""
    ordered = sorted(steps, key=lambda s: (s.seq, s.step_id))
    return join_deltas(
        s.messages for s in ordered if s.status == "succeeded" and not in_map_item(s.step_id)
    )


def join_deltas(deltas: Iterable[Delta]) -> Delta:
    """Memory deltas one after another (oldest first), per memory id, in new lists."""
    memory: Delta = {}
    for delta in deltas:
        for mid, msgs in delta.items():
            memory.setdefault(mid, []).extend(msgs)
    return memory
