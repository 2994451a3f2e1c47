"""Python functions used by flows/python_step.yaml and flows/refine_loop.yaml (found next to
the flow file)."""

from __future__ import annotations

import asyncio


def word_stats(text: str) -> dict[str, object]:
    """Count the words of `text` and find the longest one."""
    words = text.split()
    if not words:
        raise ValueError("the text has no words")
    return {"words": len(words), "longest": max(words, key=len)}


async def shout(word: str, times: int = 1) -> str:
    """Upper-case `word`, `times` times (async: awaited by the runner)."""
    await asyncio.sleep(0)
    return " ".join([word.upper()] * times)


def score_draft(draft: str) -> dict[str, object]:
    """Score a draft from 1 to 10 (offline stand-in for a reviewer: more rounds of editing,
    which the echo model shows as more messages, score higher)."""
    import re

    match = re.search(r"\((\d+) messages?\)", draft)
    rounds = (int(match.group(1)) + 1) // 2 if match else 1
    return {"draft": draft, "score": min(10, 2 + 3 * rounds)}
