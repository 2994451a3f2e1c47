"""`judge:` checks: a model grades an output against a criterion, pass or fail with a reason.

The request is the same for every model: a system message that asks for one JSON object
``{"pass": true|false, "reason": "…"}`` and a user message that is itself JSON,
``{"task": "grade", "criterion": …, "output": …}``, with a JSON response format. Real
models (any litellm provider, `local/…`) answer it as asked; the verdict is read leniently
(`pass`/`passed`/`verdict` keys, or a reply that starts with PASS/FAIL/YES/NO), since
small models do not always keep to the format. The offline `echo` model knows this
request and grades it by a fixed rule (see `runner.models.echo.grade`), so judge checks
run deterministically in tests and CI with no key and no network.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Verdict", "judge", "judge_request", "parse_verdict", "JUDGE_SYSTEM"]

JUDGE_SYSTEM = (
    "You are a strict grader. You receive a JSON object with a criterion and the output of an "
    "AI application. Decide whether the output meets the criterion. Answer with one JSON object "
    'and nothing else: {"pass": true or false, "reason": "one short sentence"}.'
)
_JUDGE_TIMEOUT = 60.0
_JUDGE_RETRIES = 2
_WORD = re.compile(r"^\W*(pass(?:ed)?|fail(?:ed)?|yes|no|true|false)\b", re.IGNORECASE)
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_POSITIVE = {"pass", "passed", "yes", "true"}
# The verdict's shape. llama.cpp (`local/…`) turns it into a grammar, so even a tiny model
# answers with a verdict; providers get the plain JSON mode, which every one of them takes.
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"pass": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["pass", "reason"],
}


@dataclass(frozen=True)
class Verdict:
    """A judge's decision and its reason (the model's own words when it gave some)."""

    passed: bool
    reason: str


def judge_request(criterion: str, output_text: str, model: str) -> Any:
    """The ModelRequest that asks `model` to grade `output_text` against `criterion`."""
    from ..models import ModelRequest

    question = json.dumps({"task": "grade", "criterion": criterion, "output": output_text}, ensure_ascii=False)
    response_format: dict[str, Any] = {"type": "json_object"}
    if model.startswith("local/"):
        response_format["schema"] = VERDICT_SCHEMA
    return ModelRequest(
        model=model,
        messages=[{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": question}],
        params={"temperature": 0, "response_format": response_format, "max_tokens": 200},
        timeout=_JUDGE_TIMEOUT,
        retries=_JUDGE_RETRIES,
    )


def parse_verdict(reply: str) -> Verdict | None:
    """The verdict in a judge's reply: a JSON object with `pass` (or `passed`, `verdict`), or a
    reply that starts with PASS/FAIL/YES/NO. None when the reply holds no verdict."""
    text = reply.strip()
    found = _OBJECT.search(text)
    if found:
        try:
            data = json.loads(found.group(0))
        except ValueError:
            data = None
        if isinstance(data, dict):
            reason = str(data.get("reason") or data.get("explanation") or "").strip()
            for key in ("pass", "passed", "verdict", "result"):
                value = data.get(key)
                if isinstance(value, bool):
                    return Verdict(value, reason)
                if isinstance(value, str) and value.strip().lower() in _POSITIVE | {"fail", "failed", "no", "false"}:
                    return Verdict(value.strip().lower() in _POSITIVE, reason)
    word = _WORD.match(text)
    if word:
        rest = text[word.end():].strip(" \t\n:.-—")
        return Verdict(word.group(1).lower() in _POSITIVE, rest)
    return None


async def judge(criterion: str, output_text: str, model: str) -> Verdict:
    """Ask `model` whether `output_text` meets `criterion`. A reply without a verdict fails
    the check (with the reply shown); a provider error is raised (ProviderError)."""
    from ..models import complete

    reply = await complete(judge_request(criterion, output_text, model))
    verdict = parse_verdict(reply.text)
    if verdict is None:
        shown = " ".join(reply.text.split())[:200]
        return Verdict(False, f"the judge gave no verdict: {shown!r}")
    return verdict
