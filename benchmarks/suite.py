"""What is measured: each benchmark's jobs (per side) and the figures drawn from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import flows
from .common import turn_marks
from .harness import Job, Outcome

# Sides, and the group each belongs to (`--sides` selects groups): the direct litellm calls
# and the bare interpreter are baselines that run in our venv beside our side.
GROUPS = {
    "ours": "ours",
    "litellm": "ours",
    "python": "ours",
    "langgraph": "langgraph",
    "timbal": "timbal",
    "llm": "llm",
}
RIVAL_NAMES = {"langgraph": "LangGraph", "timbal": "Timbal (PyPI)", "llm": "llm (simonw)"}
# The benchmarks "over litellm" compare engines on the same client: ours sends its openai/…
# models through litellm there, as the rivals do (the openai_cli benchmark measures our own).
LITELLM_CLIENT = {"TIMBAL_OPENAI_CLIENT": "litellm"}


@dataclass
class Context:
    """What jobs need to know about this invocation."""

    quick: bool
    flows_dir: Path
    timbal: list[str]
    api_base: str = "http://127.0.0.1:9/v1"
    tmp: str | None = None

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


@dataclass
class Val:
    """One cell: a number in `unit`, or why there is none."""

    num: float | None
    unit: str = ""
    err: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Target:
    """`ratio`: ours / theirs must be at most `limit`; `max`: ours itself at most `limit`."""

    kind: str
    limit: float

    def text(self) -> str:
        return f"ratio ≤ {self.limit:g}" if self.kind == "ratio" else f"≤ {self.limit:g}"


@dataclass
class Row:
    """A line of the table: ours beside theirs, the ratio, the target and whether it is met."""

    figure: str
    ours: Val
    theirs: Val | None = None
    rival: str = ""
    target: Target | None = None
    compare: bool = True

    def ratio(self) -> float | None:
        if not self.compare or self.theirs is None:
            return None
        if self.ours.num is None or self.theirs.num is None or self.theirs.num == 0:
            return None
        return self.ours.num / self.theirs.num

    def met(self) -> bool | None:
        if self.target is None:
            return None
        value = self.ratio() if self.target.kind == "ratio" else self.ours.num
        return None if value is None else value <= self.target.limit


@dataclass
class Bench:
    """One benchmark: its jobs, how many repetitions, and its rows."""

    name: str
    title: str
    about: str
    reps: tuple[int, int]  # (full, quick)
    jobs: Callable[[Context], list[Job]]
    rows: Callable[[Results, Context], list[Row]]
    server_latency: float | None = None


@dataclass
class Results:
    """Medians per job of one benchmark."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def get(self, key: str, metric: str, unit: str = "", scale: float = 1.0) -> Val:
        """`metric` of job `key` (times `scale`), or a Val that says why it is missing."""
        outcome = self.outcomes.get(key)
        if outcome is None:
            return Val(None, unit, err="not run")
        if outcome.error is not None:
            return Val(None, unit, err=outcome.error)
        value = outcome.values.get(metric)
        if not isinstance(value, (int, float)):
            return Val(None, unit, err=f"no {metric}")
        return Val(float(value) * scale, unit)

    def text(self, key: str, metric: str) -> str:
        outcome = self.outcomes.get(key)
        return str(outcome.values.get(metric, "")) if outcome and outcome.error is None else ""


def quotient(a: Val, b: Val, unit: str = "x") -> Val:
    """a / b as a Val (errors carried over)."""
    if a.num is None:
        return Val(None, unit, err=a.err)
    if b.num is None:
        return Val(None, unit, err=b.err)
    if b.num == 0:
        return Val(None, unit, err="division by zero")
    return Val(a.num / b.num, unit)


# -- engine cost ----------------------------------------------------------------------------------


def _engine_jobs(ctx: Context) -> list[Job]:
    params = {"warmup": ctx.pick(50, 10), "runs": ctx.pick(1000, 100), "tmp": ctx.tmp}
    return [
        Job(f"{side}.engine3", side, "engine3", params) for side in ("ours", "langgraph", "timbal")
    ]


def _engine_rows(r: Results, ctx: Context) -> list[Row]:
    ours = r.get("ours.engine3", "per_run_us", "us")
    lg = r.get("langgraph.engine3", "per_run_us", "us")
    return [
        Row(
            "3-step flow, echo, no persistence: time per run",
            ours,
            lg,
            "LangGraph",
            Target("ratio", 0.5),
        ),
        Row(
            "3-step flow, echo, no persistence: time per run",
            ours,
            r.get("timbal.engine3", "per_run_us", "us"),
            "Timbal (3 chained agent turns)",
            Target("ratio", 0.5),
        ),
        Row(
            "3-step flow, echo: time per run (Timbal: Workflow of 3 agents, memory not shared)",
            ours,
            r.get("timbal.engine3", "workflow_isolated_us", "us"),
            "Timbal Workflow",
        ),
    ]


ENGINE = Bench(
    "engine",
    "Engine cost, offline model, no persistence",
    "The 3-step flow (a, b, c share memory `s`; prompts `{{ inputs.prompt }}`, `again`, "
    "`once more`) on the echo model, one run at a time, after a warm-up; the figure is the "
    "median time per run. LangGraph: the same graph with plain Python nodes that build the "
    "message list, answer what echo answers and append to a shared `messages` state "
    "(`operator.add`), no checkpointer; both `invoke` (sync nodes) and `ainvoke` (async "
    "nodes) are timed and the faster is the rival's figure. Timbal: its offline "
    "`TestModel` with a handler that answers what echo answers; a Workflow's agent steps "
    "have isolated memory, so the shared conversation is three chained turns of one Agent "
    "(`parent_id`, in-memory tracing provider); the Workflow form is shown beside it.",
    (7, 3),
    _engine_jobs,
    _engine_rows,
)


# -- durable state ----------------------------------------------------------------------------------


def _durable_jobs(ctx: Context) -> list[Job]:
    params = {"warmup": ctx.pick(10, 3), "runs": ctx.pick(100, 20), "tmp": ctx.tmp}
    return [
        Job("ours.jsonl", "ours", "durable3", {**params, "saver": "jsonl"}),
        Job("ours.sqlite", "ours", "durable3", {**params, "saver": "sqlite"}),
        Job("langgraph.sqlite", "langgraph", "durable3", params),
    ]


def _durable_rows(r: Results, ctx: Context) -> list[Row]:
    lg = r.get("langgraph.sqlite", "per_run_us", "us")
    return [
        Row(
            "3-step flow, durable JSONL (fsync per step): time per run",
            r.get("ours.jsonl", "per_run_us", "us"),
            lg,
            "LangGraph SqliteSaver, sync",
            Target("ratio", 0.5),
        ),
        Row(
            "3-step flow, durable SQLite (fsync per step): time per run",
            r.get("ours.sqlite", "per_run_us", "us"),
            lg,
            "LangGraph SqliteSaver, sync",
            Target("ratio", 0.5),
        ),
    ]


DURABLE = Bench(
    "durable",
    "Engine cost with durable state",
    "The same 3-step flow, each run a new conversation in one state file, after a warm-up. "
    "Ours: JSONLSaver and SQLiteSaver, each step's record fsynced before the step counts "
    "as done. LangGraph: SqliteSaver (`invoke`) and AsyncSqliteSaver (`ainvoke`) with "
    '`durability="sync"`, a new `thread_id` per run; the faster is the rival\'s figure. '
    "LangGraph's SQLite runs in WAL mode with synchronous=FULL, so each of its commits "
    "fsyncs too.",
    (5, 3),
    _durable_jobs,
    _durable_rows,
)


# -- a long conversation ----------------------------------------------------------------------------


def _conversation_jobs(ctx: Context) -> list[Job]:
    turns = ctx.pick(1000, 200)
    p = {"turns": turns, "tmp": ctx.tmp}
    budget = ctx.pick(90, 15)
    return [
        Job("ours.memory", "ours", "conversation", {**p, "saver": "memory"}),
        Job("ours.jsonl", "ours", "conversation", {**p, "saver": "jsonl"}),
        Job("ours.sqlite", "ours", "conversation", {**p, "saver": "sqlite"}),
        Job("langgraph.sqlite", "langgraph", "conversation", {**p, "saver": "sqlite"}),
        Job("langgraph.memory", "langgraph", "conversation", {**p, "saver": "memory"}),
        Job("timbal.memory", "timbal", "conversation", {**p, "saver": "memory"}),
        Job(
            "timbal.jsonl",
            "timbal",
            "conversation",
            {**p, "saver": "jsonl", "budget_s": budget},
            max_reps=1,
        ),
    ]


def _at(r: Results, key: str, metric: str, turn: int, unit: str) -> Val:
    """`metric@turn`; when the run stopped short (time budget), its last figure, marked so."""
    val = r.get(key, f"{metric}@{turn}", unit)
    outcome = r.outcomes.get(key)
    if val.num is None and outcome is not None and outcome.error is None:
        done = int(outcome.values.get("turns", 0))
        if metric == "ms":
            val = r.get(key, "ms@last", unit)
        else:
            marks = [m for m in turn_marks(done) if f"{metric}@{m}" in outcome.values]
            val = r.get(key, f"{metric}@{marks[-1]}", unit) if marks else val
        val.note = f"at turn {done}: stopped by its time budget"
    return val


def _conversation_rows(r: Results, ctx: Context) -> list[Row]:
    turns = ctx.pick(1000, 200)
    rows: list[Row] = []
    rival_of = {
        "memory": ("timbal.memory", "Timbal, in-memory"),
        "jsonl": ("timbal.jsonl", "Timbal, JSONL"),
        "sqlite": ("langgraph.sqlite", "LangGraph SqliteSaver"),
    }
    for saver, (rival_key, rival) in rival_of.items():
        key = f"ours.{saver}"
        t10, tn = _at(r, key, "ms", 10, "ms"), _at(r, key, "ms", turns, "ms")
        rt10, rtn = _at(r, rival_key, "ms", 10, "ms"), _at(r, rival_key, "ms", turns, "ms")
        rows += [
            Row(f"{turns}-turn conversation, {saver}: time per turn at turn 10", t10, rt10, rival),
            Row(
                f"{turns}-turn conversation, {saver}: time per turn at turn {turns}", tn, rtn, rival
            ),
            Row(
                f"{turns}-turn conversation, {saver}: turn {turns} / turn 10 time",
                quotient(tn, t10),
                _flat(rtn, rt10),
                rival,
                Target("max", 1.2),
                compare=False,
            ),
        ]
    rows.append(
        Row(
            f"{turns}-turn conversation, memory: time per turn at turn {turns}",
            _at(r, "ours.memory", "ms", turns, "ms"),
            _at(r, "langgraph.memory", "ms", turns, "ms"),
            "LangGraph InMemorySaver",
        )
    )
    for saver, rival_key, rival in (
        ("jsonl", "timbal.jsonl", "Timbal, JSONL"),
        ("sqlite", "langgraph.sqlite", "LangGraph SqliteSaver"),
    ):
        key = f"ours.{saver}"
        b10, bn = _at(r, key, "bytes_per_turn", 10, "B"), _at(r, key, "bytes_per_turn", turns, "B")
        rb10, rbn = (
            _at(r, rival_key, "bytes_per_turn", 10, "B"),
            _at(r, rival_key, "bytes_per_turn", turns, "B"),
        )
        prefix = f"{turns}-turn conversation, {saver}:"
        rows += [
            Row(f"{prefix} bytes stored per turn at turn 10", b10, rb10, rival),
            Row(f"{prefix} bytes stored per turn at turn {turns}", bn, rbn, rival),
            Row(
                f"{prefix} turn {turns} / turn 10 bytes per turn",
                quotient(bn, b10),
                _flat(rbn, rb10),
                rival,
                Target("max", 1.1),
                compare=False,
            ),
            Row(
                f"{prefix} state file size at the end",
                r.get(key, "file_bytes", "B"),
                r.get(rival_key, "file_bytes", "B"),
                rival,
            ),
        ]
    return rows


def _flat(late: Val, early: Val) -> Val:
    val = quotient(late, early)
    if late.note:
        val.note = late.note
    return val


CONVERSATION = Bench(
    "conversation",
    "A long conversation",
    "One conversation of N turns (1,000; 200 with --quick): each turn is a run of a "
    "one-step echo flow whose parent is the previous run, so the model sees the whole "
    "history. Time per turn at turn k is the median of the 9 turns ending at k; bytes per "
    "turn at k is how much the stored data grew over those 9 turns (for SQLite files: the "
    "bytes of every stored value, read on a separate connection, since WAL pages and "
    "checkpoints hide kilobyte growth; for JSONL: the file size). LangGraph: one thread "
    'of a one-node graph with SqliteSaver (`durability="sync"`) or InMemorySaver; each '
    "checkpoint holds the whole message list, so its file grows with the square of the "
    "turns. Timbal: one Agent, each turn chained by `parent_id`, with its in-memory or "
    "JSONL tracing provider; its JSONL provider rewrites the whole file on every save, so "
    "that run stops at a time budget (90 s; 15 s with --quick) and reports the last turn "
    "it reached. Targets apply to ours: turn N within 1.2× turn 10, bytes per turn flat "
    "(within 1.1×).",
    (3, 1),
    _conversation_jobs,
    _conversation_rows,
)


# -- concurrency -------------------------------------------------------------------------------------


def _concurrency_jobs(ctx: Context) -> list[Job]:
    fan = {"width": 20, "delay": 0.2, "runs": ctx.pick(5, 3), "tmp": ctx.tmp}
    many = {"runs": ctx.pick(500, 100), "api_base": ctx.api_base, "tmp": ctx.tmp}
    return [
        Job("ours.fan20", "ours", "fan20", fan),
        Job("langgraph.fan20", "langgraph", "fan20", fan),
        Job("ours.concurrent", "ours", "concurrent", many, env=LITELLM_CLIENT),
        Job("langgraph.concurrent", "langgraph", "concurrent", many),
        Job("litellm.concurrent", "litellm", "concurrent", many),
    ]


def _concurrency_rows(r: Results, ctx: Context) -> list[Row]:
    n = ctx.pick(500, 100)
    ours_rps = r.get("ours.concurrent", "runs_per_s", "runs/s")
    ours_mem = r.get("ours.concurrent", "peak_rss_mb", "MiB")
    return [
        Row(
            "20 independent steps of 200 ms: wall time of the run",
            r.get("ours.fan20", "wall_ms", "ms"),
            r.get("langgraph.fan20", "wall_ms", "ms"),
            "LangGraph",
            Target("max", 240),
        ),
        Row(
            f"{n} concurrent 3-step runs, litellm, 50 ms server: runs/s (higher is better)",
            ours_rps,
            r.get("langgraph.concurrent", "runs_per_s", "runs/s"),
            "LangGraph + litellm",
        ),
        Row(
            f"{n} concurrent 3-step runs, litellm, 50 ms server: runs/s (higher is better)",
            ours_rps,
            r.get("litellm.concurrent", "runs_per_s", "runs/s"),
            "litellm.acompletion direct",
        ),
        Row(
            f"{n} concurrent 3-step runs: wall time",
            r.get("ours.concurrent", "wall_s", "s"),
            r.get("litellm.concurrent", "wall_s", "s"),
            "litellm.acompletion direct",
            Target("ratio", 1.1),
        ),
        Row(
            f"{n} concurrent 3-step runs: peak memory of the process",
            ours_mem,
            r.get("langgraph.concurrent", "peak_rss_mb", "MiB"),
            "LangGraph + litellm",
        ),
        Row(
            f"{n} concurrent 3-step runs: peak memory of the process",
            ours_mem,
            r.get("litellm.concurrent", "peak_rss_mb", "MiB"),
            "litellm.acompletion direct",
        ),
        Row(
            f"{n} concurrent 3-step runs: memory the runs added (peak RSS - RSS before)",
            _added(r, "ours.concurrent"),
            _added(r, "langgraph.concurrent"),
            "LangGraph + litellm",
        ),
    ]


def _added(r: Results, key: str) -> Val:
    peak, base = r.get(key, "peak_rss_mb", "MiB"), r.get(key, "base_rss_mb", "MiB")
    if peak.num is None or base.num is None:
        return peak if peak.num is None else base
    return Val(peak.num - base.num, "MiB")


CONCURRENCY = Bench(
    "concurrency",
    "Concurrency",
    "Twenty independent echo steps with `params: {delay: 0.2}` in one run (LangGraph: 20 "
    "async nodes fanned out from START that each sleep 0.2 s); the figure is the run's wall "
    "time. Then N concurrent runs (500; 100 with --quick) of the 3-step flow with "
    "`model: openai/fake` on our fake OpenAI server (`runner.testing.openai_server`, its "
    "own process, 50 ms latency), started together with asyncio.gather after one warm-up "
    "run: runs per second and the process's peak RSS. LangGraph's nodes and the direct "
    "baseline call `litellm.acompletion` (same litellm version as ours) with the same "
    "growing message list, so the engines differ and the client does not.",
    (3, 1),
    _concurrency_jobs,
    _concurrency_rows,
    server_latency=0.05,
)


def _litellm_jobs(ctx: Context) -> list[Job]:
    p = {
        "warmup": ctx.pick(10, 3),
        "runs": ctx.pick(200, 30),
        "api_base": ctx.api_base,
        "tmp": ctx.tmp,
    }
    return [
        Job("ours.sequential", "ours", "sequential_litellm", p, env=LITELLM_CLIENT),
        Job("litellm.sequential", "litellm", "sequential_litellm", p),
        Job("langgraph.sequential", "langgraph", "sequential_litellm", p),
    ]


def _litellm_rows(r: Results, ctx: Context) -> list[Row]:
    ours = r.get("ours.sequential", "per_run_us", "us")
    return [
        Row(
            "3-step flow over litellm, loopback server: time per run",
            ours,
            r.get("litellm.sequential", "per_run_us", "us"),
            "litellm.acompletion direct",
            Target("ratio", 1.1),
        ),
        Row(
            "3-step flow over litellm, loopback server: time per run",
            ours,
            r.get("langgraph.sequential", "per_run_us", "us"),
            "LangGraph + litellm",
        ),
    ]


LITELLM = Bench(
    "litellm",
    "Engine cost over litellm",
    "The 3-step flow with `model: openai/fake` against the fake OpenAI server with no "
    "latency, one run at a time, after a warm-up: our engine's cost on top of the same "
    "three `litellm.acompletion` calls made directly (target: at most 10% above), and "
    "LangGraph's nodes making those calls.",
    (5, 2),
    _litellm_jobs,
    _litellm_rows,
    server_latency=0.0,
)


# -- start-up -----------------------------------------------------------------------------------------


def _startup_jobs(ctx: Context) -> list[Job]:
    flow = str(flows.write(ctx.flows_dir, "bench3", flows.BENCH3))
    worker = ("{python}", "-m", "benchmarks.worker")
    return [
        Job("python.pass", "python", argv=("{python}", "-c", "pass")),
        Job("ours.validate", "ours", argv=(*ctx.timbal, "validate", flow)),
        Job("ours.run", "ours", argv=(*ctx.timbal, "run", flow, "-i", "prompt=hi")),
        Job("ours.script", "ours", argv=(*worker, "ours", "once")),
        Job("langgraph.script", "langgraph", argv=(*worker, "langgraph", "once")),
        Job("timbal.script", "timbal", argv=(*worker, "timbal", "once")),
    ]


def _startup_rows(r: Results, ctx: Context) -> list[Row]:
    bare = r.get("python.pass", "wall_ms", "ms")
    script = r.get("ours.script", "wall_ms", "ms")
    return [
        Row(
            "timbal validate FLOW: whole process",
            r.get("ours.validate", "wall_ms", "ms"),
            bare,
            "python -c pass",
        ),
        Row(
            "timbal run FLOW -i prompt=hi (echo): whole process",
            r.get("ours.run", "wall_ms", "ms"),
            bare,
            "python -c pass",
        ),
        Row(
            "3-step flow as a Python script, run once: whole process",
            script,
            r.get("langgraph.script", "wall_ms", "ms"),
            "LangGraph",
        ),
        Row(
            "3-step flow as a Python script, run once: whole process",
            script,
            r.get("timbal.script", "wall_ms", "ms"),
            "Timbal (PyPI)",
        ),
    ]


STARTUP = Bench(
    "startup",
    "Start-up",
    "Whole processes timed from the outside, like hyperfine: each repetition starts every "
    "command once, in alternating order; the figure is the median wall time. `timbal "
    "validate` and `timbal run` are our CLI on the 3-step echo flow; `python -c pass` is "
    "the interpreter alone. The script rows run `python -m benchmarks.worker SIDE once`: "
    "import the library, build the 3-step flow or graph and run it once.",
    (10, 3),
    _startup_jobs,
    _startup_rows,
)


# -- compile time, hot reload ---------------------------------------------------------------------------


def _compile_jobs(ctx: Context) -> list[Job]:
    return [Job("ours.compile", "ours", "compile", {"runs": ctx.pick(5, 2)})]


def _compile_rows(r: Results, ctx: Context) -> list[Row]:
    ms = {n: r.get("ours.compile", f"compile_ms@{n}", "ms") for n in (10, 100, 1000)}
    return [
        Row(
            "load a flow of 1,000 steps (YAML with positions)",
            r.get("ours.compile", "load_ms@1000", "ms"),
        ),
        Row("compile a flow of 10 steps", ms[10]),
        Row("compile a flow of 100 steps", ms[100]),
        Row("compile a flow of 1,000 steps", ms[1000]),
        Row("compile time growth, 10 -> 100 steps (10x the steps)", quotient(ms[100], ms[10])),
        Row("compile time growth, 100 -> 1,000 steps (10x the steps)", quotient(ms[1000], ms[100])),
        Row(
            "report the errors of a broken flow of 1,000 steps",
            r.get("ours.compile", "errors_ms@1000", "ms"),
        ),
    ]


COMPILE = Bench(
    "compile",
    "Compile time",
    "`benchmarks/bench_compile.py` (`measure()`): `load_document` and `compile_file` on "
    "generated flows of 10, 100 and 1,000 echo steps, each reading the previous step's "
    "return, ten memory ids in turn; best of several runs after a warm-up, then the median "
    "over repetitions. Linear growth reads 10x per growth row.",
    (5, 2),
    _compile_jobs,
    _compile_rows,
)


def _reload_jobs(ctx: Context) -> list[Job]:
    return [Job("ours.hot_reload", "ours", "hot_reload", {"edits": ctx.pick(15, 5)})]


def _reload_rows(r: Results, ctx: Context) -> list[Row]:
    return [
        Row(
            "hot reload: flow file saved -> new output (timbal run --watch), median",
            r.get("ours.hot_reload", "reload_median_ms", "ms"),
            target=Target("max", 300),
        ),
        Row("hot reload: 90th percentile", r.get("ours.hot_reload", "reload_p90_ms", "ms")),
    ]


HOT_RELOAD = Bench(
    "hot_reload",
    "Hot-reload latency",
    "`benchmarks/bench_reload.py` (`measure()`): one `timbal run --watch` subprocess on a "
    "five-step echo flow; the last step's prompt is edited repeatedly, each time timed from "
    "just before the write to the new output line on the watcher's stdout (file event, "
    "debounce, re-compile, run, print). Median and 90th percentile over the edits.",
    (5, 1),
    _reload_jobs,
    _reload_rows,
)


# -- a real provider's protocol from the command line ------------------------------------------------


def _llm_user_path(ctx: Context) -> str:
    """A fresh LLM_USER_PATH for `llm` whose extra-openai-models.yaml names the loopback
    server: model `fake-gpt` is gpt-4o-mini at that api_base."""
    folder = Path(ctx.tmp or ctx.flows_dir) / "llm-user"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "extra-openai-models.yaml").write_text(
        f"- model_id: fake-gpt\n  model_name: gpt-4o-mini\n  api_base: \"{ctx.api_base}\"\n",
        encoding="utf-8",
    )
    return str(folder)


def _openai_cli_jobs(ctx: Context) -> list[Job]:
    flow = str(flows.write(ctx.flows_dir, "one", flows.openai_one()))
    server = {"OPENAI_API_BASE": ctx.api_base, "OPENAI_API_KEY": "sk-test"}
    run = (*ctx.timbal, "run", flow, "-i", "prompt=hi")
    expect = "reply to: hi"
    llm_env = {"LLM_USER_PATH": _llm_user_path(ctx), "OPENAI_API_KEY": "sk-test"}
    return [
        Job("ours.cli_openai", "ours", argv=run, env=server, expect=expect),
        Job("llm.cli_openai", "llm", argv=("{bin}/llm", "-m", "fake-gpt", "hi"), env=llm_env,
            expect=expect),
        Job("ours.cli_openai_litellm", "ours", argv=run, env={**server, **LITELLM_CLIENT},
            expect=expect),
        Job("ours.ttft", "ours", "ttft",
            {"warmup": ctx.pick(20, 5), "runs": ctx.pick(200, 30), "api_base": ctx.api_base,
             "tmp": ctx.tmp}),
    ]


def _openai_cli_rows(r: Results, ctx: Context) -> list[Row]:
    rival = RIVAL_NAMES["llm"]
    return [
        Row("timbal run, one step on openai/gpt-4o-mini: whole process, wall",
            r.get("ours.cli_openai", "wall_ms", "ms"), r.get("llm.cli_openai", "wall_ms", "ms"),
            rival, Target("ratio", 1.0)),
        Row("timbal run, one step on openai/gpt-4o-mini: whole process, peak memory",
            r.get("ours.cli_openai", "peak_mb", "MiB"), r.get("llm.cli_openai", "peak_mb", "MiB"),
            rival, Target("ratio", 1.0)),
        Row("the same through litellm (TIMBAL_OPENAI_CLIENT=litellm): wall",
            r.get("ours.cli_openai_litellm", "wall_ms", "ms"),
            r.get("llm.cli_openai", "wall_ms", "ms"), rival),
        Row("the same through litellm (TIMBAL_OPENAI_CLIENT=litellm): peak memory",
            r.get("ours.cli_openai_litellm", "peak_mb", "MiB"),
            r.get("llm.cli_openai", "peak_mb", "MiB"), rival),
        Row("time to first token, streamed run", r.get("ours.ttft", "ours_ms", "ms"),
            r.get("ours.ttft", "direct_ms", "ms"), "httpx direct"),
        Row("time to first token: our run minus the direct httpx call",
            r.get("ours.ttft", "overhead_ms", "ms"), target=Target("max", 5.0)),
    ]


OPENAI_CLI = Bench(
    "openai_cli",
    "A real provider's protocol from the command line",
    "A one-step flow on `openai/gpt-4o-mini`, the fake OpenAI server on loopback (no "
    "latency) standing in for the provider. Whole processes timed from the outside, with "
    "their peak resident memory from the kernel (`wait4`, as `/usr/bin/time` reads it): "
    "`timbal run one.yaml -i prompt=hi` (OPENAI_API_BASE names the server) beside "
    "`llm -m fake-gpt hi` (simonw's llm from the rivals' venv; its extra-openai-models.yaml, "
    "in a fresh LLM_USER_PATH, makes `fake-gpt` gpt-4o-mini at the server's api_base; llm "
    "streams and logs the call to its SQLite file, as it does by default). The litellm rows "
    "are our CLI with TIMBAL_OPENAI_CLIENT=litellm, the client it used before. Time to first "
    "token is in one process: a streamed run through `RunnableFlow.run` with a listener "
    "(what `timbal run` does at a terminal) beside the same request sent with httpx on a "
    "warm client, interleaved; the target is the difference of the medians.",
    (7, 2),
    _openai_cli_jobs,
    _openai_cli_rows,
    server_latency=0.0,
)


# -- map ----------------------------------------------------------------------------------------------


def _map_jobs(ctx: Context) -> list[Job]:
    params = {"items": ctx.pick(1000, 200), "runs": ctx.pick(5, 2), "tmp": ctx.tmp}
    return [
        Job("ours.map", "ours", "map_items", params),
        Job("ours.gather", "ours", "gather_items", params),
    ]


def _map_rows(r: Results, ctx: Context) -> list[Row]:
    items = ctx.pick("1,000", "200")
    ours, plain = r.get("ours.map", "per_item_us", "us"), r.get("ours.gather", "per_item_us", "us")
    engine = Val(None, "us", err=ours.err or plain.err)
    if ours.num is not None and plain.num is not None:
        engine = Val(ours.num - plain.num, "us")
    return [
        Row(f"map over {items} items of an echo step: time per item", ours, plain,
            "asyncio.gather of the same calls"),
        Row("map: engine cost per item (map minus gather)", engine),
        Row(f"map over {items} items: memory added at the peak",
            r.get("ours.map", "added_mb", "MiB"), r.get("ours.gather", "added_mb", "MiB"),
            "asyncio.gather of the same calls"),
    ]


MAP = Bench(
    "map",
    "Map over many items",
    "One `type: map` step over 1,000 items (200 with --quick) whose body is one echo step, "
    "in-memory saver, default concurrency: wall time of a run divided by the items (median "
    "over runs, after a warm-up), beside a plain `asyncio.gather` of the same 1,000 echo "
    "calls (`runner.models.complete`, no engine, no records, no memory snapshots). The "
    "difference is what the engine spends per item: rendering, a scope, a step record. "
    "Memory: the peak resident set size of the process minus its size before the timed runs.",
    (5, 2),
    _map_jobs,
    _map_rows,
)


# -- batches --------------------------------------------------------------------------------------


def _batch_jobs(ctx: Context) -> list[Job]:
    params = {"rows": ctx.pick(10_000, 2_000), "small": ctx.pick(1_000, 500), "queue_rows": ctx.pick(2_000, 400)}
    return [Job("ours.batch", "ours", "batch", params)]


def _batch_rows(r: Results, ctx: Context) -> list[Row]:
    rows, small = ctx.pick(10_000, 2_000), ctx.pick(1_000, 500)
    return [
        Row(f"batch of {rows:,} one-step echo rows (50 ms each), concurrency 200: wall time",
            r.get("ours.batch", "wall_s", "s"), r.get("ours.batch", "ideal_s", "s"), "ideal (rows × 50 ms / 200)",
            target=Target("ratio", 3.0)),
        Row("the same rows through RunnableFlow.run in a hand-written asyncio.gather",
            r.get("ours.batch", "wall_s", "s"), r.get("ours.batch", "hand_wall_s", "s"), "by hand",
            target=Target("ratio", 1.5)),
        Row("peak memory: timbal batch against the hand-written loop",
            r.get("ours.batch", f"peak_rss_mb@{rows}", "MB"), r.get("ours.batch", "hand_peak_rss_mb", "MB"),
            "by hand"),
        Row("batch throughput", r.get("ours.batch", "rows_per_s", "rows/s")),
        Row(f"batch peak memory: {rows:,} rows against {small:,}", r.get("ours.batch", f"peak_rss_mb@{rows}", "MB"),
            r.get("ours.batch", f"peak_rss_mb@{small}", "MB"), f"{small:,} rows", target=Target("ratio", 1.3)),
        Row("queued batch drained by two workers against one (PostgreSQL)",
            r.get("ours.batch", "two_workers_s", "s"), r.get("ours.batch", "one_worker_s", "s"), "one worker",
            target=Target("ratio", 0.8)),
    ]


BATCH = Bench(
    "batch",
    "Batches and workers",
    "`benchmarks/bench_batch.py` (`measure()`): the real `timbal batch` CLI on a one-step echo "
    "flow with `params: {delay: 0.05}`. Throughput: wall time of the whole process against the "
    "ideal rows × 50 ms / 200. Memory: peak RSS of the batch process (`wait4`) at two sizes; "
    "flat reads about 1. Workers: rows queued with `--queue` on PostgreSQL, drained by one "
    "`timbal worker --burst --concurrency 50`, then (fresh schema) by two at once.",
    (1, 1),
    _batch_jobs,
    _batch_rows,
)


# -- serving ---------------------------------------------------------------------------------------------


def _serve_jobs(ctx: Context) -> list[Job]:
    import os

    params = {"requests": ctx.pick(3000, 300), "stream_times": ctx.pick(200, 30),
              "postgres": os.environ.get("TIMBAL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")}
    return [Job("ours.serve", "ours", "serve", params)]


def _per_request_ms(r: Results, side: str) -> Val:
    rps = r.get("ours.serve", f"{side}.rps")
    if not rps.num:
        return Val(None, "ms", err=rps.err or "no throughput")
    return Val(1000 / rps.num, "ms")


def _serve_rows(r: Results, ctx: Context) -> list[Row]:
    rows = []
    for side, label in (("memory", "in-memory saver"), ("postgres", "PostgreSQL saver")):
        rows += [
            Row(f"timbal serve, {label}: requests/s at 50 clients", r.get("ours.serve", f"{side}.rps", "req/s"),
                r.get("ours.serve", "bare.rps", "req/s"), "bare FastAPI", compare=False),
            Row(f"timbal serve, {label}: time per request (1 / throughput)", _per_request_ms(r, side),
                _per_request_ms(r, "bare"), "bare FastAPI",
                Target("ratio", 2.0) if side == "memory" else None),
            Row(f"timbal serve, {label}: server CPU per request", r.get("ours.serve", f"{side}.cpu_us", "us"),
                r.get("ours.serve", "bare.cpu_us", "us"), "bare FastAPI"),
            Row(f"timbal serve, {label}: p50 latency", r.get("ours.serve", f"{side}.p50_ms", "ms"),
                r.get("ours.serve", "bare.p50_ms", "ms"), "bare FastAPI"),
            Row(f"timbal serve, {label}: p99 latency", r.get("ours.serve", f"{side}.p99_ms", "ms"),
                r.get("ours.serve", "bare.p99_ms", "ms"), "bare FastAPI"),
        ]
    rows += [
        Row("streamed chat completion: time to first byte", r.get("ours.serve", "memory_stream.first_byte_ms", "ms"),
            r.get("ours.serve", "bare_stream.first_byte_ms", "ms"), "bare FastAPI + sse-starlette"),
        Row("streamed chat completion: first-byte overhead over bare",
            r.get("ours.serve", "stream_first_byte_overhead_ms", "ms"), target=Target("max", 5)),
    ]
    return rows


SERVE = Bench(
    "serve",
    "Serving over HTTP",
    "`benchmarks/bench_serve.py` (`measure()`): real server processes on loopback, one at a "
    "time, each uvicorn with one worker, driven by aiohttp from the benchmark process at 50 "
    "concurrent clients: `timbal serve` on a one-step echo flow (`POST /flows/echo/runs`) with "
    "the in-memory and the PostgreSQL saver, beside a bare FastAPI route that answers the same "
    "text (the stack's own limit). Streaming: one client at a time, the time to the first byte "
    "of a streamed `/v1/chat/completions` beside a bare sse-starlette route sending the same chunks.",
    (3, 1),
    _serve_jobs,
    _serve_rows,
)


# -- the web page ----------------------------------------------------------------------------------------


def _ui_jobs(ctx: Context) -> list[Job]:
    return [Job("ours.ui", "ours", "web_page", {"turns": ctx.pick(30, 5)})]


def _ui_rows(r: Results, ctx: Context) -> list[Row]:
    client = "httpx streaming the same run (POST, Accept: text/event-stream)"
    rows = [
        Row("web page chat: first streamed text on screen after Send", r.get("ours.ui", "page_first_ms", "ms"),
            r.get("ours.ui", "client_first_ms", "ms"), client, Target("max", 200)),
        Row("web page chat: turn done and conversation redrawn", r.get("ours.ui", "page_ms", "ms"),
            r.get("ours.ui", "client_ms", "ms"), client),
    ]
    for page in ("flows", "flow", "runs"):
        rows.append(Row(f"web page weight on first load, {page} page (all from the server)",
                        r.get("ours.ui", f"weight.{page}.kb", "KB"), target=Target("max", 100)))
    turns = ctx.pick(30, 5)
    for page in ("chat", "run"):  # these carry the conversation itself, so they grow with it
        rows.append(Row(f"web page weight on first load, {page} page of a {turns}-turn conversation",
                        r.get("ours.ui", f"weight.{page}.kb", "KB")))
    return rows


UI = Bench(
    "ui",
    "The web page",
    "`benchmarks/bench_ui.py` (`measure()`): `timbal serve` on a one-step echo chat flow and "
    "Debian's chromium through Playwright. One turn at a time, interleaved: on the chat page, "
    "the time from Send to the reply's first streamed text and to the finished turn, timed in "
    "the page (`performance.now()`); beside it the same turn from an httpx client that streams "
    "`POST /flows/chat/runs`. The page starts a background run and follows its events, one more "
    "round trip than the client. Weight: bytes received while each page first loads.",
    (1, 1),
    _ui_jobs,
    _ui_rows,
)


# -- saver I/O and the event loop ---------------------------------------------------------------------

#: The last commit before saver writes moved off the event loop: its figure is measured beside ours.
SYNC_SAVERS_REF = "32896e3"


def _baseline_code(ctx: Context) -> str | None:
    """A checkout of SYNC_SAVERS_REF (runner/ and schemas/) under the work folder, or None."""
    import subprocess
    import tarfile
    from io import BytesIO

    from .harness import ROOT, WORK

    target = WORK / f"code-{SYNC_SAVERS_REF}"
    if (target / "runner" / "__init__.py").is_file():
        return str(target)
    done = subprocess.run(["git", "-C", str(ROOT), "archive", SYNC_SAVERS_REF, "runner", "schemas"],
                          capture_output=True, timeout=60)
    if done.returncode != 0:
        return None
    target.mkdir(parents=True, exist_ok=True)
    safe: dict[str, Any] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
    with tarfile.open(fileobj=BytesIO(done.stdout)) as archive:  # our own commit's files
        archive.extractall(target, **safe)
    return str(target)


def _lag_jobs(ctx: Context) -> list[Job]:
    import os

    dsn = os.environ.get("TIMBAL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    base = {"runs": 50, "tmp": ctx.tmp, "dsn": dsn}
    before = _baseline_code(ctx)
    jobs = [
        Job("ours.lag_sqlite", "ours", "loop_lag", {**base, "saver": "sqlite"}),
        Job("ours.lag_postgres", "ours", "loop_lag", {**base, "saver": "postgres"}),
    ]
    if before is not None:
        jobs += [
            Job("before.lag_sqlite", "ours", "loop_lag", {**base, "saver": "sqlite", "code": before}),
            Job("before.lag_postgres", "ours", "loop_lag", {**base, "saver": "postgres", "code": before}),
        ]
    return jobs


def _lag_rows(r: Results, ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for saver, name in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        rival = f"saver calls on the event loop ({SYNC_SAVERS_REF})"
        rows += [
            Row(f"50 concurrent 3-step runs, {name}: worst event-loop lag (1 ms ticker)",
                r.get(f"ours.lag_{saver}", "max_lag_ms", "ms"),
                r.get(f"before.lag_{saver}", "max_lag_ms", "ms"), rival, Target("max", 10)),
            Row(f"50 concurrent 3-step runs, {name}: 99th percentile event-loop lag",
                r.get(f"ours.lag_{saver}", "p99_lag_ms", "ms"),
                r.get(f"before.lag_{saver}", "p99_lag_ms", "ms"), rival),
            Row(f"50 concurrent 3-step runs, {name}: the ticker alone (machine noise), worst lag",
                r.get(f"ours.lag_{saver}", "idle_max_lag_ms", "ms")),
        ]
    return rows


LOOP_LAG = Bench(
    "loop_lag",
    "Saver I/O and the event loop",
    "While 50 runs of the 3-step echo flow write to one SQLite file (WAL, synchronous=FULL) "
    "or one PostgreSQL schema at once, a task sleeps 1 ms again and again; its lag is how "
    "late each wake-up is, and the figure is the worst (and the 99th percentile). Ours: the "
    "engine awaits each write in the saver thread pool, one ordered lane per run. Beside it: "
    f"the same code as of {SYNC_SAVERS_REF}, whose saver calls ran on the event loop, "
    "measured the same way in this invocation. The ticker alone (no runs) shows what the "
    "machine itself adds.",
    (5, 2),
    _lag_jobs,
    _lag_rows,
)


# The batch benchmark runs last: its 10,000 rows and queued jobs leave PostgreSQL busy for a
# while (autovacuum, checkpoints), which the serving and event-loop figures would otherwise pay for.
BENCHES = [ENGINE, DURABLE, CONVERSATION, CONCURRENCY, LITELLM, STARTUP, COMPILE, HOT_RELOAD,
           MAP, OPENAI_CLI, SERVE, UI, LOOP_LAG, BATCH]
