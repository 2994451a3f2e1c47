"""Templates and what they read: every `{{ name }}` checked against the flow's inputs,
steps, `env` and `run`; a step's data dependencies are the steps its templates read."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jinja2 import TemplateSyntaxError

from ..errors import Location, did_you_mean
from ..loader import PathKey
from ..registry import step_kinds
from ..templates import JINJA_GLOBALS, CompiledTemplate, compile_template, is_template
from .diagnostics import CompilerBase, quote_list

__all__ = ["References", "StepReferences", "body_step_ids", "RESERVED_NAMES", "STEP_ATTRIBUTES", "RUN_ATTRIBUTES"]

#: Names a step may not take: the template context's own names and Jinja's globals.
RESERVED_NAMES: frozenset[str] = frozenset({"inputs", "env", "run", "memory", "loop"}) | JINJA_GLOBALS
#: What a template may read from a step: `{{ STEP.return }}` and friends.
STEP_ATTRIBUTES: tuple[str, ...] = ("return", "usage", "status", "error", "model")
RUN_ATTRIBUTES: tuple[str, ...] = ("id", "parent_id", "flow")


def _line_offset(text: str, lineno: int) -> int:
    """Offset of the start of 1-based line `lineno` in `text`."""
    offset = 0
    for _ in range(max(lineno - 1, 0)):
        nxt = text.find("\n", offset)
        if nxt < 0:
            break
        offset = nxt + 1
    return offset


def _name_offset(source: str, name: str, lineno: int) -> int:
    """Offset of `name` as read inside a `{{ }}`/`{% %}` block, from line `lineno` on."""
    start = _line_offset(source, lineno)
    pattern = re.compile(r"(?<![\w.])" + re.escape(name) + r"(?!\w)")
    for m in pattern.finditer(source, start):
        before = source[: m.start()]
        opened = max(before.rfind("{{"), before.rfind("{%"))
        closed = max(before.rfind("}}"), before.rfind("%}"))
        if opened > closed:
            return m.start()
    return start


def _name_locator(
    locate: Callable[[int], Location | None], source: str, name: str, lineno: int
) -> Callable[[], Location | None]:
    """Where `name` sits, computed only if an error needs it."""
    return lambda: locate(_name_offset(source, name, lineno))


class StepReferences:
    """The step whose templates are being checked, and the steps they read so far."""

    def __init__(self, step_id: str, deps: set[str]) -> None:
        self.step_id = step_id
        self.deps = deps


class References(CompilerBase):
    """Compiles templates and checks the names they read."""

    def render_tree(self, value: Any, path: PathKey, label: str, ctx: StepReferences | None) -> Any:
        """Compile every template string inside `value` (dicts, lists, scalars)."""
        if isinstance(value, str):
            if not is_template(value):
                return value
            return self.template(
                value, label, ctx, lambda off: self.doc.location_in_string(path, off), path
            )
        if isinstance(value, dict):
            return {k: self.render_tree(v, path + (k,), f"{label}.{k}", ctx) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render_tree(v, path + (j,), f"{label}[{j}]", ctx) for j, v in enumerate(value)]
        return value

    def template(
        self,
        source: str,
        label: str,
        ctx: StepReferences | None,
        locate: Callable[[int], Location | None],
        path: PathKey,
        only: tuple[str, ...] | None = None,
    ) -> CompiledTemplate | None:
        """Compile one template and check every name it reads. None when it is broken."""
        try:
            tpl = compile_template(source)
        except TemplateSyntaxError as exc:
            at = locate(_line_offset(source, exc.lineno or 1))
            self.error(f"template syntax error in {label}: {exc.message}", path, at=at)
            return None
        except RecursionError:  # Jinja's parser recurses: `((((…))))` thousands deep
            self.error(f"template in {label} is nested too deeply", path, at=locate(0))
            return None
        seen: set[tuple[str, str | None]] = set()
        for ref in tpl.references:
            if (ref.root, ref.attr) in seen:
                continue
            seen.add((ref.root, ref.attr))
            self.check_reference(ref.root, ref.attr, label, ctx, path, only,
                                 _name_locator(locate, source, ref.root, ref.lineno))
        return tpl

    def check_reference(
        self,
        root: str,
        attr: str | None,
        label: str,
        ctx: StepReferences | None,
        path: PathKey,
        only: tuple[str, ...] | None,
        locate: Callable[[], Location | None],
    ) -> None:
        def err(message: str, hint: str | None = None) -> None:
            self.error(message, path, at=locate(), hint=hint)

        if only is not None and root not in only:
            err(f"'{root}' cannot be used in {label} (only {quote_list(only)})")
            return
        if root == "inputs":
            if attr is not None and attr not in self.input_names:
                guess = did_you_mean(attr, self.input_names)
                mean = f" (did you mean '{guess}'?)" if guess else ""
                hint = None if self.input_names else f"declare it under `inputs:` ({attr}: {{type: string}})"
                err(f"unknown input '{attr}' in {label}{mean}", hint)
        elif root == "env":
            if attr is not None:
                self.env_names.add(attr)
        elif root == "run":
            if attr is not None and attr not in RUN_ATTRIBUTES:
                guess = did_you_mean(attr, RUN_ATTRIBUTES)
                mean = f" (did you mean 'run.{guess}'?)" if guess else ""
                err(f"unknown attribute 'run.{attr}' in {label}{mean}")
        elif root in ("loop", "memory"):
            pass  # bound by Jinja loops / reserved for the engine's context
        elif root in self.step_ids:
            if ctx is not None and root == ctx.step_id:
                err(f"step '{root}' reads its own result in {label}")
                return
            kind = step_kinds.get(self.step_kind(root))
            attributes = STEP_ATTRIBUTES + (kind.attributes if kind is not None else ())
            if attr is not None and attr not in attributes:
                guess = did_you_mean(attr, attributes)
                mean = f" (did you mean '{guess}'?)" if guess else ""
                err(f"unknown attribute '{attr}' of step '{root}' in {label}{mean}",
                    f"a step has {', '.join(attributes)}")
            if ctx is not None:
                ctx.deps.add(root)
        elif root in self.body_ids:
            owner = self.body_ids[root]
            err(f"step '{root}' is inside {self.step_kind(owner)} '{owner}' and cannot be read "
                f"from outside it in {label}", f"read the body's result: {owner}.return")
        else:
            guess = did_you_mean(root, [*self.step_ids, "inputs", "env", "run"])
            mean = f" (did you mean '{guess}'?)" if guess else ""
            if (guess and guess in self.step_ids) or attr in STEP_ATTRIBUTES:
                err(f"unknown step '{root}' in {label}{mean}")
            else:
                err(f"unknown name '{root}' in {label}{mean}",
                    "templates read inputs.NAME, env.NAME, run.id and STEP.return")

    def step_kind(self, step_id: str) -> str:
        """The kind of step `step_id` of this flow, as written (`llm` when it says none)."""
        steps = self.data.get("steps")
        raw = steps[self.step_ids[step_id]] if step_id in self.step_ids and isinstance(steps, list) else {}
        kind = raw.get("type", "llm") if isinstance(raw, dict) else "llm"
        return kind if isinstance(kind, str) else "llm"

    def compile_when(
        self, value: Any, path: PathKey, ctx: StepReferences | None, label: str = "when"
    ) -> CompiledTemplate | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return compile_template("{{ true }}" if value else "{{ false }}")
        if not isinstance(value, str):
            return None  # reported by the schema
        if is_template(value):
            return self.template(value, label, ctx, lambda off: self.doc.location_in_string(path, off), path)
        # A bare expression (`when: inputs.flag`) is read as `{{ inputs.flag }}`.
        return self.template(
            "{{ " + value + " }}", label, ctx,
            lambda off: self.doc.location_in_string(path, max(0, off - 3)), path,
        )

    def template_file(self, rel: str, path: PathKey, ctx: StepReferences) -> tuple[Any, str] | None:
        """Read a `file:` template (relative to the flow) and compile it, located in that file."""
        file = self.base_dir / rel
        display = self.child_display(rel)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.error(f"template file '{rel}' not found", path)
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.error(f"cannot read template file '{rel}': {exc}", path)
            return None
        self.files.add(file.resolve())
        self.sources[display] = text

        def locate(offset: int) -> Location:
            line = text.count("\n", 0, offset) + 1
            return Location(display, line, offset - (text.rfind("\n", 0, offset) + 1) + 1)

        if not is_template(text):
            return text, text
        return self.template(text, f"template file '{rel}'", ctx, locate, path), text


def body_step_ids(steps: list[Any]) -> dict[str, str]:
    """Ids of the steps inside inline bodies (at any depth) -> the top-level step holding them."""
    out: dict[str, str] = {}

    def walk(body: Any, owner: str) -> None:
        for raw in body if isinstance(body, list) else []:
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                out.setdefault(raw["id"], owner)
                walk(raw.get("steps"), owner)

    for raw in steps:
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            walk(raw.get("steps"), raw["id"])
    return out
