"""The seeds' builder style: build a flow in Python, compile it with the same compiler.

    from runner import Flow
    from runner.state.savers import JSONLSaver

    flow = (
        Flow()
        .add_llm("chat", model="echo", memory_id="user_session")
        .set_input("chat.prompt", "prompt")
        .set_output("chat.return", "response")
        .compile(state_saver=JSONLSaver("state.jsonl"))
    )
    flow.run_sync({"prompt": "Hi"}).outputs     # {"response": "echo (1 message): Hi"}

The builder only assembles the spec dict a flow file would hold (`Flow.to_spec()`);
`compile()` hands it to `runner.compiler.compile_spec`, so a built flow and a YAML file
are checked and run the same way, and `to_yaml()` writes that same dict as a flow file.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import Diagnostic, FlowError, did_you_mean
from .registry import step_kinds

__all__ = ["Flow", "Agent", "AgentCall", "function_reference"]

_MISSING: Any = object()


def function_reference(function: Callable[..., Any] | str) -> str:
    """``module:qualname`` for a Python callable (strings are returned unchanged).

    A function of the script being run (module ``__main__``) is named after the
    script's file, so a flow written out next to that script finds it again.
    """
    if isinstance(function, str):
        return function
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise TypeError(
            f"{function!r} cannot be referenced by name: pass a module-level function"
        )
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if not main_file:
            raise TypeError(f"{qualname} is defined in an interactive session: move it to a module")
        module = Path(main_file).stem
    return f"{module}:{qualname}"


def _tool_entry(tool: Any) -> dict[str, Any]:
    """An agent `tools:` entry from a callable, ``mod:fn``, a flow path or a ready dict."""
    if isinstance(tool, Mapping):
        return dict(tool)
    if isinstance(tool, os.PathLike) or (
        isinstance(tool, str) and tool.endswith((".yaml", ".yml"))
    ):
        return {"flow": os.fspath(tool)}
    return {"python": function_reference(tool)}


def _body_keys(
    body: Flow | list[Mapping[str, Any]] | None,
    flow: str | os.PathLike[str] | None,
    inputs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A map's or loop's body keys: inline `steps` (+ `outputs`), or `flow` + `inputs`."""
    if isinstance(body, Flow):
        spec = body.to_spec()
        return {"steps": spec["steps"], "outputs": spec.get("outputs")}
    if body is not None:
        return {"steps": [dict(step) for step in body]}
    return {"flow": os.fspath(flow) if flow is not None else None,
            "inputs": dict(inputs) if inputs is not None else None}


def _drop_none(keys: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in keys.items() if v is not None}


class Flow:
    """A flow under construction. Every `add_*`/`set_*` method returns the flow, to chain.

    `base_dir` is where relative paths (sub-flows, python modules next to the flow) are
    found when the flow is compiled from Python; it defaults to the current directory.
    """

    def __init__(
        self,
        name: str | None = None,
        description: str | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self._inputs: dict[str, dict[str, Any]] = {}
        self._defaults: dict[str, Any] = {}
        self._steps: list[dict[str, Any]] = []
        self._outputs: dict[str, str] = {}
        self._state_saver: dict[str, Any] | None = None
        self._extra: dict[str, Any] = {}

    # -- steps -------------------------------------------------------------------------
    def add_step(self, id: str, type: str = "llm", **keys: Any) -> Flow:
        """Add a step of any kind with the keys a flow file would give it (None = unset)."""
        step: dict[str, Any] = {"id": id}
        if type != "llm":
            step["type"] = type
        step.update(_drop_none(keys))
        self._steps.append(step)
        return self

    def add_llm(
        self,
        id: str,
        model: str | None = None,
        memory_id: str | None = None,
        system: str | None = None,
        prompt: str | None = None,
        params: Mapping[str, Any] | None = None,
        memory_window: int | None = None,
        **more: Any,
    ) -> Flow:
        """An `llm` step: one model call, sharing the conversation of `memory_id`."""
        return self.add_step(
            id,
            "llm",
            model=model,
            memory_id=memory_id,
            memory_window=memory_window,
            system=system,
            prompt=prompt,
            params=dict(params) if params is not None else None,
            **more,
        )

    def add_template(self, id: str, text: str, **more: Any) -> Flow:
        """A `template` step: renders `text` without any model call."""
        return self.add_step(id, "template", text=text, **more)

    def add_python(
        self,
        id: str,
        function: Callable[..., Any] | str,
        args: Mapping[str, Any] | Sequence[Any] | None = None,
        **more: Any,
    ) -> Flow:
        """A `python` step calling `function` (a callable or ``module:name``) with `args`."""
        if args is not None and not isinstance(args, Mapping):
            args = list(args)
        elif args is not None:
            args = dict(args)
        return self.add_step(id, "python", function=function_reference(function), args=args, **more)

    def add_flow(
        self,
        id: str,
        flow: str | os.PathLike[str],
        inputs: Mapping[str, Any] | None = None,
        memory: str | None = None,
        **more: Any,
    ) -> Flow:
        """A `flow` step running the flow file `flow`; `memory="isolated"` keeps its
        conversations apart from this run's."""
        return self.add_step(
            id,
            "flow",
            flow=os.fspath(flow),
            inputs=dict(inputs) if inputs is not None else None,
            memory=memory,
            **more,
        )

    def add_agent(
        self,
        id: str,
        model: str | None = None,
        tools: Sequence[Any] = (),
        memory_id: str | None = None,
        system: str | None = None,
        prompt: str | None = None,
        max_iterations: int | None = None,
        **more: Any,
    ) -> Flow:
        """An `agent` step: an llm step that may call `tools` (callables, ``mod:fn``
        strings, flow file paths, or ``{python: …}`` / ``{flow: …}`` entries)."""
        return self.add_step(
            id,
            "agent",
            model=model,
            memory_id=memory_id,
            system=system,
            prompt=prompt,
            tools=[_tool_entry(t) for t in tools] or None,
            max_iterations=max_iterations,
            **more,
        )

    def __getattr__(self, name: str) -> Callable[..., Flow]:
        """`add_<kind>(id, **keys)` for every registered step kind without its own method
        above (plugin kinds included): the same as `add_step(id, "<kind>", **keys)`."""
        if name.startswith("add_") and step_kinds.get(name[4:]) is not None:
            kind = name[4:]
            return lambda id, **keys: self.add_step(id, kind, **keys)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- wiring ------------------------------------------------------------------------
    def _target(self, target: str) -> tuple[dict[str, Any], list[str]]:
        """The step dict and key path named by ``"step.key[.subkey…]"``."""
        step_id, _, rest = target.partition(".")
        if not rest:
            raise FlowError(f"'{target}' must name a step and a key, like 'chat.prompt'")
        for step in self._steps:
            if step["id"] == step_id:
                return step, rest.split(".")
        hint = did_you_mean(step_id, [s["id"] for s in self._steps])
        suffix = f" (did you mean '{hint}'?)" if hint else ""
        raise FlowError([Diagnostic(f"unknown step '{step_id}' in '{target}'{suffix}")])

    def set_data_value(self, target: str, value: Any) -> Flow:
        """Set a step's key (``"step.key"``, ``"step.args.name"``) to a fixed value."""
        step, keys = self._target(target)
        node = step
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        return self

    def set_data_map(self, target: str, source: str) -> Flow:
        """Feed a step's key from another value: ``set_data_map("b.prompt", "a.return")``."""
        return self.set_data_value(target, "{{ " + source + " }}")

    def set_input(
        self,
        target: str,
        name: str,
        type: str = "string",
        description: str | None = None,
        default: Any = _MISSING,
        **schema: Any,
    ) -> Flow:
        """Declare the flow input `name` (a string unless `type` says otherwise) and feed
        the step key `target` from it: ``set_input("chat.prompt", "prompt")``."""
        if description is not None:
            schema["description"] = description
        if default is not _MISSING:
            schema["default"] = default
        return self.add_input(name, type, **schema).set_data_map(target, f"inputs.{name}")

    def add_input(
        self, name: str, type: str = "string", *, prompt: str | None = None, **schema: Any
    ) -> Flow:
        """Declare a flow input without wiring it (templates read it as ``inputs.NAME``).

        With `prompt`, add an `input` step instead: the run asks a person `prompt` and waits
        for the answer (of JSON type `type`, or `schema=` a whole JSON Schema), e.g.
        ``add_input("approve", "boolean", prompt="Publish? {{ draft.return }}")``.
        """
        if prompt is not None:
            answer = schema.pop("schema", None) or {"type": type}
            return self.add_step(name, "input", prompt=prompt, schema=dict(answer), **schema)
        self._inputs[name] = {"type": type, **schema}
        return self

    def add_map(
        self,
        id: str,
        items: str | list[Any],
        body: Flow | list[Mapping[str, Any]] | None = None,
        *,
        as_: str | None = None,
        max_concurrency: int | None = None,
        flow: str | os.PathLike[str] | None = None,
        inputs: Mapping[str, Any] | None = None,
        **more: Any,
    ) -> Flow:
        """A `map` step: `body` (a Flow whose steps and outputs are the body, or a list of
        step dicts) or the flow file `flow` with `inputs`, once per item of `items`, in
        parallel; the item is named `as_` (default ``item``) in templates."""
        return self.add_step(id, "map", items=items, **{"as": as_}, max_concurrency=max_concurrency,
                             **_body_keys(body, flow, inputs), **more)

    def add_loop(
        self,
        id: str,
        body: Flow | list[Mapping[str, Any]] | None = None,
        *,
        max_iterations: int,
        until: str | None = None,
        on_max_iterations: str | None = None,
        flow: str | os.PathLike[str] | None = None,
        inputs: Mapping[str, Any] | None = None,
        **more: Any,
    ) -> Flow:
        """A `loop` step: `body` (or the flow file `flow` with `inputs`) again and again until
        `until` (a template reading ``ID.last``, ``loop.index``) is true, at most
        `max_iterations` times."""
        return self.add_step(id, "loop", max_iterations=max_iterations, until=until,
                             on_max_iterations=on_max_iterations,
                             **_body_keys(body, flow, inputs), **more)

    def set_output(self, source: str, name: str) -> Flow:
        """Name an output: ``set_output("chat.return", "response")`` gives
        ``outputs.response = {{ chat.return }}``. A source with ``{{`` is kept as written."""
        self._outputs[name] = source if "{{" in source or "{%" in source else "{{ " + source + " }}"
        return self

    def set_defaults(self, **defaults: Any) -> Flow:
        """Keys applied to every llm/agent step that doesn't set them (model, params, …)."""
        self._defaults.update(_drop_none(defaults))
        return self

    def set_state_saver(self, type: str, **options: Any) -> Flow:
        """The flow file's `state_saver:` block (``set_state_saver("jsonl", path="s.jsonl")``)."""
        self._state_saver = {"type": type, **_drop_none(options)}
        return self

    def set(self, key: str, value: Any) -> Flow:
        """Any other top-level key of a flow file (`settings`, `secrets`, `metadata`, `x-…`)."""
        self._extra[key] = value
        return self

    # -- output ------------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        """The flow as the plain dict a flow file holds (what `to_yaml` writes)."""
        spec: dict[str, Any] = {"version": 1}
        if self.name is not None:
            spec["name"] = self.name
        if self.description is not None:
            spec["description"] = self.description
        if self._inputs:
            spec["inputs"] = self._inputs
        if self._defaults:
            spec["defaults"] = self._defaults
        spec["steps"] = self._steps
        if self._outputs:
            spec["outputs"] = self._outputs
        if self._state_saver is not None:
            spec["state_saver"] = self._state_saver
        spec.update(self._extra)
        return copy.deepcopy(spec)

    def graph(self) -> Any:
        """Compile the spec (raises FlowError with every problem) -> ExecutionGraph.

        With `base_dir`, the flow is compiled as if it were the file
        ``base_dir/NAME.yaml``; without, relative paths resolve from the current folder.
        """
        from .compiler import compile_spec

        if self.base_dir is not None:
            path = self.base_dir / f"{self.name or 'flow'}.yaml"
            return compile_spec(self.to_spec(), path=path)
        return compile_spec(self.to_spec(), base_dir=Path.cwd())

    def compile(self, state_saver: Any = None) -> Any:
        """Compile through the flow compiler and return a RunnableFlow using `state_saver`
        (a Saver; default: the `state_saver` block if set, else in memory)."""
        from .runnable import RunnableFlow

        return RunnableFlow(self.graph(), state_saver)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The flow as flow-file YAML; with `path`, also written there (relative
        paths in the flow then resolve from that file's folder)."""
        header = [f"# yaml-language-server: $schema={_schema_ref(path)}"]
        body = yaml.dump(
            self.to_spec(), Dumper=_FlowDumper, sort_keys=False, allow_unicode=True, width=100
        )
        # A blank line between top-level sections, as a person would write the file.
        body = re.sub(r"\n(?=[^\s#-][^\n]*:\n)", "\n\n", body)
        text = "\n".join(header) + "\n" + body
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def _schema_ref(path: str | os.PathLike[str] | None) -> str:
    """The schema as an editor should find it: a relative path from the file when the
    schema is on disk, else its published URL."""
    from .schema import SCHEMA_URL, schema_path

    schema = schema_path()
    if schema is None:
        return SCHEMA_URL
    if path is None:
        return schema.as_uri()  # as `timbal init` does: the installed copy, which exists
    folder = Path(path).resolve().parent
    try:
        # Only within one project: a path up to the file system's root would not travel.
        if Path(os.path.commonpath([schema, folder])).parent == Path(schema.anchor):
            return schema.as_uri()
        return os.path.relpath(schema, folder)
    except ValueError:  # another drive on Windows
        return schema.as_uri()


class _FlowDumper(yaml.SafeDumper):
    """Block style, lists indented under their key, multi-line strings as `|` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_FlowDumper.add_representer(str, _represent_str)
_FlowDumper.add_representer(tuple, lambda d, v: d.represent_list(list(v)))


class Agent:
    """The seeds' agent (`003_…`): one conversation that remembers across calls.

        agent = Agent(name="example", model="echo")
        first = await agent(prompt="Hello").collect()       # a RunResult: .run_id, .outputs
        again = await agent(prompt="What's my name?").collect()

    Each call is one run of a one-step flow (an `agent` step when there are tools, else
    an `llm` step) whose parent is the agent's previous run, or the current
    `runner.state.RunContext`'s `parent_id` when one is set (to rewind or branch). The
    reply is ``result.outputs["output"]``. Settings may also be class attributes
    (``class Support(Agent): model = "…"``). Agents as tools of other agents are not
    supported here: give a flow file (``tools=["billing.yaml"]``) instead.
    """

    name: str | None = None
    model: str | None = None
    system: str | None = None
    tools: Sequence[Any] = ()
    max_iterations: int | None = None

    def __init__(
        self,
        name: str | None = None,
        model: str | None = None,
        system: str | None = None,
        tools: Sequence[Any] | None = None,
        max_iterations: int | None = None,
        state_saver: Any = None,
    ) -> None:
        self.name = name or type(self).name or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()
        self.model = model or type(self).model or "echo"
        self.system = system if system is not None else type(self).system
        self.tools = list(tools if tools is not None else type(self).tools)
        self.max_iterations = max_iterations or type(self).max_iterations
        for tool in self.tools:
            if isinstance(tool, Agent):
                raise TypeError(
                    f"agent {tool.name!r} as a tool is not supported: use a flow file as the tool"
                )
        if state_saver is None:
            from .savers.in_memory import InMemorySaver

            state_saver = InMemorySaver()
        self.state_saver = state_saver
        self.last_run_id: str | None = None
        self._runnable: Any = None

    def flow(self) -> Flow:
        """The one-step flow each call runs."""
        flow = Flow(self.name)
        if self.tools:
            flow.add_agent(
                "agent", model=self.model, memory_id=self.name, system=self.system,
                tools=self.tools, max_iterations=self.max_iterations,
            )
        else:
            flow.add_llm("agent", model=self.model, memory_id=self.name, system=self.system)
        return flow.set_input("agent.prompt", "prompt").set_output("agent.return", "output")

    def __call__(self, prompt: str) -> AgentCall:
        """One turn of the conversation; `await` it or its `.collect()` for the RunResult."""
        if self._runnable is None:
            self._runnable = self.flow().compile(state_saver=self.state_saver)
        return AgentCall(self, prompt)


class AgentCall:
    """A pending agent turn: `await call`, `await call.collect()`, or `async for event in call`."""

    def __init__(self, agent: Agent, prompt: str) -> None:
        self.agent = agent
        self.prompt = prompt

    def _parent(self) -> tuple[str | None, Any]:
        from .state import get_run_context

        context = get_run_context()
        if context is not None and context.parent_id is not None:
            return context.parent_id, context
        return self.agent.last_run_id, context

    def _moved_on(self, run_id: str, context: Any) -> None:
        self.agent.last_run_id = run_id
        if context is not None:
            context.parent_id = run_id

    async def collect(self) -> Any:
        """Run the turn and return its RunResult (`.run_id`, `.status`, `.outputs`)."""
        parent, context = self._parent()
        result = await self.agent._runnable.run({"prompt": self.prompt}, parent_id=parent)
        self._moved_on(result.run_id, context)
        return result

    def __await__(self) -> Any:
        return self.collect().__await__()

    async def __aiter__(self) -> Any:
        """The run's events as they happen (step chunks carry the streamed reply)."""
        parent, context = self._parent()
        async for event in self.agent._runnable.stream({"prompt": self.prompt}, parent_id=parent):
            if event.type == "run_finished":
                self._moved_on(event.run_id, context)
            yield event
