"""The root `timbal` group and what every command shares: error handling, exit codes, output."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import FlowError, TimbalError
from ..status import ExitCode

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_WAITING, EXIT_INTERRUPTED = (
    ExitCode.OK, ExitCode.FAILED, ExitCode.INVALID, ExitCode.WAITING, ExitCode.INTERRUPTED,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("timbal-flows")
    except PackageNotFoundError:
        return "0+unknown"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # Looked up only when asked: importlib.metadata costs every other command ~20 ms.
    if value and not ctx.resilient_parsing:
        click.echo(f"timbal, version {_version()}")
        ctx.exit()


class _TimbalGroup(click.Group):
    """The root group: `--debug` is taken anywhere on the line (`timbal run f.yaml --debug`),
    not only before the command, since people add it where the error showed up.

    Commands are registered lazily (`add_lazy_command`): a command's module, and whatever it
    imports at its top, is imported only when that command runs or `--help` lists it, so
    `timbal validate` never pays for asyncio, the queue or the server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, str] = {}

    def add_lazy_command(self, name: str, target: str) -> None:
        """Register command `name`, found at `target` ("package.module:attribute") when first used."""
        self.lazy_commands[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is not None and cmd_name not in self.commands:
            import importlib

            module, _, attribute = target.partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[1:end]:
            args = ["--debug"] + [a for i, a in enumerate(args) if a != "--debug" or i >= end]
        return super().parse_args(ctx, args)


@click.group(cls=_TimbalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", "-V", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and exit.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for unexpected errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Timbal flows: run LLM flows written in YAML."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if not debug:
        import warnings

        # One line, `warning: …` (e.g. a torn JSONL line skipped), not Python's source excerpt.
        previous = warnings.showwarning
        warnings.showwarning = _show_warning
        ctx.call_on_close(lambda: setattr(warnings, "showwarning", previous))


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    click.echo(f"warning: {message}", err=True)


def is_debug() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and ctx.obj.get("debug"):
            return True
        ctx = ctx.parent
    return False


def use_color(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ


def report_error(exc: BaseException) -> int:
    """Print an error the way the user should see it; return the exit code."""
    if isinstance(exc, FlowError):
        click.echo(exc.format(color=use_color()), err=True)
        return EXIT_INVALID
    if isinstance(exc, TimbalError):
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    return EXIT_FAILED


def handle_errors(fn: F) -> F:
    """Turn our errors into diagnostics and exit codes; no traceback unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - the one place that catches everything
            if is_debug():
                raise
            sys.exit(report_error(exc))

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    """Print data as JSON on stdout (non-JSON values as strings). Data nested deeper than
    Python's recursion limit (the tree of a conversation of a thousand turns) is printed too."""
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    except RecursionError:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 200_000))
        try:
            text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
        finally:
            sys.setrecursionlimit(limit)
    click.echo(text)
