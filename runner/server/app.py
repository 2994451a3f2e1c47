"""The HTTP API of `timbal serve` (SPEC §8): the native routes and the OpenAI-compatible ones.

Route handlers only translate between HTTP and the library: the catalog of served flows
(`catalog.py`), the runs in flight (`live.py`), the saved runs (`runner.history`) and the
OpenAI mapping (`runner.openai_chat`). Errors answer in the API's shape: OpenAI's
`{"error": {"message", "type", "code"}}` under `/v1/`, `{"detail": …}` elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import history
from ..engine import RunResult
from ..errors import FlowError, InputError, RunNotFound, SaverError
from ..events import STEP_CHUNK, Event
from ..openai_chat import (
    chat_request,
    completion,
    completion_chunk,
    model_object,
    reply_text,
    streams_verbatim,
)
from ..savers.base import Saver
from ..savers.lanes import run_blocking
from ..status import RUN_STATUSES
from .catalog import FlowCatalog, FlowNotFound, ServedFlow, flow_info
from .guard import ApiError, Guard, UnauthorizedPage, error_body
from .live import LiveRun, LiveRuns

__all__ = ["create_app", "ServerState"]

T = TypeVar("T")

#: How often a follower of a run on another server looks at the store again (seconds).
STORE_POLL = 0.2
#: How /openapi.json describes an answer that can be a stream of server-sent events.
_EVENTS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "The run's JSON, or with `Accept: text/event-stream` its events "
                         "(`event: TYPE`, `id: N`, `data: JSON`)",
          "content": {"application/json": {}, "text/event-stream": {}}},
    202: {"description": "Started in the background (`\"background\": true`): `{run_id, status}`"},
}
_CHAT_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "A `chat.completion`, or with `\"stream\": true` `chat.completion.chunk` "
                         "server-sent events ending in `data: [DONE]`",
          "content": {"application/json": {}, "text/event-stream": {}}},
}
#: Statuses a run can be resumed from.
RESUMABLE = ("failed", "interrupted", "waiting")


async def _saver_call(saver: Saver, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, a call that reads or writes `saver`'s store, off the event loop (in the
    saver pool), unless the saver answers from memory."""
    return fn(*args) if not saver.blocking else await run_blocking(fn, *args)


class ServerState:
    """What the routes share: the served flows, the runs in flight, the server's options."""

    def __init__(self, catalog: FlowCatalog, api_key: str | None = None) -> None:
        self.catalog = catalog
        self.live = LiveRuns()
        self.api_key = api_key
        self.draining = False

    # -- finding runs --------------------------------------------------------------------
    def find_run(self, run_id: str) -> tuple[Saver, str]:
        """(the saver holding it, the full id) of a run given by id or unique prefix."""
        for saver in self.catalog.savers():
            try:
                return saver, saver.resolve(run_id)
            except RunNotFound:
                continue
        raise RunNotFound(f"no run with id {run_id!r}")

    async def locate(self, run_id: str) -> tuple[Saver, str]:
        """`find_run` off the event loop (a store may answer slowly)."""
        return await run_blocking(self.find_run, run_id)

    def flow_of(self, flow_name: str) -> ServedFlow:
        """The served flow of a saved run (to resume it); 404 when it is not served."""
        try:
            return self.catalog.get(flow_name)
        except FlowNotFound:
            raise ApiError(404, f"the run's flow {flow_name!r} is not served here", "flow_not_found") from None


# -- request bodies (also what /openapi.json describes) ---------------------------------------
class RunRequest(BaseModel):
    """`POST /flows/NAME/runs`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    inputs: dict[str, Any] = Field(default_factory=dict, description="The flow's inputs by name.")
    parent_id: str | None = Field(None, description="Start from this run's memory (continue, rewind, branch).")
    continue_: bool = Field(False, alias="continue", description="Continue the latest finished run of the flow.")
    answers: dict[str, Any] | None = Field(None, description="Answers to input steps, by step id.")
    background: bool = Field(False, description="Answer 202 at once; follow the run with GET /runs/ID/events.")


class ResumeRequest(BaseModel):
    """`POST /runs/ID/resume`."""

    model_config = ConfigDict(extra="forbid")
    answers: dict[str, Any] | None = Field(None, description="Answers to the waiting input steps, by step id.")
    background: bool = False


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`: OpenAI's request; `model` names a served flow. Other
    OpenAI fields (temperature, …) are accepted and left to the flow's own settings."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    parent_run_id: str | None = Field(None, description="Continue this saved run (its history is used).")
    inputs: dict[str, Any] | None = Field(None, description="Other flow inputs, besides the chat input.")


# -- helpers ------------------------------------------------------------------------------
def _wants_events(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def _sse(event: Event, number: int | None) -> ServerSentEvent:
    # Chunks carry no id: they are not saved, so a reconnect resumes after the last saved event.
    return ServerSentEvent(
        data=json.dumps(asdict(event), ensure_ascii=False, default=str),
        event=event.type,
        id=None if number is None else str(number),
    )


def _last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    try:
        return max(int(raw), 0)
    except ValueError:
        raise ApiError(400, f"Last-Event-ID must be a number, not {raw!r}") from None


def _run_headers(run_id: str | None) -> dict[str, str]:
    return {"X-Timbal-Run-Id": run_id} if run_id else {}


async def _follow_live(live: LiveRun, after: int, cancel_on_disconnect: bool) -> AsyncIterator[ServerSentEvent]:
    finished = False
    try:
        async for number, event in live.follow(after):
            yield _sse(event, number)
        finished = True
    finally:
        if not finished and cancel_on_disconnect:
            live.cancel()  # the client went away: the run is recorded interrupted


async def _follow_store(saver: Saver, run_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    """A run not in flight here: its events rebuilt from the store, polled until it is over."""
    sent = after
    while True:
        record = await saver.aget_run(run_id)
        events = history.replay_events(record)
        for number in range(sent + 1, len(events) + 1):
            yield _sse(events[number - 1], number)
        sent = max(sent, len(events))
        if record.status not in ("running",):
            return
        await asyncio.sleep(STORE_POLL)


def create_app(
    catalog: FlowCatalog,
    *,
    api_key: str | None = None,
    include_ui: bool = True,
    max_body_bytes: int = 10 * 1024 * 1024,
    reload: bool = False,
) -> FastAPI:
    """The ASGI app serving `catalog`'s flows. `api_key`: every request but `GET /health`
    needs `Authorization: Bearer KEY`. `include_ui`: mount the web page (`runner.server.ui`)
    at `/`. `reload`: watch the flow files and compile them again when they change."""
    state = ServerState(catalog, api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = asyncio.create_task(_watch_files(catalog)) if reload else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await state.live.drain(0)

    app = FastAPI(
        title="Timbal flows",
        description="Flows as an HTTP service: the native API and OpenAI-compatible routes.",
        version="1",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.timbal = state
    # A browser opening one of the web page's pages without the key gets, with its 401, a page
    # that asks for the key and then shows the real page (runner.server.ui.key_page).
    unauthorized_page: UnauthorizedPage | None = None
    if include_ui:
        from .ui import key_page

        unauthorized_page = key_page
    app.add_middleware(Guard, state=state, max_body_bytes=max_body_bytes, unauthorized_page=unauthorized_page)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, exc.status, exc.message, exc.code),
                            exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code)
        return JSONResponse(error_body(request.url.path, exc.status_code, str(exc.detail), code),
                            exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        message = "invalid request: " + "; ".join(problems)
        return JSONResponse(error_body(request.url.path, 400, message, "invalid_request"), 400)

    @app.exception_handler(FlowError)
    async def _flow_error(request: Request, exc: FlowError) -> JSONResponse:
        body = error_body(request.url.path, 400, exc.format(frames=False), "invalid_input")
        body.setdefault("errors", [d.to_dict() for d in exc.diagnostics])
        return JSONResponse(body, 400)

    @app.exception_handler(RunNotFound)
    async def _run_not_found(request: Request, exc: RunNotFound) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, 404, str(exc), "run_not_found"), 404)

    @app.exception_handler(FlowNotFound)
    async def _flow_not_found(request: Request, exc: FlowNotFound) -> JSONResponse:
        name = exc.args[0] if exc.args else "?"
        code = "model_not_found" if request.url.path.startswith("/v1/") else "flow_not_found"
        what = "model" if code == "model_not_found" else "flow"
        return JSONResponse(error_body(request.url.path, 404, f"no {what} named {name!r} is served "
                                       f"(served: {', '.join(catalog.names())})", code), 404)

    @app.exception_handler(SaverError)
    async def _saver_error(request: Request, exc: SaverError) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, 503, f"state saver: {exc}", "saver_unavailable"), 503)

    # -- runs: start, answer -----------------------------------------------------------
    async def start(served: ServedFlow, *, stream: bool | frozenset[str], here: bool = False,
                    **kwargs: Any) -> LiveRun:
        """Start a run of `served`. `here`: run it to its end in the request's own task (the
        request waits for the result anyway); else in a task of its own, returning once it
        has an id (the request streams it, or answers at once)."""
        flow = served.flow  # the flow as it is now: a reload later does not change this run

        def run(listener: Callable[[Event], None]) -> Coroutine[Any, Any, RunResult]:
            return flow.run(listener=listener, stream=stream, **{k: v for k, v in kwargs.items() if v is not None})

        if here:
            return await state.live.run_here(served.name, served.saver, run)
        return await state.live.start(served.name, served.saver, run)

    async def answer_run(request: Request, live: LiveRun, background: bool, events: bool) -> Response:
        """The answer to a request that started (or resumed) a run, in the asked form."""
        assert live.run_id is not None  # set when the run started
        headers = _run_headers(live.run_id)
        if background:
            headers["Location"] = f"/runs/{live.run_id}"
            return JSONResponse({"run_id": live.run_id, "status": "running"}, 202, headers=headers)
        if events:
            return EventSourceResponse(_follow_live(live, 0, cancel_on_disconnect=True), headers=headers)
        await live.wait()
        if live.error is not None:
            raise live.error
        if live.result is None:  # cancelled (POST /runs/ID/cancel, or the server stopping)
            record = await live.saver.aget_run(live.run_id)
            return DataResponse(history.run_summary(record), headers=headers)
        return DataResponse(live.result.to_dict(), headers=headers)

    # -- native API ----------------------------------------------------------------------
    @app.get("/health", tags=["server"], summary="Whether the server is up (no key needed)")
    async def health() -> dict[str, Any]:
        return {"status": "draining" if state.draining else "ok", "flows": len(catalog.names())}

    @app.get("/flows", tags=["flows"], summary="The served flows, with the errors of a broken reload")
    async def list_flows() -> list[dict[str, Any]]:
        return catalog.listing()

    @app.get("/flows/{name}", tags=["flows"], summary="One flow, with its execution graph")
    async def get_flow(name: str) -> dict[str, Any]:
        from ..graph_views import graph_json, render_graph

        served = catalog.get(name)
        info = flow_info(served)
        info["graph"] = graph_json(served.graph)
        info["graph"]["mermaid"] = render_graph(served.graph, "mermaid")
        return info

    @app.post("/flows/{name}/runs", tags=["runs"], summary="Run a flow (JSON, events, or background)",
              responses=_EVENTS_DOC)
    async def create_run(name: str, request: Request, body: RunRequest | None = None) -> Response:
        served = catalog.get(name)
        body = body or RunRequest.model_validate({})
        parent = body.parent_id
        if body.continue_:
            if parent is not None:
                raise ApiError(400, "'parent_id' and 'continue' exclude each other")
            latest = await _saver_call(served.saver, history.latest_finished, served.saver, served.name)
            if latest is None:
                raise ApiError(400, f"no earlier run of {served.name!r} to continue", "nothing_to_continue")
            parent = latest.run_id
        # A background run streams too: whoever follows GET /runs/ID/events sees replies arrive.
        events = _wants_events(request)
        live = await start(served, stream=events or body.background, here=not (events or body.background),
                           inputs=body.inputs, parent_id=parent, answers=body.answers or None)
        return await answer_run(request, live, body.background, events)

    @app.get("/runs", tags=["runs"], summary="The saved runs, newest first", response_class=DataResponse)
    async def list_runs(
        flow: str | None = None,
        status: str | None = Query(None, description=f"One of {', '.join(RUN_STATUSES)}."),
        limit: int = Query(100, ge=0, description="At most this many (0: all)."),
    ) -> Response:
        def read() -> list[dict[str, Any]]:
            found = []
            for saver in catalog.savers():
                found.extend(saver.list_runs(flow=flow, status=status, limit=limit or None))
            found.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
            return [history.run_summary(r) for r in found[: limit or None]]

        return DataResponse(await run_blocking(read))

    @app.get("/runs/{run_id}", tags=["runs"], summary="One run: steps, usage, memory",
             response_class=DataResponse)
    async def get_run(run_id: str) -> Response:
        saver, full = await state.locate(run_id)
        return DataResponse(await _saver_call(saver, history.run_detail, saver, full))

    @app.get("/runs/{run_id}/tree", tags=["runs"], summary="The branch tree holding a run",
             response_class=DataResponse)
    async def get_tree(run_id: str) -> Response:
        saver, full = await state.locate(run_id)
        trees = await _saver_call(saver, history.run_tree, saver, full)
        return Response(history.tree_json(trees), media_type="application/json")

    @app.delete("/runs/{run_id}", tags=["runs"], summary="Delete a run (its branches too with ?recursive=true)")
    async def delete_run(run_id: str, recursive: bool = False) -> dict[str, Any]:
        saver, full = await state.locate(run_id)

        def delete() -> list[str]:
            try:
                order = saver.delete_plan([full], recursive)
            except InputError as exc:
                raise ApiError(409, str(exc), "has_children") from None
            for rid in order:
                if state.live.running.get(rid) is not None or saver.get_run(rid).status == "running":
                    raise ApiError(409, f"run {rid} is still running; cancel it first", "run_in_flight")
            return saver.delete_runs([full], recursive)

        order = await _saver_call(saver, delete)
        return {"deleted": order}

    @app.get("/runs/{run_id}/events", tags=["runs"], summary="A run's events (server-sent), from Last-Event-ID on",
             response_class=EventSourceResponse)
    async def run_events(run_id: str, request: Request) -> Response:
        saver, full = await state.locate(run_id)
        after = _last_event_id(request)
        live = state.live.get(full)
        source = _follow_live(live, after, False) if live is not None else _follow_store(saver, full, after)
        return EventSourceResponse(source, headers=_run_headers(full))

    @app.post("/runs/{run_id}/resume", tags=["runs"], summary="Resume a failed, interrupted or waiting run",
              responses=_EVENTS_DOC)
    async def resume_run(run_id: str, request: Request, body: ResumeRequest | None = None) -> Response:
        body = body or ResumeRequest.model_validate({})
        saver, full = await state.locate(run_id)
        record = await saver.aget_run(full)
        if state.live.running.get(full) is not None or record.status not in RESUMABLE:
            raise ApiError(409, f"run {full} is {record.status}: only a failed, interrupted or waiting "
                                "run can be resumed", "not_resumable")
        served = state.flow_of(record.flow_name)
        events = _wants_events(request)
        live = await start(served, stream=events or body.background, here=not (events or body.background),
                           resume=full, answers=body.answers or None)
        return await answer_run(request, live, body.background, events)

    @app.post("/runs/{run_id}/cancel", tags=["runs"], summary="Cancel a run (it becomes interrupted)",
              response_class=DataResponse)
    async def cancel_run(run_id: str) -> Response:
        saver, full = await state.locate(run_id)
        if not await state.live.cancel(full):
            record = await saver.aget_run(full)
            if record.status not in ("running", "waiting"):
                raise ApiError(409, f"run {full} is {record.status}: there is nothing to cancel", "not_running")
            # In flight on another server (it sees this and stops), or left by a dead one.
            await saver.afinish_run(full, "interrupted", None, "cancelled",
                                    record.usage, time.time())
        return DataResponse(history.run_summary(await saver.aget_run(full)))

    # -- OpenAI-compatible ---------------------------------------------------------------
    @app.get("/v1/models", tags=["openai"], summary="Every served flow as a model")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_object(name) for name in catalog.names()]}

    @app.get("/v1/models/{model}", tags=["openai"], summary="One served flow as a model")
    async def get_model(model: str) -> dict[str, Any]:
        return model_object(catalog.get(model).name)

    @app.post("/v1/chat/completions", tags=["openai"], summary="Run a flow as a chat completion",
              responses=_CHAT_DOC)
    async def chat_completions(body: ChatCompletionRequest) -> Response:
        served = catalog.get(body.model)
        parent = body.parent_run_id
        if parent is not None:
            _, parent = await state.locate(parent)
        req = chat_request(served.graph, body.messages, parent, body.inputs)
        graph = served.graph
        out_step = graph.output_step
        verbatim = body.stream and streams_verbatim(graph) and out_step is not None
        live = await start(served, stream=frozenset({out_step}) if verbatim and out_step else False,
                           here=not body.stream, inputs=req.inputs, parent_id=req.parent_id,
                           history=req.history or None)
        headers = _run_headers(live.run_id)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            chunks = _completion_chunks(live, served.name, verbatim, include_usage)
            return EventSourceResponse(chunks, headers=headers)
        await live.wait()
        result = _finished(live)
        return JSONResponse(completion(result.run_id, served.name, reply_text(result.outputs), result.usage),
                            headers=headers)

    if include_ui:
        from .ui import mount_ui

        mount_ui(app, state)
    return app


def _finished(live: LiveRun) -> RunResult:
    """A run that should have succeeded: its result, else the 502 (or the error) to answer."""
    if live.error is not None:
        raise live.error
    result = live.result
    if result is None:
        raise ApiError(502, f"run {live.run_id} was interrupted", "run_interrupted", _run_headers(live.run_id))
    if not result.ok:
        reason = result.error or result.status
        raise ApiError(502, f"run {result.run_id} {result.status}: {reason}", "run_failed",
                       _run_headers(result.run_id))
    return result


async def _completion_chunks(
    live: LiveRun, model: str, verbatim: bool, include_usage: bool
) -> AsyncIterator[str]:
    """`chat.completion.chunk` events for a run, then `[DONE]`. The client going away
    cancels the run (recorded interrupted, resumable)."""
    assert live.run_id is not None
    rid, created = live.run_id, int(time.time())

    def chunk(**kwargs: Any) -> str:
        return json.dumps(completion_chunk(rid, model, created, **kwargs), ensure_ascii=False)

    yield chunk(delta={"role": "assistant", "content": ""})
    async for _, event in _events_until_done(live):
        if verbatim and event.type == STEP_CHUNK:
            yield chunk(delta={"content": event.data.get("text", "")})
    try:
        result = _finished(live)
    except ApiError as exc:
        yield json.dumps(error_body("/v1/", exc.status, exc.message, exc.code))
        yield "[DONE]"
        return
    except Exception as exc:  # noqa: BLE001 - said once in the stream, never a traceback
        yield json.dumps(error_body("/v1/", 500, f"{type(exc).__name__}: {exc}", "internal_error"))
        yield "[DONE]"
        return
    if not verbatim:
        yield chunk(delta={"content": reply_text(result.outputs)})
    yield chunk(finish_reason="stop")
    if include_usage:
        yield chunk(usage=result.usage)
    yield "[DONE]"


async def _events_until_done(live: LiveRun) -> AsyncIterator[tuple[int | None, Event]]:
    finished = False
    try:
        async for item in live.follow(0):
            yield item
        finished = True
    finally:
        if not finished:
            live.cancel()  # the client went away: the run is recorded interrupted


class DataResponse(JSONResponse):
    """JSON of run data: values a python step returned that JSON has no type for are text,
    as the savers store them."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=str, separators=(",", ":")).encode()


async def _watch_files(catalog: FlowCatalog) -> None:
    """`--reload`: compile the flows again when their files change (see FlowCatalog.reload)."""
    import sys

    import watchfiles

    from ..reload import POLL_MS, STEP_MS

    while True:
        folders = sorted(catalog.watched_folders())
        async for _changes in watchfiles.awatch(*folders, recursive=False, step=STEP_MS,
                                                rust_timeout=POLL_MS, yield_on_timeout=True):
            if catalog.stamps.changed() or _new_files(catalog):
                for note in catalog.reload():
                    print(f"timbal serve: {note}", file=sys.stderr, flush=True)
            if set(catalog.watched_folders()) != set(folders):
                break  # an edit added a sub-flow or module elsewhere: watch its folder too


def _new_files(catalog: FlowCatalog) -> bool:
    from .catalog import find_flow_files

    try:
        return bool(set(find_flow_files(catalog.sources)) ^ catalog.known_files())
    except InputError:
        return True
