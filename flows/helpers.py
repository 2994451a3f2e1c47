"""Python functions used by flows/python_step.yaml (found next to the flow file)."""

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
