"""What every side's worker shares: the echo reply, timers, file sizes, memory readings.

Standard library only: this module is imported by our side (the project's venv) and by the
rivals' side (the rivals' venv, where `runner` and its dependencies are not installed).
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

# The prompts of the 3-step flow, the same for every side.
PROMPTS_3 = ("{prompt}", "again", "once more")
LITELLM_MODEL = "openai/fake"
LITELLM_KEY = "sk-test"


def content_text(content: Any) -> str:
    """The text of an OpenAI message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def echo_reply(messages: list[dict[str, Any]]) -> tuple[str, dict[str, int]]:
    """What our built-in `echo` model answers, and its usage: the rivals' nodes call this.

    ``echo (N messages): LAST USER MESSAGE``; tokens are whitespace-separated words.
    """
    n = len(messages)
    last = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            last = content_text(message.get("content"))
            break
    text = f"echo ({n} message{'' if n == 1 else 's'}): {last}"
    prompt_tokens = sum(len(content_text(m.get("content")).split()) for m in messages)
    completion_tokens = len(text.split())
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return text, usage


def summarize(seconds: list[float]) -> dict[str, float]:
    """Per-run figures in microseconds from a list of per-run durations in seconds."""
    if not seconds:
        return {}
    return {
        "median_us": statistics.median(seconds) * 1e6,
        "mean_us": statistics.fmean(seconds) * 1e6,
        "min_us": min(seconds) * 1e6,
        "runs": len(seconds),
    }


def timed_sync(fn: Callable[[], Any], warmup: int, runs: int) -> list[float]:
    """Call `fn` `warmup` times untimed, then `runs` times, each timed alone."""
    for _ in range(warmup):
        fn()
    gc.collect()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


async def timed_async(fn: Callable[[], Awaitable[Any]], warmup: int, runs: int) -> list[float]:
    """Await `fn()` `warmup` times untimed, then `runs` times, each timed alone."""
    for _ in range(warmup):
        await fn()
    gc.collect()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def files_size(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Total size in bytes of the files that exist among `paths`."""
    total = 0
    for path in paths:
        try:
            total += Path(path).stat().st_size
        except FileNotFoundError:
            pass
    return total


def sqlite_files(path: str | os.PathLike[str]) -> list[str]:
    """A SQLite database and its WAL (the shared-memory index is a fixed-size cache)."""
    return [str(path), f"{path}-wal", f"{path}-journal"]


def rss_mb() -> float:
    """The current resident set size of this process, in MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    """The peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sqlite_logical_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of every value in every table of a SQLite file: what it stores, free of page noise.

    File sizes of a WAL database move in pages and WAL checkpoints, which hides a per-turn
    growth of a kilobyte; the sum of the stored values does not. Read on its own connection.
    """
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        total = 0
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            if not cols:
                continue
            expr = " + ".join(f'COALESCE(LENGTH(CAST("{c}" AS BLOB)), 0)' for c in cols)
            total += conn.execute(f'SELECT COALESCE(SUM({expr}), 0) FROM "{table}"').fetchone()[0]
        return int(total)
    finally:
        conn.close()


WINDOW = 9


class TurnLog:
    """Per-turn time of a long conversation, and the store's size at chosen turns.

    Time per turn at turn k is the median of the `WINDOW` turns ending at k; bytes per turn
    at k is the growth of the store over those turns divided by their number.
    """

    def __init__(self, marks: list[int]) -> None:
        self.marks = marks
        self.probes = {k - WINDOW for k in marks} | set(marks)
        self.seconds: list[float] = []
        self.sizes: dict[int, int] = {}

    def wants_size(self, turn: int) -> bool:
        """Whether to read the store's size after `turn` (0 = before the first turn)."""
        return turn in self.probes

    def add(self, seconds: float) -> None:
        """Record the time of the next turn (turns are numbered from 1)."""
        self.seconds.append(seconds)

    def size(self, turn: int, nbytes: int) -> None:
        """Record the store's size after `turn`."""
        self.sizes[turn] = nbytes

    def figures(self) -> dict[str, Any]:
        """ms@K, bytes_per_turn@K and size@K at each mark reached, plus totals."""
        done = len(self.seconds)
        out: dict[str, Any] = {"turns": done}
        for k in self.marks:
            if k > done:
                continue
            out[f"ms@{k}"] = statistics.median(self.seconds[k - WINDOW : k]) * 1e3
            if k in self.sizes and k - WINDOW in self.sizes:
                out[f"bytes_per_turn@{k}"] = (self.sizes[k] - self.sizes[k - WINDOW]) / WINDOW
                out[f"size@{k}"] = self.sizes[k]
        if done:
            out["ms@last"] = statistics.median(self.seconds[-WINDOW:]) * 1e3
            out["total_s"] = sum(self.seconds)
        return out


def turn_marks(turns: int) -> list[int]:
    """The turns a conversation reports on: 10, 100, 1,000 (and its last turn when shorter)."""
    marks = [t for t in (10, 100, 1000) if t <= turns]
    if turns not in marks and turns > WINDOW:
        marks.append(turns)
    return marks


def expected_turn_answer(turn: int) -> str:
    """What the echo model answers at `turn` of a one-step conversation."""
    return f"echo ({2 * turn - 1} message{'' if turn == 1 else 's'}): turn {turn}"


def check_turn(turn: int, answer: Any) -> None:
    """Fail loudly when a side's conversation lost or duplicated history."""
    if str(answer) != expected_turn_answer(turn):
        raise RuntimeError(f"turn {turn}: answer {answer!r}, wanted {expected_turn_answer(turn)!r}")


def converse(
    turn: Callable[[int], Any],
    turns: int,
    size: Callable[[], int] | None = None,
    budget_s: float = float("inf"),
) -> dict[str, Any]:
    """Run `turn(1..turns)` (each returns the answer), timing each; stop early past `budget_s`."""
    log = TurnLog(turn_marks(turns))
    if size is not None and log.wants_size(0):
        log.size(0, size())
    started = time.perf_counter()
    for k in range(1, turns + 1):
        t0 = time.perf_counter()
        answer = turn(k)
        log.add(time.perf_counter() - t0)
        check_turn(k, answer)
        if size is not None and log.wants_size(k):
            log.size(k, size())
        if time.perf_counter() - started > budget_s:
            break
    out = log.figures()
    out["budget_hit"] = len(log.seconds) < turns
    return out


async def aconverse(
    turn: Callable[[int], Awaitable[Any]],
    turns: int,
    size: Callable[[], int] | None = None,
    budget_s: float = float("inf"),
) -> dict[str, Any]:
    """`converse` for an async `turn`."""
    log = TurnLog(turn_marks(turns))
    if size is not None and log.wants_size(0):
        log.size(0, size())
    started = time.perf_counter()
    for k in range(1, turns + 1):
        t0 = time.perf_counter()
        answer = await turn(k)
        log.add(time.perf_counter() - t0)
        check_turn(k, answer)
        if size is not None and log.wants_size(k):
            log.size(k, size())
        if time.perf_counter() - started > budget_s:
            break
    out = log.figures()
    out["budget_hit"] = len(log.seconds) < turns
    return out
