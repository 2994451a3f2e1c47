"""The state saver interface and the records it stores.

A run's record holds what SPEC §3 lists; its memory is stored as what the run added
(`StepRecord.messages`, per memory id), never as the whole conversation. A run's full
memory is its ancestors' deltas followed by its own, in order: `load_memory` follows
the parent chain and reads nothing else.

Every saver passes the one conformance suite in tests/test_saver_conformance.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FlowError, InputError, RunNotFound, SaverError
from ..memory import join_deltas, steps_delta
from ..status import FINISHED_STATUSES, RUN_STATUSES, STEP_STATUSES
from .lanes import WriteLane, run_blocking

__all__ = ["RunRecord", "StepRecord", "Saver", "RUN_STATUSES", "FINISHED_STATUSES", "STEP_STATUSES",
           "encode_json", "config_option", "saver_file", "uri_path"]

_MEMORY_LOCK = threading.Lock()  # guards every saver's `remember_memory` cache
_LANES_LOCK = threading.Lock()  # guards every saver's write lanes



def _json_fallback(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "model_dump"):  # pydantic models returned by python steps
        return value.model_dump()
    return str(value)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_fallback)


def encode_json(value: Any) -> str:
    """`value` as one line of JSON, the way every saver stores it (unknown types as strings)."""
    return _ENCODER.encode(value)


@dataclass
class StepRecord:
    """What one step did in one run. Saved once, when the step ends (durably).

    `messages` maps memory_id -> the messages this step appended to that memory.
    `seq` orders the step records of a run (the order they ended in); memory is
    rebuilt by concatenating the deltas of succeeded steps in `seq` order.
    Steps of a sub-flow have ids like `parent_step/child_step`.
    """

    step_id: str
    status: str
    seq: int = 0
    return_value: Any = None
    error: str | None = None
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Fingerprint of the step's definition + resolved inputs + memory, for incremental re-runs.
    cache_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a dict (shallow: nested values are shared, not copied)."""
        fields = self.__dict__  # a plain dataclass: its fields are its instance attributes
        return {name: fields[name] for name in _STEP_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class RunRecord:
    """One run of a flow. `steps` is filled by `Saver.get_run`, empty in `list_runs`."""

    run_id: str
    parent_id: str | None
    flow_name: str
    flow_path: str | None
    flow_hash: str
    status: str = "running"
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: Any = None
    error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)

    def to_dict(self, with_steps: bool = True) -> dict[str, Any]:
        """The record as a dict (shallow but for `steps`, which become dicts too)."""
        fields = self.__dict__  # a plain dataclass: its fields are its instance attributes
        data = {name: fields[name] for name in _RUN_FIELDS}
        if with_steps:
            data["steps"] = [s.to_dict() for s in self.steps]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "steps"}
        rec = cls(**known)
        rec.steps = [StepRecord.from_dict(s) for s in data.get("steps", [])]
        return rec

    def memory_delta(self) -> dict[str, list[dict[str, Any]]]:
        """The messages this run added, per memory id (succeeded steps, in seq order)."""
        return steps_delta(self.steps)


_STEP_FIELDS = tuple(StepRecord.__dataclass_fields__)
_RUN_FIELDS = tuple(f for f in RunRecord.__dataclass_fields__ if f != "steps")


class Saver(ABC):
    """Where runs are kept. Sync methods; each write is durable when it returns.

    The engine calls the async forms (`astart_run`, `asave_step`, `afinish_run`,
    `aget_run`, `aload_memory`): by default they run the sync method in the saver thread
    pool, a run's writes in order (`runner.savers.lanes`), so the event loop never waits
    on a disk or a database. A saver with a native async client may override them.
    """

    #: The URI scheme / `state_saver.type` this saver answers to.
    kind: str = ""
    #: Whether calls wait on I/O (a file, a database): the async forms then run them in the
    #: saver thread pool. A saver that answers from memory sets False (no thread hop).
    blocking: bool = True
    #: Whether runs outlive the process (False: in memory; --continue and resume need True).
    keeps_runs: bool = True

    # -- writing -------------------------------------------------------------------------
    @abstractmethod
    def start_run(self, run: RunRecord) -> None:
        """Record a new run (status running), or mark an existing run running again (resume)."""

    @abstractmethod
    def save_step(self, run_id: str, step: StepRecord) -> None:
        """Durably record one finished step (a later record for the same step_id replaces it)."""

    @abstractmethod
    def finish_run(
        self,
        run_id: str,
        status: str,
        outputs: Any = None,
        error: str | None = None,
        usage: dict[str, Any] | None = None,
        ended_at: float | None = None,
    ) -> None:
        """Record the end of a run."""

    @abstractmethod
    def _delete_run(self, run_id: str) -> None:
        """Forget one run and its steps (RunNotFound if unknown). `delete_runs` checks
        children and calls this deepest first; never call it directly."""

    # -- the async forms the engine awaits (off the event loop) ------------------------
    def _lane(self, run_id: str) -> WriteLane:
        with _LANES_LOCK:
            lanes: dict[str, WriteLane] = self.__dict__.setdefault("_write_lanes", {})
            lane = lanes.get(run_id)
            if lane is None:
                lane = lanes[run_id] = WriteLane()
            return lane

    async def _write(self, run_id: str, fn: Callable[..., None], *args: Any) -> None:
        if not self.blocking:
            fn(*args)
            return
        await self._lane(run_id).run(fn, *args)

    async def astart_run(self, run: RunRecord) -> None:
        """`start_run`, awaited: durable when it returns, after the run's earlier writes."""
        await self._write(run.run_id, self.start_run, run)

    async def asave_step(self, run_id: str, step: StepRecord) -> None:
        """`save_step`, awaited: durable when it returns; a run's steps keep their order."""
        await self._write(run_id, self.save_step, run_id, step)

    async def afinish_run(
        self,
        run_id: str,
        status: str,
        outputs: Any = None,
        error: str | None = None,
        usage: dict[str, Any] | None = None,
        ended_at: float | None = None,
    ) -> None:
        """`finish_run`, awaited, after every write of the run asked for before it."""
        try:
            await self._write(run_id, self.finish_run, run_id, status, outputs, error, usage, ended_at)
        finally:
            with _LANES_LOCK:  # the run's last write: its lane is done
                self.__dict__.get("_write_lanes", {}).pop(run_id, None)

    async def aget_run(self, run_id: str) -> RunRecord:
        """`get_run`, awaited (in the saver pool)."""
        return self.get_run(run_id) if not self.blocking else await run_blocking(self.get_run, run_id)

    async def aload_memory(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """`load_memory`, awaited (in the saver pool)."""
        if not self.blocking:
            return self.load_memory(run_id)
        return await run_blocking(self.load_memory, run_id)

    async def aresolve(self, prefix: str) -> str:
        """`resolve`, awaited (in the saver pool)."""
        return self.resolve(prefix) if not self.blocking else await run_blocking(self.resolve, prefix)

    # -- reading -------------------------------------------------------------------------
    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """The run with its steps. Raises RunNotFound."""

    @abstractmethod
    def list_runs(
        self, flow: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs without their steps, newest first, filtered by flow name and status."""

    @abstractmethod
    def children(self, run_id: str) -> list[str]:
        """Ids of the runs whose parent is `run_id`."""

    @abstractmethod
    def memory_delta(self, run_id: str) -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
        """(parent_id, the messages run `run_id` added per memory id). Reads only that run."""

    # -- derived -------------------------------------------------------------------------
    def load_memory(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """The memory as it stood at the end of `run_id`: its ancestors' deltas, then its own.

        A run this process saw succeed is answered from memory (see `remember_memory`);
        any other is read from the store (`_load_memory`), its ancestry and nothing else.
        """
        cache = self.__dict__.get("_memories")
        if cache:
            with _MEMORY_LOCK:
                memory = cache.get(run_id)
                if memory is not None:
                    cache.move_to_end(run_id)
            if memory is not None:  # new lists, so callers can't change what is kept
                return {mid: list(msgs) for mid, msgs in memory.items()}
        return self._load_memory(run_id)

    #: How many finished runs' memories `remember_memory` keeps, least recently used dropped.
    memory_cache_size = 16

    def remember_memory(self, run_id: str, memory: dict[str, list[dict[str, Any]]]) -> None:
        """Keep the memory at the end of run `run_id`, exactly as `load_memory` would read it.

        The engine calls this when a run succeeds: such a run's memory no longer changes, so
        the next turn of a conversation (`load_memory(run_id)`) costs a lookup instead of a
        walk over every ancestor. Kept in this process only (a new process reads the store);
        `start_run`, `save_step` and `delete_run` of that run forget it. The caller hands
        `memory` over and must not change it (nor the messages in it) afterwards.
        """
        with _MEMORY_LOCK:
            cache = self.__dict__.setdefault("_memories", OrderedDict())
            cache[run_id] = memory
            cache.move_to_end(run_id)
            while len(cache) > max(self.memory_cache_size, 0):
                cache.popitem(last=False)

    def forget_memory(self, run_id: str) -> None:
        """Drop what `remember_memory` kept for `run_id` (the run is being written to)."""
        cache = self.__dict__.get("_memories")
        if cache:
            with _MEMORY_LOCK:
                cache.pop(run_id, None)

    def _load_memory(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """`load_memory` from the store: follows the parent chain through `memory_delta`."""
        chain = [delta for _, delta in self._lineage(run_id)]
        return join_deltas(reversed(chain))

    def _lineage(self, run_id: str) -> Iterator[tuple[str, dict[str, list[dict[str, Any]]]]]:
        """(id, memory delta) of `run_id`, its parent, ... up to the root; SaverError on a cycle."""
        seen: set[str] = set()
        current: str | None = run_id
        while current is not None:
            if current in seen:
                raise SaverError(f"run {current} is its own ancestor")
            seen.add(current)
            rid = current
            current, delta = self.memory_delta(rid)
            yield rid, delta

    def resolve(self, prefix: str) -> str:
        """The full run id for a unique prefix. Raises RunNotFound when none or several match."""
        if not prefix.strip():
            raise RunNotFound("no run id given")
        if self._has_run(prefix):  # a full id (the usual case): no scan of every id
            return prefix
        matches = self._ids_with_prefix(prefix)
        exact = [m for m in matches if m.upper() == prefix.upper()]
        if exact:  # a full id wins over longer ids it happens to prefix
            matches = exact
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFound(f"no run with id {prefix!r}")
        raise RunNotFound(f"run id prefix {prefix!r} is ambiguous: {', '.join(sorted(matches)[:5])}")

    def _has_run(self, run_id: str) -> bool:
        """Whether a run of exactly this id exists (False when the saver can't tell cheaply)."""
        return False

    def _ids_with_prefix(self, prefix: str) -> list[str]:
        return [r.run_id for r in self.list_runs() if r.run_id.upper().startswith(prefix.upper())]

    def latest(self, flow: str | None = None) -> RunRecord | None:
        """The newest run (of that flow, when named), or None."""
        runs = self.list_runs(flow=flow, limit=1)
        return runs[0] if runs else None

    def latest_finished(self, flow: str | None = None) -> RunRecord | None:
        """The newest run that has ended (succeeded, failed or interrupted), or None: what
        `--continue` continues. A run still in flight (or waiting for an answer) never is:
        its conversation is not complete, and a run started from it would never see the rest."""
        found = [r for status in FINISHED_STATUSES for r in self.list_runs(flow, status, limit=1)]
        return max(found, key=lambda r: (r.started_at, r.run_id), default=None)

    def ancestry(self, run_id: str) -> Iterator[str]:
        """`run_id`, its parent, its grandparent, ... up to the root."""
        for rid, _ in self._lineage(run_id):
            yield rid

    def descendants(self, run_id: str) -> Iterator[str]:
        """The runs below `run_id` (children, grandchildren, ...), each parent before its children."""
        stack = list(reversed(self.children(run_id)))
        while stack:
            current = stack.pop()
            yield current
            stack.extend(reversed(self.children(current)))

    def delete_run(self, run_id: str, recursive: bool = False) -> list[str]:
        """Forget a run (and, with `recursive`, the runs below it); the ids deleted."""
        return self.delete_runs([run_id], recursive)

    def delete_plan(self, run_ids: Iterable[str], recursive: bool = False) -> list[str]:
        """The full ids of the runs `delete_runs` would remove, children before parents.
        A run with descendants that are not deleted too is refused (InputError) unless
        `recursive`, so no run is ever left without its parent. Ids may be prefixes."""
        targets = list(dict.fromkeys(self.resolve(r) for r in run_ids))
        order: list[str] = []
        for rid in targets:  # check every run before deleting any
            below = list(self.descendants(rid))
            if below and not recursive and not set(below) <= set(targets):
                raise InputError(
                    f"run {rid} has {len(below)} descendant run(s) ({', '.join(below[:3])}"
                    f"{', …' if len(below) > 3 else ''}); delete them too with --recursive "
                    "(over HTTP: ?recursive=true)"
                )
            order.extend([rid, *below])
        # `descendants` lists each parent before its children, and a run named after one of its
        # ancestors is listed again under it: read backwards, each run's last place comes first,
        # so children come before their parents and an interrupted delete never leaves orphans
        # (and no run's ancestry is walked).
        return list(dict.fromkeys(reversed(order)))

    def delete_runs(self, run_ids: Iterable[str], recursive: bool = False) -> list[str]:
        """Forget runs, checked (`delete_plan`) before any is deleted; the ids deleted, in
        the order deleted."""
        order = self.delete_plan(run_ids, recursive)
        for rid in order:
            self._delete_run(rid)
        return order

    def close(self) -> None:  # noqa: B027 - most savers hold nothing to release
        """Release files and connections."""

    def __enter__(self) -> Saver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- helpers for a saver's `SaverType` (how it is built from a URI or a `state_saver` block)


def config_option(options: Any, key: str, type_name: str) -> str:
    """The non-empty string option `key` of a `state_saver` block (FlowError if missing)."""
    value = options.get(key)
    if not isinstance(value, str) or not value:
        raise FlowError(f"state_saver of type {type_name!r} needs a {key!r}")
    return value


def saver_file(text: str, base_dir: Path | None, type_name: str, create: bool = True) -> Path:
    """A saver's file: `~` expanded, relative to `base_dir`; InputError for a directory, or
    (with `create=False`: a command that only inspects state) for a file that is not there."""
    path = Path(os.path.expanduser(text))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        raise InputError(f"saver path {path} is a directory, not a {type_name} file")
    if not create and not path.exists():
        raise InputError(f"no {type_name} state file at {path} (nothing has been saved there)")
    return path


def uri_path(uri: str, base_dir: Path | None, type_name: str, create: bool = True) -> Path:
    """The file a `SCHEME:PATH` URI (or a bare path) names; `SCHEME://PATH` reads the same."""
    scheme, sep, rest = uri.strip().partition(":")
    if not sep or "/" in scheme or "." in scheme:  # a bare path such as runs.db
        rest = uri.strip()
    elif rest.startswith("//"):  # jsonl://rel/path, sqlite:///abs/path
        rest = rest[2:]
    if not rest:
        raise InputError(f"saver {uri!r} names no file: expected {type_name}:PATH")
    return saver_file(rest, base_dir, type_name, create)
