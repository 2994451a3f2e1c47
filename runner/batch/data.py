"""Data files for `timbal batch`: JSONL or CSV rows, read one at a time (never all at once).

Rows are numbered from 1 in file order (a CSV header is not a row). A row's keys that
name a flow input are its inputs (CSV text is converted to the input's declared type,
as `-i NAME=VALUE` is; an empty CSV cell counts as not given); the other keys are
carried unchanged to the row's output line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..graph import ExecutionGraph

__all__ = ["Row", "read_rows", "count_rows", "split_row", "data_format"]

_JSONL = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class Row:
    """One row of a data file: its number (from 1) and its values, or why it is unreadable."""

    number: int
    values: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # e.g. a JSONL line that is not a JSON object


def data_format(path: Path) -> str:
    """'jsonl' or 'csv', from the file's suffix; InputError (exit 2) for anything else."""
    suffix = path.suffix.lower()
    if suffix in _JSONL:
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise InputError(f"--data {path}: expected a .jsonl or .csv file")


def read_rows(path: Path) -> Iterator[Row]:
    """The rows of a JSONL or CSV file, streamed. Blank JSONL lines are not rows."""
    if data_format(path) == "csv":
        yield from _csv_rows(path)
        return
    number = 0
    with path.open("r", encoding="utf-8", errors="replace", newline="") as file:
        for lineno, line in enumerate(file, 1):
            if not line.strip():
                continue
            number += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Row(number, problem=f"{path}:{lineno}:{exc.colno}: not valid JSON: {exc.msg}")
                continue
            if not isinstance(value, dict):
                yield Row(number, problem=f"{path}:{lineno}: a row must be a JSON object")
                continue
            yield Row(number, value)


def _csv_rows(path: Path) -> Iterator[Row]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        for number, record in enumerate(reader, 1):
            extra = record.pop(None, None)  # type: ignore[call-overload]
            if extra:
                yield Row(number, problem=f"{path}:{reader.line_num}: more cells than the header has")
                continue
            # An empty cell is "not given", so the input's default applies.
            yield Row(number, {k: v for k, v in record.items() if k is not None and v not in ("", None)})


def count_rows(path: Path) -> int:
    """How many rows the file holds (one streaming pass; for the progress bar's total)."""
    if data_format(path) == "csv":
        with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as file:
            return sum(1 for _ in csv.DictReader(file, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    with path.open("rb") as file:
        return sum(1 for line in file if line.strip())


def split_row(graph: ExecutionGraph, row: Row, from_text: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, carried keys) of a row. CSV text (`from_text`) is converted to each input's
    declared type. Raises InputError when a value does not convert."""
    from ..inputs import coerce_text

    specs = {spec.name: spec for spec in graph.inputs}
    inputs: dict[str, Any] = {}
    carried: dict[str, Any] = {}
    for key, value in row.values.items():
        spec = specs.get(key)
        if spec is None:
            carried[key] = value
        else:
            inputs[key] = coerce_text(spec, value) if from_text and isinstance(value, str) else value
    return inputs, carried
