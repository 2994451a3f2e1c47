"""LangGraph's side of each benchmark (runs in the rivals' venv).

The graphs do what our flows do, in plain Python nodes: state holds a list of OpenAI-form
messages that every node appends to (the `operator.add` reducer, LangGraph's plain way to
share a conversation), and each node answers with `common.echo_reply` (what our `echo`
model answers) or calls the loopback server through `litellm.acompletion`.
"""

from __future__ import annotations

import asyncio
import operator
import os
import sqlite3
import tempfile
import time
import uuid
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from .common import (
    LITELLM_KEY,
    LITELLM_MODEL,
    PROMPTS_3,
    converse,
    echo_reply,
    files_size,
    peak_rss_mb,
    rss_mb,
    sqlite_files,
    sqlite_logical_bytes,
    summarize,
    timed_async,
    timed_sync,
)


class ChatState(TypedDict, total=False):
    prompt: str
    messages: Annotated[list[dict[str, Any]], operator.add]
    a: str
    b: str
    c: str
    usage: dict[str, int]


def _prompt(step: int, state: ChatState) -> str:
    return PROMPTS_3[step].format(prompt=state["prompt"])


def _echo_node(step: int, name: str):
    def node(state: ChatState) -> dict[str, Any]:
        user = {"role": "user", "content": _prompt(step, state)}
        text, usage = echo_reply([*state.get("messages", []), user])
        return {
            "messages": [user, {"role": "assistant", "content": text}],
            name: text,
            "usage": usage,
        }

    async def anode(state: ChatState) -> dict[str, Any]:
        return node(state)

    return node, anode


def three_step_graph(asynchronous: bool, checkpointer: Any = None):
    """a -> b -> c, sharing `messages`; the graph's answer is c's reply."""
    graph = StateGraph(ChatState)
    for step, name in enumerate(("a", "b", "c")):
        node, anode = _echo_node(step, name)
        graph.add_node(name, anode if asynchronous else node)
    graph.add_edge(START, "a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "c")
    graph.add_edge("c", END)
    return graph.compile(checkpointer=checkpointer)


def chat_graph(asynchronous: bool, checkpointer: Any):
    """One node that answers the turn's prompt with the whole conversation as context."""
    graph = StateGraph(ChatState)
    node, anode = _echo_node(0, "a")
    graph.add_node("a", anode if asynchronous else node)
    graph.add_edge(START, "a")
    graph.add_edge("a", END)
    return graph.compile(checkpointer=checkpointer)


def _check(out: dict[str, Any]) -> None:
    if not str(out.get("c", "")).startswith("echo (5 messages): once more"):
        raise RuntimeError(f"unexpected LangGraph answer: {out.get('c')!r}")


# -- engine cost, no persistence ---------------------------------------------------------------


def engine3(params: dict[str, Any]) -> dict[str, Any]:
    """3-step graph, no checkpointer: per-run time with `invoke` (sync nodes) and `ainvoke`."""
    warmup, runs = params["warmup"], params["runs"]
    sync_graph = three_step_graph(asynchronous=False)
    _check(sync_graph.invoke({"prompt": "hi"}))
    sync = summarize(timed_sync(lambda: sync_graph.invoke({"prompt": "hi"}), warmup, runs))

    async_graph = three_step_graph(asynchronous=True)

    async def main() -> list[float]:
        _check(await async_graph.ainvoke({"prompt": "hi"}))
        return await timed_async(lambda: async_graph.ainvoke({"prompt": "hi"}), warmup, runs)

    asyn = summarize(asyncio.run(main()))
    best = min(("invoke", sync), ("ainvoke", asyn), key=lambda kv: kv[1]["median_us"])
    return {
        "per_run_us": best[1]["median_us"],
        "mode": best[0],
        "invoke_us": sync["median_us"],
        "ainvoke_us": asyn["median_us"],
    }


# -- durable state: SqliteSaver in sync durability ------------------------------------------------


def _sqlite_pragmas(conn: sqlite3.Connection) -> str:
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
        conn.execute("PRAGMA synchronous").fetchone()[0]
    ]
    return f"journal_mode={journal}, synchronous={sync}"


def durable3(params: dict[str, Any]) -> dict[str, Any]:
    """3-step graph with SqliteSaver (`invoke`) and AsyncSqliteSaver (`ainvoke`), durability="sync".

    Every run is a new thread in one database file, as a server handling new conversations.
    """
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    warmup, runs = params["warmup"], params["runs"]
    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "sync.db"), check_same_thread=False)
        saver = SqliteSaver(conn)
        saver.setup()
        graph = three_step_graph(asynchronous=False, checkpointer=saver)

        def run_sync() -> None:
            config = {"configurable": {"thread_id": uuid.uuid4().hex}}
            _check(graph.invoke({"prompt": "hi"}, config, durability="sync"))

        sync = summarize(timed_sync(run_sync, warmup, runs))
        pragmas = _sqlite_pragmas(conn)
        conn.close()

        async def main() -> list[float]:
            async with AsyncSqliteSaver.from_conn_string(os.path.join(tmp, "async.db")) as asaver:
                agraph = three_step_graph(asynchronous=True, checkpointer=asaver)

                async def run_async() -> None:
                    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
                    _check(await agraph.ainvoke({"prompt": "hi"}, config, durability="sync"))

                return await timed_async(run_async, warmup, runs)

        asyn = summarize(asyncio.run(main()))
    best = min(("invoke", sync), ("ainvoke", asyn), key=lambda kv: kv[1]["median_us"])
    return {
        "per_run_us": best[1]["median_us"],
        "mode": best[0],
        "invoke_us": sync["median_us"],
        "ainvoke_us": asyn["median_us"],
        "pragmas": pragmas,
    }


# -- a long conversation -------------------------------------------------------------------------


def conversation(params: dict[str, Any]) -> dict[str, Any]:
    """One thread, `turns` turns of one echo node; time per turn and bytes stored per turn.

    `saver`: "sqlite" (SqliteSaver, durability="sync") or "memory" (InMemorySaver).
    """
    kind = params["saver"]
    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        path = os.path.join(tmp, "conversation.db")
        conn = None
        size = None
        if kind == "sqlite":
            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(path, check_same_thread=False)
            saver: Any = SqliteSaver(conn)
            saver.setup()
            size = lambda: sqlite_logical_bytes(path)  # noqa: E731
        else:
            from langgraph.checkpoint.memory import InMemorySaver

            saver = InMemorySaver()
        graph = chat_graph(asynchronous=False, checkpointer=saver)
        config = {"configurable": {"thread_id": "conversation"}}

        def turn(k: int) -> str:
            return graph.invoke({"prompt": f"turn {k}"}, config, durability="sync")["a"]

        result = converse(turn, params["turns"], size, params.get("budget_s", float("inf")))
        if conn is not None:
            result["file_bytes"] = files_size(sqlite_files(path))
            result["pragmas"] = _sqlite_pragmas(conn)
            conn.close()
    return result


# -- concurrency -----------------------------------------------------------------------------------


def fan20(params: dict[str, Any]) -> dict[str, Any]:
    """20 independent async nodes that each sleep `delay` seconds: wall time of one run."""
    width, delay = params.get("width", 20), params.get("delay", 0.2)

    class FanState(TypedDict, total=False):
        prompt: str
        results: Annotated[list[str], operator.add]

    def make(i: int):
        async def node(state: FanState) -> dict[str, Any]:
            await asyncio.sleep(delay)
            text, _ = echo_reply([{"role": "user", "content": f"{state['prompt']} {i}"}])
            return {"results": [text]}

        return node

    graph = StateGraph(FanState)
    for i in range(width):
        graph.add_node(f"s{i}", make(i))
        graph.add_edge(START, f"s{i}")
        graph.add_edge(f"s{i}", END)
    app = graph.compile()

    async def main() -> list[float]:
        out = await app.ainvoke({"prompt": "hi"})
        if len(out["results"]) != width:
            raise RuntimeError("not every branch answered")
        return await timed_async(lambda: app.ainvoke({"prompt": "hi"}), 0, params.get("runs", 3))

    return {"wall_ms": summarize(asyncio.run(main()))["median_us"] / 1e3}


def _litellm_graph(api_base: str):
    import litellm

    def make(step: int, name: str):
        async def node(state: ChatState) -> dict[str, Any]:
            user = {"role": "user", "content": _prompt(step, state)}
            reply = await litellm.acompletion(
                model=LITELLM_MODEL,
                messages=[*state.get("messages", []), user],
                api_base=api_base,
                api_key=LITELLM_KEY,
            )
            text = reply.choices[0].message.content
            return {"messages": [user, {"role": "assistant", "content": text}], name: text}

        return node

    graph = StateGraph(ChatState)
    for step, name in enumerate(("a", "b", "c")):
        graph.add_node(name, make(step, name))
    graph.add_edge(START, "a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "c")
    graph.add_edge("c", END)
    return graph.compile()


def concurrent(params: dict[str, Any]) -> dict[str, Any]:
    """`runs` concurrent runs of the 3-step graph, each node calling the loopback server."""
    app = _litellm_graph(params["api_base"])
    n = params["runs"]

    async def main() -> dict[str, Any]:
        await app.ainvoke({"prompt": "warm up"})
        base = rss_mb()
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(app.ainvoke({"prompt": f"run {i}"}) for i in range(n)))
        wall = time.perf_counter() - t0
        if not all(o.get("c") for o in outs):
            raise RuntimeError("a run had no answer")
        return {
            "runs_per_s": n / wall,
            "wall_s": wall,
            "peak_rss_mb": peak_rss_mb(),
            "base_rss_mb": base,
        }

    return asyncio.run(main())


def sequential_litellm(params: dict[str, Any]) -> dict[str, Any]:
    """Per-run time of the 3-step graph over litellm, one run at a time."""
    app = _litellm_graph(params["api_base"])

    async def main() -> list[float]:
        return await timed_async(
            lambda: app.ainvoke({"prompt": "hi"}), params["warmup"], params["runs"]
        )

    return {"per_run_us": summarize(asyncio.run(main()))["median_us"]}


# -- whole process ----------------------------------------------------------------------------------


def once(params: dict[str, Any]) -> dict[str, Any]:
    """Build the 3-step graph and run it once (the start-up figure times the whole process)."""
    out = three_step_graph(asynchronous=False).invoke({"prompt": "hi"})
    _check(out)
    return {"answer": out["c"]}


def versions(params: dict[str, Any]) -> dict[str, Any]:
    """Versions of the rival packages in this venv."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": platform.python_version()}
    for name in (
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
        "timbal",
        "litellm",
        "llm",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


TASKS = {
    "engine3": engine3,
    "durable3": durable3,
    "conversation": conversation,
    "fan20": fan20,
    "concurrent": concurrent,
    "sequential_litellm": sequential_litellm,
    "once": once,
    "versions": versions,
}
