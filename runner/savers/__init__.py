"""State savers: where runs, their steps and their memory deltas are kept.

`saver_from_uri` reads the `--saver` / `TIMBAL_SAVER` form; `saver_from_config` reads a
flow file's `state_saver:` block. The saver classes are imported lazily, so the
PostgreSQL driver is only loaded when a PostgreSQL saver is asked for.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import FlowError, InputError
from .base import RunRecord, Saver, StepRecord

__all__ = [
    "Saver",
    "RunRecord",
    "StepRecord",
    "InMemorySaver",
    "JSONLSaver",
    "SQLiteSaver",
    "PostgresSaver",
    "saver_from_uri",
    "saver_from_config",
    "saver_from_flow_file",
    "SAVER_TYPES",
]

#: The `state_saver.type` values a flow file may name.
SAVER_TYPES = ("in_memory", "jsonl", "sqlite", "postgres")

_WHERE = {
    "InMemorySaver": ".in_memory",
    "JSONLSaver": ".jsonl",
    "SQLiteSaver": ".sqlite",
    "PostgresSaver": ".postgres",
}
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_URI_HELP = "expected memory, jsonl:PATH, sqlite:PATH or postgresql://…"


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _path(text: str, base_dir: Path | None) -> Path:
    path = Path(os.path.expanduser(text))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def saver_from_uri(uri: str, base_dir: Path | None = None, create: bool = True) -> Saver:
    """The saver a URI names: `memory`, `jsonl:PATH`, `sqlite:PATH`, `postgresql://…`.

    A bare path ending in .jsonl, or in .db/.sqlite/.sqlite3, names a JSONL or SQLite
    file. Relative paths are relative to `base_dir` (default: the working directory).
    Raises InputError (exit 2) for anything else. With `create=False` (commands that only
    inspect state) a state file that does not exist is an InputError, never created.
    """
    from .postgres import redact_dsn

    text = uri.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower() if sep else ""
    if text.lower() in ("memory", "in_memory", "memory:", "in_memory:"):
        from .in_memory import InMemorySaver

        return InMemorySaver()
    if scheme in ("postgresql", "postgres") and rest.startswith("//"):
        from .postgres import PostgresSaver

        return PostgresSaver(text)
    if scheme in ("jsonl", "sqlite"):
        if rest.startswith("//"):  # jsonl://rel/path, sqlite:///abs/path
            rest = rest[2:]
        if not rest:
            raise InputError(f"saver {uri!r} names no file: {_URI_HELP}")
        return _file_saver(scheme, _path(rest, base_dir), create)
    lowered = text.lower()
    if lowered.endswith(_JSONL_SUFFIXES):
        return _file_saver("jsonl", _path(text, base_dir), create)
    if lowered.endswith(_SQLITE_SUFFIXES):
        return _file_saver("sqlite", _path(text, base_dir), create)
    raise InputError(f"unknown saver {redact_dsn(uri)!r}: {_URI_HELP}")


def _file_saver(kind: str, path: Path, create: bool = True) -> Saver:
    if path.is_dir():
        raise InputError(f"saver path {path} is a directory, not a {kind} file")
    if not create and not path.exists():
        raise InputError(f"no {kind} state file at {path} (nothing has been saved there)")
    if kind == "jsonl":
        from .jsonl import JSONLSaver

        return JSONLSaver(path)
    from .sqlite import SQLiteSaver

    return SQLiteSaver(path)


def saver_from_config(
    type: str, options: dict[str, Any], base_dir: Path | None = None, create: bool = True
) -> Saver:
    """The saver a flow file's `state_saver:` block names (its templates already rendered).

    `type` is in_memory, jsonl or sqlite (with `path`, relative to `base_dir`, the flow
    file's folder) or postgres (with `dsn`, and optionally `schema`).
    """
    kind = {"memory": "in_memory", "postgresql": "postgres"}.get(type, type)
    if kind == "in_memory":
        from .in_memory import InMemorySaver

        return InMemorySaver()
    if kind in ("jsonl", "sqlite"):
        path = options.get("path")
        if not isinstance(path, str) or not path:
            raise FlowError(f"state_saver of type {type!r} needs a 'path'")
        return _file_saver(kind, _path(path, base_dir), create)
    if kind == "postgres":
        dsn = options.get("dsn")
        if not isinstance(dsn, str) or not dsn:
            raise FlowError("state_saver of type 'postgres' needs a 'dsn'")
        from .postgres import PostgresSaver

        return PostgresSaver(dsn, schema=options.get("schema"))
    raise FlowError(f"unknown state_saver type {type!r} (expected one of {', '.join(SAVER_TYPES)})")


def saver_from_flow_file(path: str | os.PathLike[str], create: bool = True) -> Saver:
    """The saver a flow file's `state_saver:` block names, without compiling the rest of it.

    `{{ env.VAR }}` in its options is rendered from the environment; paths are relative
    to the file's folder. A flow without the block keeps its runs in memory only, so
    there is nothing to inspect: InputError.
    """
    from ..loader import load_document
    from ..templates import compile_template, is_template

    flow_path = Path(path)
    data = load_document(flow_path).data  # read as the compiler reads it (YAML 1.2; located errors)
    block = data.get("state_saver") if isinstance(data, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise InputError(
            f"{flow_path} has no state_saver block (its runs are kept in memory only); "
            "pass --saver URI"
        )
    options: dict[str, Any] = {}
    for key, value in block.items():
        if key == "type":
            continue
        if isinstance(value, str) and is_template(value):
            try:
                value = compile_template(value).render({"env": dict(os.environ), "inputs": {}})
            except Exception as exc:  # noqa: BLE001 - render errors and jinja syntax errors alike
                raise InputError(f"{flow_path}: state_saver.{key}: {exc}") from None
        options[key] = value
    return saver_from_config(block["type"], options, flow_path.parent, create)
