"""The `timbal` command line: thin click commands over the library.

Each command module registers its commands on `main`; every command parses its
arguments, calls one library function and formats the answer. Errors of our own
(`TimbalError`) print as compiler-style diagnostics with their exit code; anything
else prints one line, and a traceback only with `--debug`.
"""

from __future__ import annotations

# Importing the modules registers their commands on `main`.
from . import batch_cmds as _batch_cmds  # noqa: F401  batch, worker
from . import chat_cmds as _chat_cmds  # noqa: F401  chat
from . import compile_cmds as _compile_cmds  # noqa: F401  validate, graph, schema, init
from . import run_cmds as _run_cmds  # noqa: F401  run
from . import runs_cmds as _runs_cmds  # noqa: F401  runs list|show|tree|delete
from . import serve_cmds as _serve_cmds  # noqa: F401  serve
from . import test_cmds as _test_cmds  # noqa: F401  test
from .base import main

__all__ = ["main"]
