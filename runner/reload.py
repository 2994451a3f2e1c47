"""Hot reload's library part: which of a flow's files changed, and stale bytecode of edited
python modules. `timbal run --watch`, `timbal chat` and `timbal serve` all use it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

from .steps.python import file_stamp

__all__ = ["FileStamps", "forget_bytecode", "STEP_MS", "DEBOUNCE_MS", "POLL_MS"]

# Milliseconds: group changes arriving less than STEP_MS apart (an editor's save is often
# several writes), yet yield after DEBOUNCE_MS at most; poll the stamps every POLL_MS.
STEP_MS = 30
DEBOUNCE_MS = 1000
POLL_MS = 500


Stamp = tuple[int, int] | None


class FileStamps:
    """The (mtime, size) of a set of files at one moment; tells which changed since."""

    def __init__(self, paths: Iterable[Path], earlier: FileStamps | None = None) -> None:
        self.paths: frozenset[Path] = frozenset(Path(os.path.realpath(p)) for p in paths)
        known = earlier._stamps if earlier is not None else {}
        # Files `earlier` knew keep the stamp it took; the others are stamped now.
        self._stamps: dict[Path, Stamp] = {p: known[p] if p in known else file_stamp(p) for p in self.paths}
        self.names: frozenset[str] = frozenset(str(p) for p in self.paths)

    @property
    def folders(self) -> frozenset[Path]:
        """The folders that hold the files (watched instead of the files themselves)."""
        return frozenset(p.parent for p in self.paths if p.parent.is_dir())

    def changed(self) -> list[Path]:
        """The files whose stamp differs from when this snapshot was taken, sorted."""
        return sorted(p for p in self.paths if file_stamp(p) != self._stamps[p])


def forget_bytecode(paths: Iterable[Path]) -> None:
    """Remove the cached bytecode of edited python modules.

    Python checks a .pyc against its source's mtime in whole seconds and its size, so an
    edit within the same second that keeps the size would load the old code on re-import.
    """
    for path in paths:
        if path.suffix != ".py":
            continue
        try:
            Path(importlib.util.cache_from_source(str(path))).unlink(missing_ok=True)
        except (OSError, ValueError, NotImplementedError):
            pass
