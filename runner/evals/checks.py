"""Evaluate one check against a finished run: pass or fail, the reason, the value seen."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import Check, shorten

__all__ = ["CheckResult", "evaluate", "output_text"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. `actual` is the value the check looked at (for the report)."""

    check: Check
    passed: bool
    reason: str = ""
    actual: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The check's JSON form (`timbal test --json`)."""
        return {
            "check": self.check.kind,
            "expected": self.check.expected,
            "output": self.check.output,
            "passed": self.passed,
            "reason": self.reason,
            "actual": self.actual,
        }


def output_text(value: Any) -> str:
    """An output as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _matches_equal(actual: Any, expected: Any) -> bool:
    """Equality, where a text output equals a number or boolean written the same way
    (a model answers `42` as text)."""
    if actual == expected and type(actual) is type(expected) or (
        isinstance(actual, int | float) and isinstance(expected, int | float)
        and not isinstance(actual, bool) and not isinstance(expected, bool) and actual == expected
    ):
        return True
    if isinstance(actual, str) and not isinstance(expected, str):
        return actual.strip() == json.dumps(expected, ensure_ascii=False)
    return bool(actual == expected)


def _parsed(value: Any) -> Any:
    """A text output read as JSON when it is JSON; anything else unchanged."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


async def evaluate(check: Check, outputs: Any, usage: dict[str, Any], seconds: float,
                   context: dict[str, Any], base_dir: Path | None) -> CheckResult:
    """Run `check` on a succeeded run's outputs, usage and duration."""
    kind, expected = check.kind, check.expected
    if kind == "max_tokens":
        tokens = int(usage.get("total_tokens") or 0)
        return CheckResult(check, tokens <= expected, "" if tokens <= expected else
                           f"{tokens} tokens > {expected}", tokens)
    if kind == "max_cost":
        cost = float(usage.get("cost") or 0.0)
        return CheckResult(check, cost <= expected, "" if cost <= expected else
                           f"cost ${cost:.6f} > ${expected}", cost)
    if kind == "max_seconds":
        return CheckResult(check, seconds <= expected, "" if seconds <= expected else
                           f"{seconds:.3f}s > {expected}s", round(seconds, 3))
    value = outputs.get(check.output) if isinstance(outputs, dict) else None
    text = output_text(value)
    if kind == "equals":
        ok = _matches_equal(value, expected)
        return CheckResult(check, ok, "" if ok else "not equal", value)
    if kind == "contains":
        ok = expected in text
        return CheckResult(check, ok, "" if ok else f"{shorten(expected, 40)!r} not found", value)
    if kind == "not_contains":
        ok = expected not in text
        return CheckResult(check, ok, "" if ok else f"{shorten(expected, 40)!r} found", value)
    if kind == "matches":
        ok = re.search(expected, text) is not None
        return CheckResult(check, ok, "" if ok else "no match", value)
    if kind == "json_schema":
        return _json_schema(check, value)
    if kind == "python":
        return await _python(check, value, context, base_dir)
    if kind == "judge":
        from .judge import judge

        assert check.model is not None  # the case reader refuses a judge without a model
        verdict = await judge(expected, text, check.model)
        return CheckResult(check, verdict.passed, verdict.reason, value)
    raise ValueError(f"unknown check kind {kind!r}")  # pragma: no cover - the reader refuses it


def _json_schema(check: Check, value: Any) -> CheckResult:
    import jsonschema

    data = _parsed(value)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(check.expected).iter_errors(data))
    if error is None:
        return CheckResult(check, True, "", value)
    where = "/".join(str(p) for p in error.absolute_path)
    return CheckResult(check, False, f"{where + ': ' if where else ''}{error.message}", value)


async def _python(check: Check, value: Any, context: dict[str, Any], base_dir: Path | None) -> CheckResult:
    """Call the user's `module:function` with the output (and the context when it takes a
    second argument). True passes; False or a text (the reason) fails."""
    from ..steps.python import call_function, resolve_function

    function = resolve_function(check.expected, base_dir)
    try:
        takes_context = len(inspect.signature(function).parameters) >= 2
    except (TypeError, ValueError):
        takes_context = False
    args = [value, context] if takes_context else [value]
    try:
        result = await call_function(function, args, {})
    except Exception as exc:  # noqa: BLE001 - the user's check raised: it failed, with why
        return CheckResult(check, False, f"raised {type(exc).__name__}: {exc}", value)
    if result is True:
        return CheckResult(check, True, "", value)
    if result is False or result is None:
        return CheckResult(check, False, f"{check.expected} returned {result}", value)
    if isinstance(result, str):
        return CheckResult(check, False, result, value)
    return CheckResult(check, bool(result), "" if result else f"{check.expected} returned {result!r}", value)
