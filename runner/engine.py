"""The engine: runs an ExecutionGraph on asyncio, saves each step durably, emits events.

Each step starts the moment the steps it depends on are done (data references plus the
file-order chain of a shared memory_id), so independent steps run at the same time,
bounded by `max_concurrency`. A step's record is saved (durably, by the saver) before
the step counts as done and before its messages join the memory; a crash therefore
loses at most the steps in flight. A failed step stops new steps from starting; steps
already running finish and are recorded. Resume re-runs only what did not succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import events as ev
from .errors import InputError, SaverError, StepError, WaitingForAnswer
from .events import Event
from .graph import ExecutionGraph, StepSpec, thaw
from .ids import new_run_id
from .memory import ConversationStore, MemoryView, SnapshotMemoryView, join_deltas, steps_delta
from .registry import step_kinds
from .savers.base import RunRecord, Saver, StepRecord, encode_json
from .secrets import Redactor, secret_param_values
from .steps.base import StepOutcome, add_usage, is_true
from .templates import TemplateRenderError, render_value

if TYPE_CHECKING:
    from .cache import StepCache

__all__ = ["Engine", "RunResult", "StepOutcome", "EngineStepContext", "DEFAULT_MAX_CONCURRENCY",
           "check_answers"]

DEFAULT_MAX_CONCURRENCY = 64

Listener = Callable[[Event], None]


@dataclass
class RunResult:
    """The end of a run: its id, status (succeeded, failed, interrupted, waiting), outputs
    and usage. A waiting run lists the questions it waits on in `waiting`."""

    run_id: str
    parent_id: str | None
    status: str
    outputs: Any
    error: str | None
    usage: dict[str, Any]
    steps: dict[str, StepRecord]
    started_at: float
    ended_at: float
    waiting: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """The shape `timbal run --json` prints (a waiting run adds its questions)."""
        data = {
            "run_id": self.run_id,
            "parent_id": self.parent_id,
            "status": self.status,
            "outputs": self.outputs,
            "usage": self.usage,
            "error": self.error,
        }
        if self.status == "waiting":
            data["waiting"] = self.waiting
        return data


class _RunState:
    """Everything one run shares across its (sub-)flows. Lives only as long as the run."""

    def __init__(
        self,
        run_id: str,
        parent_id: str | None,
        saver: Saver,
        redactor: Redactor,
        listener: Listener | None,
        stream: bool | frozenset[str],
        max_concurrency: int,
        prior: dict[str, StepRecord],
        seq: int,
        answers: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_id = run_id
        self.parent_id = parent_id
        self.saver = saver
        self.redact = redactor
        self.listener = listener
        self.stream = stream
        self.slots = asyncio.Semaphore(max_concurrency)
        self.prior = prior
        self.seq = seq
        self.failed: str | None = None
        self.usage: dict[str, Any] = {}
        self.records: dict[str, StepRecord] = {}
        self.saved: dict[str, StepRecord] = {}  # what the saver was given (redacted)
        self.answers: Mapping[str, Any] = answers or {}
        self.waiting: list[dict[str, Any]] = []  # the questions of input steps left waiting

    def emit(self, type_: str, step_id: str | None = None, **data: Any) -> None:
        if self.listener is not None:
            self.listener(Event(type_, self.run_id, step_id, data))

    def wants_chunks(self, path: str) -> bool:
        return self.stream is True or (isinstance(self.stream, frozenset) and path in self.stream)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class _Scope:
    """One flow being executed inside a run: the top flow, or a sub-flow of a `flow` step."""

    def __init__(
        self,
        graph: ExecutionGraph,
        inputs: dict[str, Any],
        memory: MemoryView,
        prefix: str,
        run: _RunState,
        boundary: _Scope | None = None,
        contained: bool = False,
        names: Mapping[str, Any] | None = None,
    ) -> None:
        self.graph = graph
        self.memory = memory
        self.prefix = prefix
        self.run = run
        # A contained scope (an agent's tool call) keeps its steps' failures to itself: they
        # stop the rest of it and fail the call, not the run. Nested scopes report to it.
        self.failed: str | None = None
        self.boundary: _Scope | None = self if contained else boundary
        # `names`: an inline body's view of the outer scope (its steps, the item, `loop`).
        self.context: dict[str, Any] = dict(names or {})
        self.context.update(
            inputs=inputs,
            env=environ_view(),
            run={"id": run.run_id, "parent_id": run.parent_id, "flow": graph.name},
        )
        self.status: dict[str, str] = {}

    def path(self, step_id: str) -> str:
        return f"{self.prefix}{step_id}"

    @property
    def halted(self) -> bool:
        """Whether a step failed in the run, or inside the contained scope this one is part of."""
        return bool(self.run.failed or (self.boundary is not None and self.boundary.failed))


class _Environ(Mapping[str, str]):
    """`env` in templates: the process environment, read when a template reads it (no copy).

    A missing variable raises KeyError, which Jinja turns into an undefined (an error).
    """

    __slots__ = ()
    __module__ = "builtins"  # Jinja then names it "'_Environ object'" (templates.py reads that)

    def __getitem__(self, name: str) -> str:
        return os.environ[name]

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)

    def __repr__(self) -> str:
        return repr(dict(os.environ))


_ENVIRON = _Environ()


def environ_view() -> Mapping[str, str]:
    """`env` as templates see it: the live environment, read-only, never copied."""
    return _ENVIRON


class EngineStepContext:
    """The engine's `runner.steps.base.StepContext`: a step's spec, rendering, memory, sub-flows."""

    def __init__(self, engine: Engine, scope: _Scope, spec: StepSpec) -> None:
        self.engine = engine
        self.scope = scope
        self.spec = spec
        self.path = scope.path(spec.id)
        self.memory = scope.memory
        self.base_dir = scope.graph.path.parent if scope.graph.path else None
        self._run = scope.run

    @property
    def config(self) -> Mapping[str, Any]:
        return self.spec.config

    def render(self, value: Any, names: Mapping[str, Any] | None = None) -> Any:
        """Render templates inside `value` with the run's context (inputs, env, run, steps),
        plus `names` (a map's item, a loop's `loop` and `STEP.last`) when given."""
        context = {**self.scope.context, **names} if names else self.scope.context
        return render_value(value, context)

    @property
    def on_chunk(self) -> Callable[[str], None] | None:
        """A callback that emits text chunks, when someone listens for this step's chunks."""
        if not self._run.wants_chunks(self.path):
            return None
        path = self.path
        return lambda text: self._run.emit(ev.STEP_CHUNK, path, text=text)

    def add_secret(self, value: Any) -> None:
        """Keep `value` (an api key passed in params, ...) out of everything saved."""
        self._run.redact.add(value)

    @property
    def max_concurrency(self) -> int:
        """How many steps of the run may run at once."""
        return self.engine.max_concurrency

    @property
    def slots(self) -> asyncio.Semaphore:
        """The run's concurrency slots: a step that makes many calls (an agent) holds one per call."""
        return self._run.slots

    async def run_subflow(
        self,
        graph: ExecutionGraph,
        inputs: dict[str, Any],
        isolated: bool,
        name: str | None = None,
        memory: MemoryView | None = None,
        contained: bool = False,
    ) -> Any:
        """Run `graph` as part of this run; its steps are recorded as `this_step/child`.

        Shared memory: the child reads and writes this run's conversations. Isolated:
        its conversations are kept under `this_step:` keys. Returns the child's outputs.
        `name` files the child under `this_step/name/` instead (one name per call when a
        step runs a flow several times, e.g. an agent's tool calls `tool#1`, `tool#2`);
        `memory` replaces the view the child sees (an agent's fork of its conversation);
        `contained`: a failed child step fails this call only (StepError), not the run.
        """
        from .inputs import prepare_inputs

        base = f"{self.path}/{name}" if name else self.path
        if memory is None:
            memory = self.memory.nested(f"{base}:") if isolated else self.memory
        for secret in graph.secrets:
            self._run.redact.add(os.environ.get(secret))
        child = _Scope(
            graph,
            prepare_inputs(graph, inputs),
            memory,
            f"{base}/",
            self._run,
            boundary=self.scope.boundary,
            contained=contained,
        )
        await self.engine._execute_scope(child)
        failed = [sid for sid, st in child.status.items() if st == "failed"]
        if failed or child.halted:
            detail = f": {child.failed}" if contained and child.failed else ""
            raise StepError(
                f"sub-flow {graph.name!r} failed at step '{(failed or ['?'])[0]}'{detail}"
            )
        if "waiting" in child.status.values():
            raise WaitingForAnswer()
        return self.engine._outputs(child)

    @property
    def answer(self) -> tuple[bool, Any]:
        """(True, value) when the person's answer to this step was given, else (False, None)."""
        answers = self._run.answers
        return (True, answers[self.path]) if self.path in answers else (False, None)

    async def run_body(
        self,
        body: ExecutionGraph,
        label: str,
        names: Mapping[str, Any],
        memory: MemoryView,
        inputs: dict[str, Any] | None = None,
    ) -> Any:
        """Run this step's body once (a map item, a loop iteration), filed as `this_step{label}/`.

        An inline body (`inputs` None) sees the outer scope plus `names` (the item, `loop`,
        the loop's own `last`); a `flow:` body sees only its `inputs`. Its failures stay in
        it and raise StepError; a step in it left waiting raises WaitingForAnswer. Returns the
        body's result: its `outputs` if it declares them, else the last step's return (a
        `flow:` body: the child's outputs, as a `flow` step returns them).
        """
        from .inputs import prepare_inputs

        outer = self.scope
        if inputs is None:
            values, context = outer.context["inputs"], {**outer.context, **names}
        else:
            try:
                values, context = prepare_inputs(body, inputs), {}
            except InputError as exc:  # inputs that fail the child's declared types
                problems = "; ".join(d.message for d in exc.diagnostics)
                raise StepError(f"inputs of flow '{body.name}': {problems}", self.spec.id) from None
        child = _Scope(body, values, memory, f"{self.path}{label}/", self._run,
                       boundary=outer.boundary, contained=True, names=context)
        await self.engine._execute_scope(child)
        if child.failed:
            raise StepError(child.failed)
        if child.halted or "not_run" in child.status.values():
            raise StepError(f"{self.path}{label} did not finish: the run stopped")
        if "waiting" in child.status.values():
            raise WaitingForAnswer()
        if inputs is None and body.outputs is None:
            return child.context[body.steps[-1].id]["return"]
        return self.engine._outputs(child)

    def snapshot_memory(self) -> MemoryView:
        """This step's conversations as they stand now, in a store of their own (a map item:
        it starts from them, and what it adds never reaches the run's memory)."""
        return SnapshotMemoryView(self.memory, self.spec.memory_ids)




def _resumable(graph: ExecutionGraph, succeeded: dict[str, StepRecord]) -> dict[str, StepRecord]:
    """The succeeded records a resume keeps: all but those of an agent's tool calls
    (`agent/tool#N/...`) whose agent step did not succeed. That agent runs again from its
    start, and its model may ask for other calls, so their old results would be stale.
    (A loop's iterations, `loop#N/...`, are kept: the loop replays them from their records.)"""
    kept: dict[str, StepRecord] = {}
    for path, record in succeeded.items():
        parts = path.split("/")
        owners = ["/".join(parts[:i]) for i in _tool_call_parts(graph, parts)]
        if all(owner in succeeded for owner in owners):
            kept[path] = record
    return kept


def _tool_call_parts(graph: ExecutionGraph, parts: list[str]) -> Iterator[int]:
    """The positions in a record path (split at '/') that name an agent's tool call."""
    current: ExecutionGraph | None = graph
    owner: StepSpec | None = None
    for i, part in enumerate(parts):
        name = part.split("#", 1)[0].split("[", 1)[0]
        if owner is not None and name in owner.tool_flows:  # an agent's flow tool
            yield i
            current, owner = owner.tool_flows[name], None
            continue
        owner = current.by_id.get(name) if current is not None else None
        current = owner.subflow if owner is not None else None


class Engine:
    """Runs one compiled flow. Reusable and safe to share: all run state lives in the run."""

    def __init__(
        self,
        graph: ExecutionGraph,
        saver: Saver,
        max_concurrency: int | None = None,
        cache: StepCache | None = None,
    ) -> None:
        self.graph = graph
        self.saver = saver
        # Incremental re-runs (watch, chat): unchanged steps reuse their earlier outcome.
        self.cache = cache
        setting = graph.settings.get("max_concurrency") if graph.settings else None
        self.max_concurrency = max_concurrency or setting or DEFAULT_MAX_CONCURRENCY

    async def execute(
        self,
        inputs: dict[str, Any],
        parent_id: str | None = None,
        resume_id: str | None = None,
        listener: Listener | None = None,
        stream: bool | frozenset[str] = False,
        answers: Mapping[str, Any] | None = None,
        history: dict[str, list[dict[str, Any]]] | None = None,
    ) -> RunResult:
        """Run the flow once. `inputs` must already be prepared (see runner.inputs).

        With `resume_id`, the run of that id is carried on: its succeeded steps are kept
        (not run again) and the rest run; `answers` ({input step path: value}) answer the
        questions it waits on (InputError, before anything changes, when one does not fit).
        `history` (memory id -> messages) starts a new run's conversations with messages
        from outside (an OpenAI request's earlier messages); they are saved with the run, so
        runs that continue it see them too.
        Raises asyncio.CancelledError after recording the run as interrupted.
        """
        saver = self.saver
        redactor = Redactor(self.graph.secrets)
        note_secret_params(self.graph, inputs, redactor)
        prior: dict[str, StepRecord] = {}
        seq = 0
        if resume_id is not None:
            old = await saver.aget_run(resume_id)
            check_answers(old, answers or {})
            run_id, parent_id = old.run_id, old.parent_id
            if inputs:  # `--resume ID -i n=100`: the run goes on with, and records, the new inputs
                old.inputs = redactor(inputs)
            else:
                inputs = old.inputs
            prior = _resumable(
                self.graph, {s.step_id: s for s in old.steps if s.status == "succeeded"}
            )
            seq = max((s.seq for s in old.steps), default=0)
            record = old
            record.status, record.ended_at, record.error = "running", None, None
        else:
            check_early_answers(self.graph, answers or {})
            run_id = new_run_id()
            record = RunRecord(
                run_id=run_id,
                parent_id=parent_id,
                flow_name=self.graph.name,
                flow_path=str(self.graph.path) if self.graph.path else None,
                flow_hash=self.graph.content_hash,
                inputs=redactor(inputs),
            )
        base = await saver.aload_memory(parent_id) if parent_id else {}
        store = ConversationStore(base)
        for mid, msgs in steps_delta(prior.values()).items():  # a resumed run's kept steps
            store.append(mid, msgs)
        await saver.astart_run(record)
        run = _RunState(
            run_id, parent_id, saver, redactor, listener, stream, self.max_concurrency, prior, seq,
            answers,
        )
        if history and resume_id is None:
            await self._seed_history(run, store, history)
        run.emit(ev.RUN_STARTED, parent_id=parent_id, flow=self.graph.name, resumed=bool(resume_id))
        scope = _Scope(self.graph, dict(inputs), store.view(), "", run)
        outputs: Any = None
        try:
            await self._execute_scope(scope)
            waiting = "waiting" in scope.status.values()
            if run.failed is None and not waiting:
                try:
                    outputs = self._outputs(scope)
                except TemplateRenderError as exc:
                    run.failed = f"outputs: {exc}"
            status = "failed" if run.failed else "waiting" if waiting else "succeeded"
        except SaverError as exc:  # the store failed mid-run: what was saved stays resumable
            exc.run_id = run_id
            with contextlib.suppress(SaverError):
                await saver.afinish_run(run_id, "failed", None, redactor(str(exc)), redactor(run.usage))
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            await saver.afinish_run(
                run_id, "interrupted", None, "interrupted", redactor(run.usage), time.time()
            )
            run.emit(ev.RUN_FINISHED, status="interrupted", outputs=None, error="interrupted")
            raise
        ended = time.time()
        error = redactor(run.failed)  # a step's error may quote a secret (its record's is redacted too)
        await saver.afinish_run(run_id, status, redactor(outputs), error, redactor(run.usage), ended)
        if status == "succeeded":
            saver.remember_memory(run_id, _final_memory(base, {**prior, **run.saved}))
        if status == "waiting":
            run.emit(ev.RUN_WAITING, waiting=run.waiting)
        run.emit(ev.RUN_FINISHED, status=status, outputs=outputs, error=error, usage=run.usage)
        steps = {**prior, **run.records}
        return RunResult(
            run_id, parent_id, status, outputs, error, run.usage, steps, record.started_at, ended,
            run.waiting if status == "waiting" else [],
        )

    async def _seed_history(
        self, run: _RunState, store: ConversationStore, history: dict[str, list[dict[str, Any]]]
    ) -> None:
        """Save `history` as the run's first record (HISTORY_STEP) and start its memory with it."""
        from .history import HISTORY_STEP

        now = time.time()
        record = StepRecord(step_id=HISTORY_STEP, status="succeeded", seq=run.next_seq(),
                            started_at=now, ended_at=now, attempts=0,
                            messages={mid: list(msgs) for mid, msgs in history.items()})
        await self._save(run, record)
        for mid, msgs in record.messages.items():
            store.append(mid, msgs)

    # -- scheduling ---------------------------------------------------------------------
    async def _execute_scope(self, scope: _Scope) -> None:
        loop = asyncio.get_running_loop()
        done: dict[str, asyncio.Future[str]] = {s.id: loop.create_future() for s in scope.graph.steps}
        if len(scope.graph.steps) == 1:  # e.g. a map item's body: nothing to run beside it
            await self._step(scope, scope.graph.steps[0], done)
            return
        tasks = [asyncio.ensure_future(self._step(scope, spec, done)) for spec in scope.graph.steps]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _step(self, scope: _Scope, spec: StepSpec, done: dict[str, asyncio.Future[str]]) -> None:
        status = "not_run"
        try:
            for dep in spec.deps:
                await done[dep]
            status = await self._run_step(scope, spec)
        finally:
            scope.status[spec.id] = status
            fut = done[spec.id]
            if not fut.done():
                fut.set_result(status)

    async def _run_step(self, scope: _Scope, spec: StepSpec) -> str:
        run = scope.run
        path = scope.path(spec.id)
        dep_status = [scope.status.get(d) for d in spec.data_deps]
        if scope.halted or "failed" in dep_status:
            return "not_run"
        if any(scope.status.get(d) in ("not_run", "waiting") for d in spec.deps):
            return "not_run"  # (data deps among them) a step waiting on an answer holds its users
        old = run.prior.get(path) if not step_kinds[spec.kind].container else None
        if old is not None:
            self._publish(scope, spec, old)
            add_usage(run.usage, old.usage)  # the run's total counts the work it kept
            run.emit(ev.STEP_REUSED, path, **{"return": old.return_value, "reason": "resumed"})
            return "succeeded"
        if "skipped" in dep_status and not spec.config.get("allow_skipped"):
            return await self._skip(scope, spec, "a step it needs was skipped")
        ctx = EngineStepContext(self, scope, spec)
        started = time.time()
        try:
            if spec.when is not None and not is_true(ctx.render(spec.when)):
                return await self._skip(scope, spec, "condition is false")
            cache_key, cached = self.cache.lookup(ctx) if self.cache is not None else (None, None)
            if cached is not None:
                outcome: StepOutcome = cached
            else:
                kind = step_kinds[spec.kind]
                if kind.leaf:
                    async with run.slots:  # a step starts when it has a slot, not before
                        started = time.time()
                        run.emit(ev.STEP_STARTED, path, kind=spec.kind)
                        outcome = await kind.execute(ctx)
                else:  # containers hold no slot, or nested flows would deadlock
                    run.emit(ev.STEP_STARTED, path, kind=spec.kind)
                    outcome = await kind.execute(ctx)
        except asyncio.CancelledError:
            raise
        except WaitingForAnswer as exc:
            return await self._wait(scope, spec, exc.question, started)
        except TemplateRenderError as exc:
            return await self._fail(scope, spec, str(exc), started, 1)
        except StepError as exc:  # its usage: what the step spent before it failed
            attempts = getattr(exc, "attempts", 1)
            return await self._fail(scope, spec, str(exc), started, attempts, exc.usage)
        except Exception as exc:  # noqa: BLE001 - any error of a step fails that step only
            return await self._fail(scope, spec, f"{type(exc).__name__}: {exc}", started, 1)
        record = StepRecord(
            step_id=path,
            status="succeeded",
            seq=run.next_seq(),
            return_value=outcome.return_value,
            model=outcome.model,
            usage=outcome.usage,
            started_at=started,
            ended_at=time.time(),
            attempts=outcome.attempts,
            messages={scope.memory.key(m): msgs for m, msgs in outcome.messages.items()},
            cache_key=cache_key,
        )
        await self._save(run, record)
        for key, msgs in record.messages.items():
            scope.memory.store.append(key, msgs)
        self._publish(scope, spec, record, outcome.attributes)
        if cached is not None:  # nothing was spent: the run's usage leaves it out
            run.emit(ev.STEP_REUSED, path, **{"return": outcome.return_value, "reason": "cached"})
            return "succeeded"
        if self.cache is not None and cache_key is not None:
            self.cache.store(cache_key, outcome)
        add_usage(run.usage, outcome.usage)
        run.emit(
            ev.STEP_FINISHED, path, **{"return": outcome.return_value, "usage": outcome.usage}
        )
        return "succeeded"

    async def _save(self, run: _RunState, record: StepRecord) -> None:
        """Record a finished step: durable (off the event loop) before it counts as done."""
        run.records[record.step_id] = record
        saved = record
        if run.redact.active:
            saved = dataclasses.replace(
                record,
                return_value=run.redact(record.return_value),
                error=run.redact(record.error),
                usage=run.redact(record.usage),  # an agent's tool_trace quotes tool errors
                messages=run.redact(record.messages),
            )
        await run.saver.asave_step(run.run_id, saved)
        run.saved[saved.step_id] = saved

    def _publish(
        self,
        scope: _Scope,
        spec: StepSpec,
        record: StepRecord,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        scope.context[spec.id] = {
            "return": record.return_value if record.status == "succeeded" else None,
            "usage": record.usage,
            "status": record.status,
            "error": record.error,
            "model": record.model,
            **(attributes or {}),
        }

    async def _wait(
        self, scope: _Scope, spec: StepSpec, question: dict[str, Any] | None, started: float
    ) -> str:
        """Record a step that waits on a person's answer (an input step, or a body holding one)."""
        run = scope.run
        path = scope.path(spec.id)
        asked = {k: v for k, v in (question or {}).items() if k != "step_id"}
        record = StepRecord(step_id=path, status="waiting", seq=run.next_seq(),
                            return_value=asked or None, started_at=started, ended_at=time.time())
        await self._save(run, record)
        self._publish(scope, spec, record)
        if question is not None:
            run.waiting.append(question)
        return "waiting"

    async def _skip(self, scope: _Scope, spec: StepSpec, reason: str) -> str:
        run = scope.run
        path = scope.path(spec.id)
        record = StepRecord(step_id=path, status="skipped", seq=run.next_seq(), error=None)
        record.started_at = record.ended_at = time.time()
        await self._save(run, record)
        self._publish(scope, spec, record)
        run.emit(ev.STEP_SKIPPED, path, reason=reason)
        return "skipped"

    async def _fail(
        self,
        scope: _Scope,
        spec: StepSpec,
        error: str,
        started: float,
        attempts: int,
        usage: Mapping[str, Any] | None = None,
    ) -> str:
        run = scope.run
        path = scope.path(spec.id)
        record = StepRecord(
            step_id=path,
            status="failed",
            seq=run.next_seq(),
            error=error,
            model=spec.config.get("model") if isinstance(spec.config.get("model"), str) else None,
            usage=dict(usage or {}),
            started_at=started,
            ended_at=time.time(),
            attempts=attempts,
        )
        add_usage(run.usage, record.usage)  # the tokens were spent even though the step failed
        # No new step starts from here on: the flag is set before the record's write is
        # awaited, as it was when saves were synchronous.
        if scope.boundary is not None:
            scope.boundary.failed = scope.boundary.failed or f"step '{path}' failed: {error}"
        elif run.failed is None:
            run.failed = f"step '{path}' failed: {error}"
        await self._save(run, record)
        self._publish(scope, spec, record)
        run.emit(ev.STEP_FAILED, path, error=error)
        return "failed"

    def _outputs(self, scope: _Scope) -> Any:
        graph = scope.graph
        if graph.outputs is None:
            if not graph.steps:
                return {}
            last = graph.steps[-1].id
            return {last: scope.context.get(last, {}).get("return")}
        return {name: tpl.render(scope.context) for name, tpl in graph.outputs.items()}


def _final_memory(
    base: dict[str, list[dict[str, Any]]], saved: dict[str, StepRecord]
) -> dict[str, list[dict[str, Any]]]:
    """A finished run's memory exactly as its saver would load it: the memory it started
    from, then what its saved step records added, through JSON as a store keeps them."""
    delta = steps_delta(saved.values())
    if not delta:
        return join_deltas([base])
    return join_deltas([base, json.loads(encode_json(delta))])


def note_secret_params(graph: ExecutionGraph, inputs: Mapping[str, Any], redactor: Redactor) -> None:
    """Tell `redactor` the credentials steps will pass to providers that the inputs and the
    environment already decide (`api_key: "{{ inputs.key }}"`): the run's inputs are saved
    before any step renders its params, and must not hold such a key in plain text."""
    context = {"inputs": inputs, "env": environ_view(), "run": {}}
    for spec in graph.steps:
        params = spec.config.get("params")
        if not isinstance(params, Mapping):
            continue
        for value in secret_param_values(thaw(params)):
            try:
                rendered = render_value(value, context)
            except TemplateRenderError:  # it needs a step's result: noted when the step runs
                continue
            for item in rendered.values() if isinstance(rendered, dict) else [rendered]:
                redactor.add(item)


def input_step(graph: ExecutionGraph, path: str) -> StepSpec | None:
    """The input step at record path `path` (`approve`, `review#2/verdict`), or None."""
    spec: StepSpec | None = None
    current: ExecutionGraph | None = graph
    for part in path.split("/"):
        name = part.split("#", 1)[0].split("[", 1)[0]
        spec = current.by_id.get(name) if current is not None else None
        if spec is None:
            return None
        current = spec.subflow
    return spec if spec is not None and step_kinds[spec.kind].asks else None


def check_early_answers(graph: ExecutionGraph, answers: Mapping[str, Any]) -> None:
    """Answers given to a new run, before it asks: each must name an input step of the flow
    and fit its schema (InputError otherwise). The step then takes it without waiting."""
    if not answers:
        return
    from .errors import Diagnostic
    from .inputs import check_answer

    problems: list[Diagnostic] = []
    for path, value in answers.items():
        spec = input_step(graph, path)
        if spec is None:
            problems.append(Diagnostic(f"flow {graph.name!r} has no input step '{path}'"))
            continue
        message = check_answer(path, thaw(spec.config.get("schema") or {"type": "string"}), value)
        if message:
            problems.append(Diagnostic(message))
    if problems:
        raise InputError(problems)


def check_answers(run: RunRecord, answers: Mapping[str, Any]) -> None:
    """InputError unless every answer is to a question `run` waits on, and fits its schema."""
    from .errors import Diagnostic, did_you_mean
    from .history import waiting_questions
    from .inputs import check_answer

    if not answers:
        return
    asked = {q["step_id"]: q for q in waiting_questions(run)}
    problems: list[Diagnostic] = []
    for step_id, value in answers.items():
        question = asked.get(step_id)
        if question is None:
            guess = did_you_mean(step_id, asked)
            known = f"(did you mean '{guess}'?)" if guess else (
                f"(it waits on {', '.join(repr(a) for a in asked)})" if asked
                else f"(its status is {run.status})")
            problems.append(Diagnostic(f"run {run.run_id} is not waiting for an answer to '{step_id}' {known}"))
            continue
        message = check_answer(step_id, question["schema"], value)
        if message:
            problems.append(Diagnostic(message))
    if problems:
        raise InputError(problems)


async def resolve_run_id(saver: Saver, run_id: str | None) -> str | None:
    """The full id for `run_id` (a unique prefix is enough); RunNotFound when unknown."""
    return None if run_id is None else await saver.aresolve(run_id)
