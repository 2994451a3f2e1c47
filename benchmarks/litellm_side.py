"""The floor under our litellm figures: the same three calls made directly with
`litellm.acompletion`, no engine (runs in the project's venv, without importing `runner`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import (
    LITELLM_KEY,
    LITELLM_MODEL,
    PROMPTS_3,
    peak_rss_mb,
    rss_mb,
    summarize,
    timed_async,
)


async def three_calls(api_base: str, prompt: str) -> str:
    """What the 3-step flow sends: one conversation, three user turns, three calls."""
    import litellm

    messages: list[dict[str, Any]] = []
    text = ""
    for template in PROMPTS_3:
        messages.append({"role": "user", "content": template.format(prompt=prompt)})
        reply = await litellm.acompletion(
            model=LITELLM_MODEL, messages=list(messages), api_base=api_base, api_key=LITELLM_KEY
        )
        text = reply.choices[0].message.content
        messages.append({"role": "assistant", "content": text})
    return text


async def sequential_litellm(params: dict[str, Any]) -> dict[str, Any]:
    """Per-run time of the three calls, one run at a time."""
    api_base = params["api_base"]
    seconds = await timed_async(
        lambda: three_calls(api_base, "hi"), params["warmup"], params["runs"]
    )
    return {"per_run_us": summarize(seconds)["median_us"]}


async def concurrent(params: dict[str, Any]) -> dict[str, Any]:
    """`runs` concurrent runs of the three calls."""
    api_base, n = params["api_base"], params["runs"]
    await three_calls(api_base, "warm up")
    base = rss_mb()
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(three_calls(api_base, f"run {i}") for i in range(n)))
    wall = time.perf_counter() - t0
    if not all(outs):
        raise RuntimeError("a run had no answer")
    return {
        "runs_per_s": n / wall,
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
        "base_rss_mb": base,
    }


TASKS = {"sequential_litellm": sequential_litellm, "concurrent": concurrent}
