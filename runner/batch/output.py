"""The output file of `timbal batch`: one JSON line per row, in row order, resumable.

Each line is ``{"row": N, <carried keys>, "run_id", "status", "outputs", "error"}``.
Lines are appended (and flushed) as rows finish, so a batch killed half-way keeps every
row it finished; running it again skips the rows whose line says `succeeded` and runs the
others. A resumed run appends its lines after the earlier ones, then puts the file back in
row order (the last line of a row wins) by merging its sorted segments into a new file
that replaces the old one atomically. Memory stays bounded however long the file: the
rows already done are one bit each, and the merge holds one line per segment.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["RowSet", "RowResult", "done_rows", "OutputWriter", "result_line", "sort_output", "RESULT_KEYS"]

#: The keys of an output line that are ours; a carried key with one of these names goes
#: under "carried" instead, so nothing of the row is lost.
RESULT_KEYS = ("row", "run_id", "status", "outputs", "error", "carried")
_SYNC_EVERY = 500  # lines; a flushed line survives the process being killed, fsync is for power loss


class RowSet:
    """A set of row numbers, one bit each."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, number: int) -> None:
        byte, bit = divmod(number, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1))
        if not self._bits[byte] >> bit & 1:
            self._bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        byte, bit = divmod(number, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


RowResult = dict[str, Any]


def result_line(number: int, carried: dict[str, Any], run_id: str | None, status: str,
                outputs: Any, error: str | None) -> RowResult:
    """The output line of a row (carried keys beside ours; a clashing name under `carried`)."""
    line: RowResult = {"row": number}
    clashing = {k: v for k, v in carried.items() if k in RESULT_KEYS}
    line.update({k: v for k, v in carried.items() if k not in RESULT_KEYS})
    if clashing:
        line["carried"] = clashing
    line.update({"run_id": run_id, "status": status, "outputs": outputs, "error": error})
    return line


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset, parsed line) of every readable line; a torn or damaged line is skipped."""
    with path.open("rb") as file:
        offset = 0
        for raw in file:
            start, offset = offset, offset + len(raw)
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("row"), int):
                yield start, data


def done_rows(path: Path) -> tuple[RowSet, RowSet]:
    """The rows the output file records as succeeded, and every row it has a line for."""
    done, written = RowSet(), RowSet()
    if not path.exists():
        return done, written
    for _, data in _lines(path):
        written.add(data["row"])
        if data.get("status") == "succeeded":
            done.add(data["row"])
    return done, written


class OutputWriter:
    """Appends result lines to the output file, each flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("ab")
        # A line torn by a crash: the next line starts on a line of its own.
        if self._file.tell() > 0:
            with path.open("rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":
                    self._file.write(b"\n")
        self._unsynced = 0

    def write(self, line: RowResult) -> None:
        self._file.write(json.dumps(line, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
        self._file.flush()
        self._unsynced += 1
        if self._unsynced >= _SYNC_EVERY:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def _segments(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the file's runs of lines in increasing row order."""
    bounds: list[tuple[int, int]] = []
    start, last = 0, None
    for offset, data in _lines(path):
        row = data["row"]
        if last is not None and row <= last:
            bounds.append((start, offset))
            start = offset
        last = row
    bounds.append((start, path.stat().st_size))
    return bounds


def _segment_lines(path: Path, start: int, end: int, rank: int) -> Iterator[tuple[int, int, bytes]]:
    with path.open("rb") as file:
        file.seek(start)
        while file.tell() < end:
            raw = file.readline()
            if not raw:
                break
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("row"), int):
                yield data["row"], rank, raw if raw.endswith(b"\n") else raw + b"\n"


def sort_output(path: Path) -> bool:
    """Put the output file in row order, one line per row (a later line of a row replaces an
    earlier one). True when the file was rewritten; False when it was in order already."""
    if not path.exists():
        return False
    segments = _segments(path)
    if len(segments) <= 1:
        return False
    merged = heapq.merge(*(_segment_lines(path, s, e, rank) for rank, (s, e) in enumerate(segments)))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        pending: tuple[int, int, bytes] | None = None
        for item in merged:  # sorted by (row, rank): the last of equal rows is the newest
            if pending is not None and pending[0] != item[0]:
                out.write(pending[2])
            pending = item
        if pending is not None:
            out.write(pending[2])
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return True
