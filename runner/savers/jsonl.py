"""A saver that keeps runs in one human-readable, append-only JSON Lines file.

Each line is one event, written whole and fsynced before `save_step` returns (a
`run_started` line is not fsynced on its own: the run's first step line, or its
`run_finished` line, is fsynced right after it in the same file, which covers it):

    {"event":"run_started","run_id":"01J…","parent_id":null,"flow_name":"chat",…}
    {"event":"step","run_id":"01J…","step_id":"chat","status":"succeeded","messages":{…},…}
    {"event":"run_finished","run_id":"01J…","status":"succeeded","outputs":{…},…}
    {"event":"run_deleted","run_id":"01J…","at":1718000000.0}

A later `step` line for the same step_id replaces the earlier one (resume); a later
`run_started` line for the same run marks it running again.

Beside the file, `PATH.idx` indexes it: a header line, then one compact JSON array per
data line with its byte offset and length (and, for run lines, what `list_runs` filters
on). Readers seek to a run's own lines instead of scanning the file, so loading a run's
memory reads its ancestry and nothing else. The index is derived data: it is brought up
to date from the data file when it falls behind (a writer killed between the two
writes), and rebuilt when it does not match it (deleted, truncated, file replaced).

Several processes may append at once: every write holds an exclusive `flock` on the
data file (readers a shared one). A line torn by a crash is skipped with a warning; the
next writer ends it with a newline first, so it never merges with a good record. A write
that fails (a full disk) is cut back off the file, so it leaves no torn line behind.

Damage anywhere else (a line garbled or cut short in the middle of the file) costs that
line only: it is indexed as damaged, skipped, and named in a warning by every command
that reads the file (once per command), with the run and step it held when they can
still be read. A run whose opening line is lost keeps its steps; it is shown with an
unknown parent and flow, so its descendants still load and can be continued.

A store we may not write (a read-only folder or file) can still be read: when the index
cannot be written, it is kept in memory for this process only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunNotFound, SaverError
from ..memory import join_deltas, steps_delta
from ..registry import SaverType
from .base import (
    RunRecord,
    Saver,
    StepRecord,
    config_option,
    encode_json,
    saver_file,
    uri_path,
)

__all__ = ["SAVER_TYPE", "JSONLSaver", "INDEX_SUFFIX"]

INDEX_SUFFIX = ".idx"
_INDEX_VERSION = 1
_Span = tuple[int, int]  # (byte offset, length) of one line in the data file
# What a damaged line still says about itself, for the warning that names it.
_FIELD = re.compile(rb'"(event|run_id|step_id)":"([^"\\]{1,200})"')
# Index entry kinds: r run_started, s step, f run_finished, d run_deleted, x a damaged line,
# t a line torn by a write that never finished (nothing it held had been saved yet).
_UNREADABLE = frozenset({"x", "t"})
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


class _StaleIndex(Exception):
    """An indexed offset does not hold the line the index says it does."""


@dataclass
class _RunEntry:
    parent_id: str | None
    flow_name: str
    started_at: float
    status: str
    header: list[_Span] = field(default_factory=list)  # run_started / run_finished lines
    steps: list[_Span] = field(default_factory=list)
    opened: bool = True  # False: its run_started line is damaged (parent and flow unknown)


class JSONLSaver(Saver):
    """Runs in one append-only JSONL file, with a sidecar byte-offset index (`PATH.idx`)."""

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.index_path = self.path.with_name(self.path.name + INDEX_SUFFIX)
        self._lock = threading.RLock()
        self._fd = -1
        self._pid = -1
        self._writable = True
        self._memory_index = False  # the index file cannot be written: kept in memory only
        self._open()
        self._reset()
        self._torn: _Span | None = None  # the torn tail already warned about
        self._warned: set[int] = set()  # offsets of bad lines already warned about

    # -- files ---------------------------------------------------------------------------
    def _open(self) -> None:
        created = not self.path.exists()
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, flags, 0o600)
        except PermissionError:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                raise SaverError(f"cannot open state file {self.path}: {exc.strerror}") from exc
            self._writable = False
        except OSError as exc:
            raise SaverError(f"cannot open state file {self.path}: {exc.strerror}") from exc
        self._pid = os.getpid()
        if created:
            _fsync_dir(self.path.parent)

    def _reset(self) -> None:
        self._runs: dict[str, _RunEntry] = {}
        self._deleted: set[str] = set()
        self._idx_ino: int | None = None
        self._idx_pos = 0  # bytes of the index file applied to self._runs
        self._data_end = 0  # end of the last data line the index covers
        self._last: tuple[int, int, str | None] | None = None  # that line: offset, length, run

    def close(self) -> None:
        """Close the data file."""
        with self._lock:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = -1

    @contextmanager
    def _current(self, write: bool = False, rebuild: bool = False) -> Iterator[None]:
        """Hold the file lock (shared to read, exclusive to write) with the index up to date."""
        with self._lock:
            if self._fd < 0:
                raise SaverError(f"state file {self.path} is closed")
            if self._pid != os.getpid():  # forked: a shared file description would share the lock
                self._open()
                self._reset()
            if write and not self._writable:
                raise SaverError(f"state file {self.path} is read-only")
            exclusive = write or rebuild
            while True:
                fcntl.flock(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                try:
                    if rebuild:
                        self._rebuild()
                        ready = True
                    else:
                        ready = self._refresh(repair=exclusive)
                except BaseException:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    raise
                if ready:
                    break
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                exclusive = True  # repairing the index needs the exclusive lock
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read(self, fn: Any) -> Any:
        """Call `fn` with the index current; rebuild the index once if it points at wrong lines."""
        try:
            with self._current():
                return fn()
        except _StaleIndex:
            pass
        with self._current(rebuild=True):
            try:
                return fn()
            except _StaleIndex as exc:
                raise SaverError(f"state file {self.path} changed while being read") from exc

    # -- the index -----------------------------------------------------------------------
    def _refresh(self, repair: bool) -> bool:
        """Apply what the index gained since last time. False when it needs a repair first."""
        data_size = os.fstat(self._fd).st_size
        if self._memory_index:
            return self._refresh_in_memory(data_size)
        try:
            ifd = os.open(self.index_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            if data_size == 0 and not repair:
                self._reset()
                return True
            return self._repair(repair, rebuild=True)
        try:
            st = os.fstat(ifd)
            if st.st_ino != self._idx_ino or st.st_size < self._idx_pos:
                self._reset()
                self._idx_ino = st.st_ino
            chunk = os.pread(ifd, st.st_size - self._idx_pos, self._idx_pos)
        finally:
            os.close(ifd)
        end = chunk.rfind(b"\n") + 1
        if end != len(chunk):  # a writer died mid-line: the index is derived data, rebuild it
            return self._repair(repair, rebuild=True)
        lines = chunk[:end].splitlines()
        try:
            if self._idx_pos == 0:  # the header: which data file (inode) this index describes
                head = json.loads(lines.pop(0)) if lines else {}
                if head.get("timbal_jsonl_index") != _INDEX_VERSION or head.get("ino") != (
                    os.fstat(self._fd).st_ino
                ):
                    return self._repair(repair, rebuild=True)
            for line in lines:
                self._apply(json.loads(line))
        except (ValueError, TypeError, IndexError, KeyError):
            return self._repair(repair, rebuild=True)
        self._idx_pos += end
        if data_size < self._data_end:  # truncated or replaced
            return self._repair(repair, rebuild=True)
        if data_size > self._data_end:  # a writer died between its data line and index line
            if self._torn == (self._data_end, data_size):
                return True  # a torn tail we already know about: nothing new to index
            if not self._last_line_matches():  # rewritten, not appended to
                return self._repair(repair, rebuild=True)
            return self._repair(repair, rebuild=False)
        return True

    def _refresh_in_memory(self, data_size: int) -> bool:
        """The in-memory index brought up to date from the data file (no index file)."""
        if data_size < self._data_end or not self._last_line_matches():
            self._reset()
        if data_size > self._data_end:
            for entry in self._scan(self._data_end):
                self._apply(entry)
        return True

    def _last_line_matches(self) -> bool:
        """Whether the last indexed line is still where the index says (cheap staleness check)."""
        if self._last is None:
            return self._data_end == 0
        offset, length, run_id = self._last
        raw = os.pread(self._fd, length, offset)
        try:
            return raw.endswith(b"\n") and (run_id is None or json.loads(raw)["run_id"] == run_id)
        except (ValueError, TypeError, KeyError):
            return False

    def _repair(self, allowed: bool, rebuild: bool) -> bool:
        if not allowed:
            return False
        if rebuild:
            self._rebuild()
        else:
            self._write_index(self._scan(self._data_end))
        return True

    def _rebuild(self) -> None:
        """Write a new index for the whole data file (under the exclusive lock)."""
        self._reset()
        entries = self._scan(0)
        head = {"timbal_jsonl_index": _INDEX_VERSION, "ino": os.fstat(self._fd).st_ino}
        text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in [head, *entries])
        tmp = self.index_path.with_name(f"{self.index_path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, text.encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.index_path)
            self._idx_ino = os.stat(self.index_path).st_ino
        except OSError as exc:
            _remove_quietly(tmp)
            if exc.errno not in _NOT_WRITABLE:
                raise SaverError(f"cannot write index {self.index_path}: {exc.strerror}") from exc
            self._memory_index = True  # derived data: this process keeps it in memory instead
        for entry in entries:
            self._apply(entry)
        self._idx_pos = len(text.encode())

    def _scan(self, start: int) -> list[list[Any]]:
        """Index entries for the complete data lines from byte `start` to the end of the file."""
        entries: list[list[Any]] = []
        offset = start
        with open(self.path, "rb") as f:
            f.seek(start)
            for line in f:
                if not line.endswith(b"\n"):
                    if self._torn != (offset, offset + len(line)):
                        self._torn = (offset, offset + len(line))
                        warnings.warn(
                            f"{self.path}: skipping a torn last line at byte {offset} "
                            "(a write that never finished: the process was killed mid-write)",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    break
                entries.append(self._entry_for(line, offset))
                offset += len(line)
        return entries

    def _entry_for(self, line: bytes, offset: int, event: Any = None) -> list[Any]:
        """The index entry of a data line (`event`: the line's JSON, when already at hand)."""
        span = [offset, len(line)]
        try:
            if event is None:
                event = json.loads(line)
            kind, run_id = event["event"], event["run_id"]
            if kind == "run_started":
                return ["r", *span, run_id, event.get("parent_id"), event["flow_name"],
                        float(event["started_at"]), event.get("status", "running")]
            if kind == "step":
                return ["s", *span, run_id]
            if kind == "run_finished":
                return ["f", *span, run_id, event["status"]]
            if kind == "run_deleted":
                return ["d", *span, run_id]
            raise ValueError(f"unknown event {kind!r}")
        except (ValueError, TypeError, KeyError, AttributeError):
            return ["x", *span, None, _what_it_held(line)]

    def _write_index(self, entries: list[list[Any]]) -> None:
        """Append entries to the index file and apply them (under the exclusive lock)."""
        if not entries:
            return
        data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()
        if not self._memory_index:
            try:
                fd = os.open(self.index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)
            except OSError as exc:
                if exc.errno not in _NOT_WRITABLE:
                    raise SaverError(f"cannot write index {self.index_path}: {exc.strerror}") from exc
                # Derived data: this process keeps it in memory; the next one rebuilds the file.
                self._memory_index = True
        for entry in entries:
            self._apply(entry)
        if not self._memory_index:
            self._idx_pos += len(data)

    def _apply(self, entry: list[Any]) -> None:
        kind, offset, length = entry[0], int(entry[1]), int(entry[2])
        if offset + length >= self._data_end:
            self._data_end = offset + length
            self._last = (offset, length, None if kind in _UNREADABLE else entry[3])
        if kind in _UNREADABLE:
            if kind == "x":
                self._name_damage(offset, length, entry[4] if len(entry) > 4 else None)
            return
        run_id, span = entry[3], (offset, length)
        run = self._runs.get(run_id)
        if kind == "r":
            parent_id, flow_name, started_at, status = entry[4:8]
            if run is None:
                self._runs[run_id] = _RunEntry(parent_id, flow_name, started_at, status, [span])
            else:  # resumed: same run, running again; its steps and start time stay
                if not run.opened:  # its first opening line was damaged; this one is whole
                    run.started_at, run.opened = started_at, True
                run.parent_id, run.flow_name, run.status = parent_id, flow_name, status
                run.header.append(span)
            return
        if kind == "d":
            self._runs.pop(run_id, None)
            self._deleted.add(run_id)
            return
        if run is None:
            if run_id in self._deleted:
                return  # a late line of a deleted run
            # Its run_started line is damaged: keep what the run saved, parent unknown.
            run = self._runs[run_id] = _RunEntry(None, "", 0.0, "running", opened=False)
        if kind == "s":
            run.steps.append(span)
        elif kind == "f":
            run.status = entry[4]
            run.header.append(span)
        else:
            raise ValueError(kind)

    def _name_damage(self, offset: int, length: int, held: str | None) -> None:
        """Warn, once per saver, that the damaged line at `offset` was skipped, and what it held."""
        if offset in self._warned:
            return
        self._warned.add(offset)
        what = f": it held {held}" if held else ""
        warnings.warn(
            f"{self.path}: skipping a damaged line at byte {offset} ({length} bytes){what}",
            RuntimeWarning,
            stacklevel=2,
        )

    # -- the data ------------------------------------------------------------------------
    def _append(
        self, event: dict[str, Any], must_exist: str | None = None, durable: bool = True
    ) -> None:
        """Write one event line (fsynced unless `durable` is false) and index it."""
        line = (encode_json(event) + "\n").encode()
        with self._current(write=True):
            if must_exist is not None and must_exist not in self._runs:
                raise RunNotFound(f"no run with id {must_exist!r}")
            start = size = os.fstat(self._fd).st_size
            entries: list[list[Any]] = []
            try:
                if size > self._data_end:  # a torn line: end it so it never merges with ours
                    _write_all(self._fd, b"\n")
                    entries.append(["t", self._data_end, size + 1 - self._data_end])
                    size += 1
                _write_all(self._fd, line)
                if durable:
                    os.fsync(self._fd)
            except OSError as exc:
                self._cut_back(start)
                raise SaverError(f"cannot write to state file {self.path}: {exc.strerror or exc}") from exc
            self._torn = None
            entries.append(self._entry_for(line, size, event))
            self._write_index(entries)

    def _cut_back(self, size: int) -> None:
        """Remove what a failed write left after byte `size`, so no torn line stays behind."""
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError:
            pass  # then the next reader skips it as a torn line
    def _line(self, span: _Span, run_id: str) -> dict[str, Any]:
        raw = os.pread(self._fd, span[1], span[0])
        try:
            event = json.loads(raw)
        except ValueError:
            raise _StaleIndex(span) from None
        if not raw.endswith(b"\n") or not isinstance(event, dict) or event.get("run_id") != run_id:
            raise _StaleIndex(span)
        return event

    def _entry(self, run_id: str) -> _RunEntry:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(f"no run with id {run_id!r}") from None

    def _header(self, run_id: str, entry: _RunEntry) -> dict[str, Any]:
        header: dict[str, Any] = {}
        if not entry.opened:  # what its damaged run_started line held is unknown
            header = {"run_id": run_id, "parent_id": None, "flow_name": "?", "flow_path": None,
                      "flow_hash": "", "started_at": entry.started_at,
                      "error": "its opening record is damaged: parent, flow and inputs unknown"}
        for span in sorted(entry.header):
            event = self._line(span, run_id)
            kind = event.pop("event")
            if kind == "run_started":
                started = header.get("started_at")
                header = event
                if started is not None:
                    header["started_at"] = started
            elif kind == "run_finished":
                header.update(event)
            else:
                raise _StaleIndex(span)
        return header

    def _steps(self, run_id: str, entry: _RunEntry) -> list[StepRecord]:
        steps: dict[str, StepRecord] = {}
        for span in sorted(entry.steps):
            event = self._line(span, run_id)
            if event.get("event") != "step":
                raise _StaleIndex(span)
            step = StepRecord.from_dict(event)
            steps[step.step_id] = step
        return sorted(steps.values(), key=lambda s: (s.seq, s.step_id))

    # -- writing -------------------------------------------------------------------------
    def start_run(self, run: RunRecord) -> None:
        """Record a new run, or mark an existing one running again (its steps and start time stay).

        Not fsynced: the run's next line (its first step, or its end) is, and that fsync of
        the file covers this line too. A power cut before then loses a run that saved
        nothing yet; a process crash (even kill -9) loses nothing.
        """
        self.forget_memory(run.run_id)
        self._append({"event": "run_started", **run.to_dict(with_steps=False)}, durable=False)

    def save_step(self, run_id: str, step: StepRecord) -> None:
        """Durably record one finished step; a later record for the same step_id replaces it."""
        self.forget_memory(run_id)
        self._append({"event": "step", "run_id": run_id, **step.to_dict()}, must_exist=run_id)

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
        event = {"event": "run_finished", "run_id": run_id, "status": status, "outputs": outputs,
                 "error": error, "usage": usage or {},
                 "ended_at": ended_at if ended_at is not None else time.time()}
        self._append(event, must_exist=run_id)

    def _delete_run(self, run_id: str) -> None:
        """Forget a run: a `run_deleted` line; its old lines stay in the file but are unindexed."""
        self.forget_memory(run_id)
        self._append({"event": "run_deleted", "run_id": run_id, "at": time.time()},
                     must_exist=run_id)

    # -- reading -------------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord:
        """The run with its steps, read from its own lines. Raises RunNotFound."""

        def read() -> RunRecord:
            entry = self._entry(run_id)
            record = RunRecord.from_dict(self._header(run_id, entry))
            record.steps = self._steps(run_id, entry)
            return record

        result: RunRecord = self._read(read)
        return result

    def list_runs(
        self, flow: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs without their steps, newest first; reads only the listed runs' own lines."""

        def read() -> list[RunRecord]:
            picked = [
                (e.started_at, rid) for rid, e in self._runs.items()
                if (flow is None or e.flow_name == flow) and (status is None or e.status == status)
            ]
            picked.sort(reverse=True)
            if limit is not None:
                picked = picked[: max(limit, 0)]
            return [RunRecord.from_dict(self._header(rid, self._runs[rid])) for _, rid in picked]

        result: list[RunRecord] = self._read(read)
        return result

    def children(self, run_id: str) -> list[str]:
        """Ids of the runs whose parent is `run_id`, oldest first (from the index alone)."""
        with self._current():
            return sorted(rid for rid, e in self._runs.items() if e.parent_id == run_id)

    def _load_memory(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """The memory at the end of `run_id`: its ancestors' step lines, under one lock."""

        def read() -> dict[str, list[dict[str, Any]]]:
            chain: list[str] = []
            seen: set[str] = set()
            current: str | None = run_id
            while current is not None:
                if current in seen:
                    raise SaverError(f"run {current} is its own ancestor")
                seen.add(current)
                chain.append(current)
                current = self._entry(current).parent_id
            return join_deltas(steps_delta(self._steps(rid, self._runs[rid])) for rid in reversed(chain))

        result: dict[str, list[dict[str, Any]]] = self._read(read)
        return result

    def memory_delta(self, run_id: str) -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
        """(parent_id, the messages run `run_id` added): reads that run's step lines only."""

        def read() -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
            entry = self._entry(run_id)
            return entry.parent_id, steps_delta(self._steps(run_id, entry))

        result: tuple[str | None, dict[str, list[dict[str, Any]]]] = self._read(read)
        return result

    def _has_run(self, run_id: str) -> bool:
        with self._current():
            return run_id in self._runs

    def _ids_with_prefix(self, prefix: str) -> list[str]:
        with self._current():
            return [rid for rid in self._runs if rid.upper().startswith(prefix.upper())]


def _what_it_held(line: bytes) -> str | None:
    """What a damaged line still shows of itself: its event, run id and step id, if legible."""
    found: dict[str, str] = {}
    for key, value in _FIELD.findall(line[:4096]):
        found.setdefault(key.decode(), value.decode("utf-8", "replace"))
    if "run_id" not in found:
        return None
    what = {"step": "a step record", "run_started": "the opening record",
            "run_finished": "the closing record", "run_deleted": "the deletion"}.get(
        found.get("event", ""), "a record")
    step = f" (step '{found['step_id']}')" if "step_id" in found else ""
    return f"{what}{step} of run {found['run_id']}"


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    """Make a new file's directory entry durable too."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


SAVER_TYPE = SaverType(
    cls=JSONLSaver,
    name="jsonl",
    schemes=("jsonl",),
    suffixes=(".jsonl", ".ndjson"),
    from_config=lambda options, base_dir, create: JSONLSaver(
        saver_file(config_option(options, "path", "jsonl"), base_dir, "jsonl", create)
    ),
    from_uri=lambda uri, base_dir, create: JSONLSaver(uri_path(uri, base_dir, "jsonl", create)),
    uri_help="jsonl:PATH",
)
