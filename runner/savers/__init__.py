"""State savers: where runs, their steps and their memory deltas are kept.

Each saver module declares a `runner.registry.SaverType` (`SAVER_TYPE`): its
`state_saver.type`, its URI schemes and file suffixes, and how it is built. This module
turns a `--saver` / `TIMBAL_SAVER` URI (`saver_from_uri`) or a flow's `state_saver:`
block (`open_saver`, the one place that does) into a saver, through that registry.
The PostgreSQL driver is only imported when a PostgreSQL saver is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FlowError, InputError
from .base import RunRecord, Saver, StepRecord

if TYPE_CHECKING:
    from ..graph import SaverSpec
    from ..registry import SaverType

# The registry, loader and templates are imported where they are used: `import runner.savers`
# (and the `timbal` command's start-up) stays light.

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
    "open_saver",
    "saver_type",
]


def __getattr__(name: str) -> Any:
    # The saver classes (`runner.savers.SQLiteSaver`, ...) come from the registry.
    from ..registry import saver_types

    for kind in saver_types:
        if kind.cls is not None and kind.cls.__name__ == name:
            globals()[name] = kind.cls
            return kind.cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _uri_help() -> str:
    from ..registry import saver_types

    forms = [k.uri_help for k in saver_types if k.uri_help]
    return "expected " + (", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else "".join(forms))


def saver_type(name: str) -> SaverType | None:
    """The saver type a `state_saver.type` (or one of its aliases) names."""
    from ..registry import saver_types

    for kind in saver_types:
        if name == kind.name or name in kind.aliases:
            return kind
    return None


def saver_from_uri(uri: str, base_dir: Path | None = None, create: bool = True) -> Saver:
    """The saver a URI names: `memory`, `jsonl:PATH`, `sqlite:PATH`, `postgresql://…`, or a
    plugin's scheme. A bare path ending in a saver's suffix (.jsonl, .db, ...) names a file
    of that saver. Relative paths are relative to `base_dir` (default: the working
    directory). Raises InputError (exit 2) for anything else. With `create=False` (commands
    that only inspect state) a state file that does not exist is an InputError, never created.
    """
    from ..registry import saver_types
    from ..secrets import redact_dsn

    text = uri.strip()
    scheme, sep, _ = text.partition(":")
    scheme = (scheme if sep else text).lower()
    for kind in saver_types:
        if scheme in kind.schemes:
            return kind.from_uri(text, base_dir, create)
    lowered = text.lower()
    for kind in saver_types:
        if kind.suffixes and lowered.endswith(kind.suffixes):
            return kind.from_uri(text, base_dir, create)
    raise InputError(f"unknown saver {redact_dsn(uri)!r}: {_uri_help()}")


def saver_from_config(
    type: str, options: Mapping[str, Any], base_dir: Path | None = None, create: bool = True
) -> Saver:
    """The saver a `state_saver:` block names, its templates already rendered.

    `type` is a registered saver type (in_memory, jsonl, sqlite, postgres, a plugin's);
    file paths are relative to `base_dir`, the flow file's folder.
    """
    kind = saver_type(type)
    if kind is None:
        from ..registry import saver_types

        names = ", ".join(k.name for k in saver_types)
        raise FlowError(f"unknown state_saver type {type!r} (expected one of {names})")
    return kind.from_config(options, base_dir, create)


def open_saver(spec: SaverSpec | None, uri: str | None = None, create: bool = True) -> Saver:
    """The saver a run uses: `uri` (`--saver`) when given, else the flow's `state_saver`
    block `spec` (in memory when there is none), its templates (`dsn: "{{ env.DSN }}"`)
    rendered from the environment. The one place a `state_saver` block becomes a saver."""
    from ..templates import TemplateRenderError, render_value

    if uri:
        return saver_from_uri(uri, create=create)
    if spec is None:
        return saver_from_config("in_memory", {})
    options: dict[str, Any] = {}
    for key, value in spec.options.items():
        try:
            options[key] = render_value(value, {"env": os.environ, "inputs": {}})
        except TemplateRenderError as exc:  # e.g. the variable is unset
            raise FlowError(f"state_saver.{key}: {exc}") from None
    return saver_from_config(spec.type, options, spec.base_dir, create)


def saver_from_flow_file(path: str | os.PathLike[str], create: bool = True) -> Saver:
    """The saver a flow file's `state_saver:` block names, without compiling the rest of it
    (`timbal runs --saver flow.yaml` works while the flow has errors elsewhere). A flow
    without the block keeps its runs in memory only, so there is nothing to inspect:
    InputError.
    """
    from ..graph import SaverSpec, freeze
    from ..loader import load_document
    from ..templates import compile_template, is_template

    flow_path = Path(path)
    document = load_document(os.fspath(flow_path))
    block = document.data.get("state_saver") if isinstance(document.data, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise InputError(
            f"{flow_path} has no state_saver block (its runs are kept in memory only); "
            "pass --saver URI"
        )
    options: dict[str, Any] = {}
    for key, value in block.items():
        if key == "type" or key.startswith("x-"):
            continue
        if isinstance(value, str) and is_template(value):
            try:
                value = compile_template(value)
            except Exception as exc:  # noqa: BLE001 - jinja syntax errors
                raise InputError(f"{flow_path}: state_saver.{key}: {exc}") from None
        options[key] = value
    spec = SaverSpec(type=block["type"], options=freeze(options), base_dir=flow_path.parent)
    return open_saver(spec, create=create)
