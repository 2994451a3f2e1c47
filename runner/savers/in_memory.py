"""A saver that keeps runs in this process's memory: the default, gone at exit."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, RunNotFound
from ..memory import steps_delta
from ..registry import SaverType
from .base import RunRecord, Saver, StepRecord, encode_json

__all__ = ["SAVER_TYPE", "InMemorySaver"]


# A run's fields that hold values of the flow (anything JSON can say): kept as JSON text, so
# they come back exactly as a durable saver would return them, and fresh at every read.
_JSON_FIELDS = frozenset({"inputs", "outputs", "usage"})


def _json_text(value: Any) -> str:
    if value is None:  # a run not finished yet, no usage yet: no encoder needed
        return "null"
    if type(value) is dict and not value:
        return "{}"
    return encode_json(value)


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _json_text(v) if k in _JSON_FIELDS else v for k, v in values.items()}


def _read(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) if k in _JSON_FIELDS else v for k, v in stored.items()}


class InMemorySaver(Saver):
    """Runs in a dict. Thread-safe; records are copied in and out, so callers can't alias them.

    Step records, and a run's inputs, outputs and usage, are kept as their JSON text (encoded
    once when saved, decoded when read), so a write costs one encoding and reads return
    fresh values, as a durable saver's do.
    """

    kind = "in_memory"
    blocking = False  # answers from a dict: no thread hop
    keeps_runs = False  # gone when the process ends

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, dict[str, Any]] = {}
        # run_id -> step_id -> (seq, step_id, the record as JSON text)
        self._steps: dict[str, dict[str, tuple[int, str, str]]] = {}

    def _run(self, run_id: str) -> dict[str, Any]:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(f"no run with id {run_id!r}") from None

    # -- writing -------------------------------------------------------------------------
    def start_run(self, run: RunRecord) -> None:
        """Record a new run, or mark an existing one running again (its steps and start time stay)."""
        header = _stored(run.to_dict(with_steps=False))
        self.forget_memory(run.run_id)
        with self._lock:
            old = self._runs.get(run.run_id)
            if old is not None:
                header["started_at"] = old["started_at"]
            self._runs[run.run_id] = header
            self._steps.setdefault(run.run_id, {})

    def save_step(self, run_id: str, step: StepRecord) -> None:
        """Record one finished step; a later record for the same step_id replaces it."""
        data = (step.seq, step.step_id, encode_json(step.to_dict()))
        self.forget_memory(run_id)
        with self._lock:
            self._run(run_id)
            self._steps[run_id][step.step_id] = data

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
        update = _stored({"status": status, "outputs": outputs, "error": error,
                          "usage": usage or {}, "ended_at": ended_at if ended_at is not None else time.time()})
        with self._lock:
            self._run(run_id).update(update)

    def _delete_run(self, run_id: str) -> None:
        """Forget a run and its steps."""
        self.forget_memory(run_id)
        with self._lock:
            self._run(run_id)
            del self._runs[run_id]
            self._steps.pop(run_id, None)

    # -- reading -------------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord:
        """The run with its steps. Raises RunNotFound."""
        with self._lock:
            data = _read(self._run(run_id))
            steps = sorted(self._steps.get(run_id, {}).values())
        data["steps"] = [json.loads(text) for _, _, text in steps]
        return RunRecord.from_dict(data)

    def list_runs(
        self, flow: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs without their steps, newest first."""
        with self._lock:
            rows = [
                r for r in self._runs.values()
                if (flow is None or r["flow_name"] == flow) and (status is None or r["status"] == status)
            ]
            rows.sort(key=lambda r: (r["started_at"], r["run_id"]), reverse=True)
            if limit is not None:
                rows = rows[: max(limit, 0)]
            return [RunRecord.from_dict(_read(r)) for r in rows]

    def children(self, run_id: str) -> list[str]:
        """Ids of the runs whose parent is `run_id`, oldest first."""
        with self._lock:
            return sorted(r["run_id"] for r in self._runs.values() if r["parent_id"] == run_id)

    def memory_delta(self, run_id: str) -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
        """(parent_id, the messages run `run_id` added per memory id)."""
        with self._lock:
            parent = self._run(run_id)["parent_id"]
            texts = [text for _, _, text in sorted(self._steps.get(run_id, {}).values())]
        return parent, steps_delta(StepRecord.from_dict(json.loads(t)) for t in texts)

    def _has_run(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._runs

    def _ids_with_prefix(self, prefix: str) -> list[str]:
        with self._lock:
            return [i for i in self._runs if i.upper().startswith(prefix.upper())]


def _from_uri(uri: str, base_dir: Path | None, create: bool = True) -> InMemorySaver:
    if uri.strip().partition(":")[2]:
        raise InputError(f"saver {uri!r}: memory takes no path")
    return InMemorySaver()


SAVER_TYPE = SaverType(
    cls=InMemorySaver,
    name="in_memory",
    aliases=("memory",),
    schemes=("memory", "in_memory"),
    from_config=lambda options, base_dir, create: InMemorySaver(),
    from_uri=_from_uri,
    uri_help="memory",
)
