"""Python checks used by the test cases of flows/support_tests.yaml (found next to the flow).

A check takes the output (and, if it has a second parameter, a context with the case's
inputs, outputs, usage, run_id and name) and returns True, or the reason it failed.
"""

from __future__ import annotations

from typing import Any


def ends_with_question_mark(output: str) -> bool | str:
    """Pass when the reply ends with a question mark."""
    if output.rstrip().endswith("?"):
        return True
    return f"the reply ends with {output.rstrip()[-1:]!r}, not '?'"


def mentions_the_input(output: Any, context: dict[str, Any]) -> bool | str:
    """Pass when the reply repeats the case's question."""
    question = context["inputs"].get("question", "")
    return question in str(output) or f"the reply does not repeat {question!r}"
