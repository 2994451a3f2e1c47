"""Incremental re-runs: reuse a step's earlier result when nothing it depends on changed.

Like a build system, a `StepCache` remembers each step's outcome under a key made of
what decides its result: the step's definition (`StepSpec.fingerprint`), its resolved
inputs (every field of its config, rendered with this run's context: the prompt as it
would be sent, params, model) and its memory (the history it would send). When a later
run (the next reload of `timbal run --watch`, the next turn of `timbal chat`) reaches
the same step with the same key, the engine reuses the outcome instead of calling the
model: the step still appends its messages to memory and is recorded (with
``attempts == 0`` and its `cache_key`), and the engine emits ``step_reused``.

Only side-effect free kinds are cached by default (those whose `StepKind.cacheable` is set:
`llm`, `template`): a python step may write files or call services, and the user expects
it to run every time. The cache lives
in the process only, for one watch or chat session.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .registry import step_kinds
from .templates import TemplateRenderError

if TYPE_CHECKING:
    from .steps.base import StepContext, StepOutcome

__all__ = ["StepCache", "step_cache_key"]

_DEFAULT_MAX_ENTRIES = 4096


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def step_cache_key(ctx: StepContext) -> str | None:
    """The key of the step `ctx` is about to run: definition + rendered config + memory.

    None when the config cannot be rendered (the step itself then fails as usual).
    """
    spec = ctx.spec
    try:
        resolved = ctx.render(spec.config)
    except TemplateRenderError:
        return None
    window = spec.config.get("memory_window")
    memory = {  # memory_ids holds the step's own memory_id too
        mid: ctx.memory.history(mid, window if mid == spec.memory_id else None)
        for mid in sorted(spec.memory_ids)
    }
    return _digest(
        {
            "path": ctx.path,
            "kind": spec.kind,
            "definition": spec.fingerprint,
            "resolved": resolved,
            "memory": memory,
        }
    )


class StepCache:
    """Step outcomes by key, for one session (a watcher, a chat). Bounded, least recent out.

    `reused` lists the step paths served from the cache since the last `begin_run()`,
    so a front end can say which steps were not run again.
    """

    def __init__(
        self, kinds: Iterable[str] | None = None, max_entries: int = _DEFAULT_MAX_ENTRIES
    ) -> None:
        # Default: the kinds that declare themselves cacheable (no side effects).
        self.kinds = frozenset(kinds) if kinds is not None else frozenset(k.name for k in step_kinds if k.cacheable)
        self.max_entries = max_entries
        self._entries: OrderedDict[str, StepOutcome] = OrderedDict()
        self.reused: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    def begin_run(self) -> None:
        """Start counting reused steps afresh (call before each run)."""
        self.reused = []

    def lookup(self, ctx: StepContext) -> tuple[str | None, StepOutcome | None]:
        """(key, earlier outcome or None) for the step `ctx` is about to run.

        The key is None when the step's kind is not cached or its config does not render.
        """
        if ctx.spec.kind not in self.kinds:
            return None, None
        key = step_cache_key(ctx)
        if key is None:
            return None, None
        hit = self._entries.get(key)
        if hit is None:
            return key, None
        self._entries.move_to_end(key)
        self.reused.append(ctx.path)
        outcome = copy.deepcopy(hit)
        outcome.attempts = 0  # the marker of a reused step: no attempt was made
        return key, outcome

    def store(self, key: str, outcome: StepOutcome) -> None:
        """Remember a succeeded step's outcome under `key`."""
        self._entries[key] = copy.deepcopy(outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every outcome."""
        self._entries.clear()
