"""The `timbal` command line: thin click commands over the library.

Each command lives in a `*_cmds` module; `main` imports that module only when the command
runs (or `--help` lists it), so one command never pays for another's imports. Every command
parses its arguments, calls one library function and formats the answer. Errors of our own
(`TimbalError`) print as compiler-style diagnostics with their exit code; anything else
prints one line, and a traceback only with `--debug`.
"""

from __future__ import annotations

from .base import main

# Which module holds each command. Names only: importing them here would load asyncio and
# every command's library at each start-up.
_COMMANDS = {
    "batch": "batch_cmds:batch_command",
    "chat": "chat_cmds:chat_command",
    "graph": "compile_cmds:graph",
    "init": "compile_cmds:init",
    "run": "run_cmds:run_command",
    "runs": "runs_cmds:runs",
    "schema": "compile_cmds:schema",
    "serve": "serve_cmds:serve_command",
    "test": "test_cmds:test_command",
    "validate": "compile_cmds:validate",
    "worker": "batch_cmds:worker_command",
}
for _name, _target in _COMMANDS.items():
    main.add_lazy_command(_name, f"{__name__}.{_target}")

__all__ = ["main"]
