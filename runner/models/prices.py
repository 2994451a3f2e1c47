"""The price of a call, from litellm's price table, without importing litellm.

litellm ships its table of model prices as a JSON file inside its package
(``model_prices_and_context_window_backup.json``, the one it reads itself when
``LITELLM_LOCAL_MODEL_COST_MAP`` is set). Importing litellm takes seconds, so we find the
package folder with `importlib.util.find_spec` (which does not import it) and read only the
entry of the model asked for: the file is a flat mapping of model names, and
`json.JSONDecoder.raw_decode` parses one entry where it starts, not the whole table.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["price_table_path", "model_prices", "call_cost"]

TABLE_FILE = "model_prices_and_context_window_backup.json"


@functools.cache
def price_table_path() -> Path | None:
    """litellm's price table file, or None when litellm is not installed."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / TABLE_FILE
    return path if path.is_file() else None


@functools.cache
def _table_text() -> str:
    path = price_table_path()
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


@functools.cache
def model_prices(name: str) -> dict[str, Any] | None:
    """The price entry of model `name` (e.g. ``gpt-4o-mini``), or None when unknown."""
    text = _table_text()
    # Top-level keys only: they are the lines indented once, at the table's first level.
    found = re.search(r'^ {0,4}"' + re.escape(name) + r'"\s*:\s*(?=\{)', text, re.M)
    if found is None:
        return None
    try:
        entry, _ = json.JSONDecoder().raw_decode(text, found.end())
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def call_cost(model: str, usage: dict[str, Any]) -> float | None:
    """The cost in USD of one call of `model` (``openai/NAME``) with this OpenAI `usage`
    (the raw usage object, with ``prompt_tokens_details`` when the server sent it), as
    litellm computes it: cached prompt tokens at the cache-read price, the rest at the
    input price, completion tokens at the output price. None for a model without a price."""
    name = model.split("/", 1)[1] if model.startswith("openai/") else model
    prices = model_prices(name) or model_prices(f"openai/{name}")
    if prices is None:
        return None
    input_price = prices.get("input_cost_per_token")
    output_price = prices.get("output_cost_per_token")
    if not isinstance(input_price, int | float) or not isinstance(output_price, int | float):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    cache_price = prices.get("cache_read_input_token_cost")
    if not isinstance(cache_price, int | float):
        cache_price, cached = input_price, 0
    return (prompt - cached) * input_price + cached * cache_price + completion * output_price
