"""The flow file format's JSON Schema, loaded once from the package.

`schemas/flow.schema.json` is the one source of truth: the compiler validates with it,
`timbal schema` prints it, editors read it. It ships inside the package as
`runner/flow.schema.json`, so it is found the same way from a checkout and a wheel.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["load_schema", "schema_text", "schema_path", "SCHEMA_URL"]

#: Where the schema is published, for editors when no local copy can be referenced.
SCHEMA_URL = "https://timbal.dev/schemas/flow.schema.json"

_RESOURCE = "flow.schema.json"


@functools.cache
def schema_text() -> str:
    """The schema file's text, exactly as shipped."""
    return resources.files("runner").joinpath(_RESOURCE).read_text(encoding="utf-8")


@functools.cache
def load_schema() -> dict[str, Any]:
    """The flow JSON Schema (Draft 2020-12) as a dict. Loaded once; do not mutate it."""
    schema: dict[str, Any] = json.loads(schema_text())
    return schema


def schema_path() -> Path | None:
    """The schema's real path on disk (symlinks resolved), or None inside a zip."""
    ref = resources.files("runner").joinpath(_RESOURCE)
    try:
        path = Path(str(ref))
    except TypeError:
        return None
    return path.resolve() if path.is_file() else None
