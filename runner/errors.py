"""Every error the runner raises, in one hierarchy, and the one formatter that shows them.

Errors about a flow file carry a `Location` (file, line, column; 1-based) and are
printed like a compiler's: ``flow.yaml:12:7: error: message`` followed by the
offending line with a caret under the column.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .status import ExitCode

__all__ = [
    "WaitingForAnswer",
    "Location",
    "Diagnostic",
    "TimbalError",
    "FlowError",
    "InputError",
    "RunError",
    "StepError",
    "ProviderError",
    "SaverError",
    "RunNotFound",
    "did_you_mean",
    "format_diagnostic",
]


@dataclass(frozen=True)
class Location:
    """A place in a source file: 1-based line and column."""

    path: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a flow: a message, where it is, and an optional hint."""

    message: str
    location: Location | None = None
    severity: str = "error"
    hint: str | None = None

    def headline(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.severity}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """As JSON data (`timbal validate --json`, `GET /flows`): file, line, col, message."""
        loc = self.location
        return {
            "file": loc.path if loc else None,
            "line": loc.line if loc else None,
            "col": loc.col if loc else None,
            "message": self.message,
        }


class TimbalError(Exception):
    """Base class of every error the runner raises on purpose."""

    exit_code: int = ExitCode.FAILED


class FlowError(TimbalError):
    """A flow file (or builder spec) is invalid. Carries every diagnostic found, in order."""

    exit_code: int = ExitCode.INVALID

    def __init__(
        self,
        diagnostics: Sequence[Diagnostic] | str,
        sources: dict[str, str] | None = None,
    ) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics)]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        # Source text by path, so the formatter can show code frames for text that is not on disk.
        self.sources: dict[str, str] = dict(sources or {})
        super().__init__(self.format(color=False, frames=False))

    def format(self, color: bool = False, frames: bool = True) -> str:
        """All diagnostics, each with its code frame, as a compiler prints them."""
        # Each file split (or read) once for all diagnostics in it.
        lines_of = functools.cache(lambda path: _source_lines(path, self.sources))
        parts = [_format(d, lines_of, color, frames) for d in self.diagnostics]
        if frames and len(self.diagnostics) > 1:
            parts.append(f"{len(self.diagnostics)} errors")
        return "\n".join(parts)


class InputError(FlowError):
    """The inputs given to a run do not match the flow's declared inputs."""


class RunError(TimbalError):
    """A run could not be carried out (failed step, missing parent run, ...)."""

    exit_code: int = ExitCode.FAILED


class StepError(RunError):
    """A step failed. `step_id` names it; the message is the step's own."""

    def __init__(self, message: str, step_id: str | None = None) -> None:
        self.step_id = step_id
        #: What the step spent before it failed (tokens, an agent's tool trace), kept in its record.
        self.usage: dict[str, Any] = {}
        super().__init__(message)


class ProviderError(StepError):
    """A model provider call failed. `retryable` says whether trying again can help."""

    def __init__(
        self,
        message: str,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        super().__init__(message)


class WaitingForAnswer(RunError):
    """A step needs a person's answer: the run pauses as `waiting` (not an error of the run).

    `question` is `{"step_id", "prompt", "schema"}` for an `input` step; None when the step
    only waits because a step inside it (a map item, a loop iteration) does.
    """

    def __init__(self, question: dict[str, Any] | None = None) -> None:
        super().__init__("waiting for an answer")
        self.question = question


class SaverError(TimbalError):
    """The state saver cannot read or write its store. `run_id`: the run whose write failed
    (set by the engine; that run can be resumed once the store is back)."""

    exit_code: int = ExitCode.FAILED
    run_id: str | None = None


class RunNotFound(SaverError):
    """No run with that id (or unique id prefix) exists in the saver."""

    exit_code: int = ExitCode.INVALID


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to `word`, or None when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _source_lines(path: str, sources: dict[str, str]) -> list[str] | None:
    """The lines of `path`: from `sources`, else read now (never kept: the file may be edited)."""
    if path in sources:
        return sources[path].splitlines()
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def format_diagnostic(
    diag: Diagnostic, sources: dict[str, str] | None = None, color: bool = False, frame: bool = True
) -> str:
    """``path:line:col: error: message``, then the line and a caret under the column."""
    return _format(diag, lambda path: _source_lines(path, sources or {}), color, frame)


#: The widest source line a code frame shows; longer lines are cut around the caret.
FRAME_WIDTH = 120


def _around(text: str, col: int) -> tuple[str, int]:
    """`text` cut to FRAME_WIDTH characters around 1-based column `col` (marked `…` where
    cut), and the caret's column in what is shown: a 200,000-character line stays one line."""
    if len(text) <= FRAME_WIDTH:
        return text, col
    start = max(0, min(col - 1 - FRAME_WIDTH // 2, len(text) - FRAME_WIDTH))
    end = start + FRAME_WIDTH
    shown = ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")
    return shown, col - start + (1 if start > 0 else 0)


def _format(diag: Diagnostic, lines_of: Callable[[str], list[str] | None], color: bool, frame: bool) -> str:
    red, bold, dim, reset = ("\x1b[31m", "\x1b[1m", "\x1b[2m", "\x1b[0m") if color else ("",) * 4
    loc = diag.location
    head = f"{bold}{loc}: {reset}" if loc else ""
    out = [f"{head}{red}{bold}{diag.severity}:{reset} {diag.message}"]
    if frame and loc is not None:
        lines = lines_of(loc.path)
        if lines is not None and 1 <= loc.line <= len(lines):
            text, col = _around(lines[loc.line - 1].replace("\t", " "), max(loc.col, 1))
            gutter = f"{loc.line:>5} | "
            out.append(f"{dim}{gutter}{reset}{text}")
            out.append(" " * (len(gutter) - 2) + "| " + " " * (col - 1) + f"{red}^{reset}")
    if diag.hint:
        out.append(f"  hint: {diag.hint}")
    return "\n".join(out)
