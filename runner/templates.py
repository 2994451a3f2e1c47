"""Sandboxed Jinja2: parse a template once, find what it references, render it natively.

A string that is exactly one ``{{ expression }}`` renders to the native value of the
expression (a list stays a list); any other template renders to text. Undefined
names raise, never render as empty text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateAssertionError, UndefinedError
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "CompiledTemplate",
    "TemplateRenderError",
    "compile_template",
    "render_value",
    "is_template",
    "JINJA_GLOBALS",
]


class TemplateRenderError(Exception):
    """Rendering failed: an undefined name, a sandbox violation, or an error in an expression."""


class _DataEnvironment(ImmutableSandboxedEnvironment):
    """`a.b` on a mapping reads its key `b` first: an input or output named `items`, `keys`
    or `values` is that value, not the dict method of that name (`{{ inputs.items }}`)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_env = _DataEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    extensions=["jinja2.ext.loopcontrols"],
)
_env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False, default=str)

#: Names Jinja provides itself; a step may not be named after one.
JINJA_GLOBALS: frozenset[str] = frozenset(_env.globals) | {"true", "false", "none", "True", "False", "None"}

# Jinja's message for `env.NAME` when NAME is not in the environment (see engine.environ_view).
_UNSET_ENV = re.compile(r"^'_Environ object' has no attribute '([^']+)'")
_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)
_MARKERS = ("{{", "{%", "{#")


def is_template(text: str) -> bool:
    """Whether the string contains Jinja syntax at all (plain strings skip Jinja entirely)."""
    return any(m in text for m in _MARKERS)


@dataclass(frozen=True)
class Reference:
    """A name a template reads: ``root`` (``inputs``, a step id, ``env``...) and its first attribute."""

    root: str
    attr: str | None
    lineno: int  # 1-based line inside the template text


@dataclass(frozen=True, eq=False)
class CompiledTemplate:
    """A parsed template: its source, what it references, and a render function."""

    source: str
    references: tuple[Reference, ...]
    native: bool
    _render: Any  # jinja Template, or a compiled expression when native
    # Text and `{{ a.b }}` fields only: the text pieces and the fields' paths, in order, read
    # straight from the context when every key is there (else Jinja renders, and says why not).
    _fields: tuple[str | tuple[str, ...], ...] | None = None

    @property
    def roots(self) -> frozenset[str]:
        """The top-level names read by the template."""
        return frozenset(r.root for r in self.references)

    def render(self, context: Mapping[str, Any]) -> Any:
        """Render with `context`; native value for a single expression, else text."""
        if self._fields is not None:
            fast = _render_fields(self._fields, self.native, context)
            if fast is not _MISSING:
                return fast
        try:
            if self.native:
                value = self._render(**context)
                if isinstance(value, StrictUndefined):
                    str(value)  # raises UndefinedError with Jinja's message
                return value
            return self._render.render(**context)
        except UndefinedError as exc:
            unset = _UNSET_ENV.match(exc.message or "")
            if unset:
                raise TemplateRenderError(f"environment variable {unset.group(1)} is not set") from None
            raise TemplateRenderError(f"undefined: {exc.message}") from None
        except SecurityError as exc:
            raise TemplateRenderError(f"refused by the template sandbox: {exc}") from None
        except TemplateRenderError:
            raise
        except Exception as exc:  # noqa: BLE001 - any error inside a user expression
            raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None

    def __repr__(self) -> str:
        return f"CompiledTemplate({self.source!r})"


_MISSING = object()


def _render_fields(fields: tuple[str | tuple[str, ...], ...], native: bool, context: Mapping[str, Any]) -> Any:
    """A template of text and `{{ a.b }}` fields, read straight from `context` (what Jinja
    would render: a key of a mapping wins over an attribute, a value prints as `str()`), or
    _MISSING when a name or key is not there or a value is not a mapping: Jinja renders those,
    with its error or its attribute lookup."""
    parts: list[str] = []
    for field in fields:
        if isinstance(field, str):
            parts.append(field)
            continue
        value: Any = context
        for name in field:
            if not isinstance(value, Mapping) or name not in value:
                return _MISSING
            value = value[name]
        if native:
            return value
        parts.append(str(value))
    return "".join(parts)


def _field_plan(source: str) -> tuple[str | tuple[str, ...], ...] | None:
    """The text pieces and field paths of a template that `_simple_references` accepted, or
    None when Jinja's own handling could differ (line ends it rewrites, Jinja's global names)."""
    if "\r" in source:
        return None
    plan: list[str | tuple[str, ...]] = []
    last = 0
    for m in _FIELD.finditer(source):
        path = tuple(m.group(1).split("."))
        if path[0] in _env.globals:
            return None
        if m.start() > last:
            plan.append(source[last : m.start()])
        plan.append(path)
        last = m.end()
    if last < len(source):
        plan.append(source[last:])
    return tuple(plan)


def _references(ast: nodes.Template) -> tuple[Reference, ...]:
    """Top-level names read by the template, with the first attribute or key read from each."""
    bound: set[str] = set()
    for scope in ast.find_all((nodes.Assign, nodes.For, nodes.Macro, nodes.With)):
        for target in scope.find_all(nodes.Name):
            if target.ctx in ("store", "param"):
                bound.add(target.name)
    refs: list[Reference] = []
    seen_names: set[int] = set()
    for access in ast.find_all((nodes.Getattr, nodes.Getitem)):
        inner = access.node  # type: ignore[attr-defined]
        if isinstance(inner, nodes.Name) and inner.ctx == "load" and inner.name not in bound:
            attr: str | None = None
            if isinstance(access, nodes.Getattr):
                attr = access.attr
            elif isinstance(access, nodes.Getitem) and isinstance(access.arg, nodes.Const):
                attr = access.arg.value if isinstance(access.arg.value, str) else None
            refs.append(Reference(inner.name, attr, access.lineno))
            seen_names.add(id(inner))
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in bound and id(name) not in seen_names:
            refs.append(Reference(name.name, None, name.lineno))
    # Names that are globals/filters of Jinja itself are not references.
    return tuple(r for r in refs if r.root not in _env.globals)


class _Deferred:
    """Jinja's code generation, done at the first render.

    Parsing (which finds syntax errors and references) is cheap; generating and compiling
    Python code costs ~0.5 ms per template, too much for `timbal validate` on big flows.
    """

    __slots__ = ("_make", "_made")

    def __init__(self, make: Any) -> None:
        self._make = make
        self._made: Any = None

    def _get(self) -> Any:
        if self._made is None:
            self._made = self._make()
        return self._made

    def __call__(self, **context: Any) -> Any:
        return self._get()(**context)

    def render(self, **context: Any) -> Any:
        return self._get().render(**context)


def _check_names(ast: nodes.Template) -> None:
    """Unknown filters and tests, found at parse time (code generation would find them later)."""
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        known = _env.filters if isinstance(node, nodes.Filter) else _env.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateAssertionError(f"No {kind} named {node.name!r}.", node.lineno, None, None)


def _is_expression(expr: str) -> bool:
    """Whether `expr` parses as exactly one expression (as compile_expression would check)."""
    parser = Parser(_env, expr, state="variable")
    try:
        parser.parse_expression()
    except TemplateSyntaxError:
        return False
    return parser.stream.eos


# Most templates are text with `{{ name.attr }}` fields: their references are read with a
# regular expression, and Jinja parses them only at the first render (fast `validate`).
_FIELD = re.compile(r"\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)[ \t]*\}\}")
_JINJA_WORDS = frozenset(
    {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None"}
)


def _simple_references(source: str) -> tuple[Reference, ...] | None:
    """The references of a template made only of text and `{{ a.b }}` fields; else None."""
    refs: list[Reference] = []
    last = 0
    for m in _FIELD.finditer(source):
        gap = source[last : m.start()]
        names = m.group(1).split(".")
        if any(t in gap for t in _MARKERS) or gap.endswith("{") or _JINJA_WORDS.intersection(names):
            return None
        if names[0] not in _env.globals:
            attr = names[1] if len(names) > 1 else None
            refs.append(Reference(names[0], attr, source.count("\n", 0, m.start()) + 1))
        last = m.end()
    if any(t in source[last:] for t in _MARKERS):
        return None
    return tuple(refs)


def compile_template(source: str) -> CompiledTemplate:
    """Parse `source`. Raises jinja2.TemplateSyntaxError (with .lineno) on bad syntax."""
    match = _SINGLE_EXPR.match(source)
    refs = _simple_references(source)
    ast: nodes.Template | None = None
    if refs is None:
        ast = _env.parse(source)
        _check_names(ast)
        refs = _references(ast)
    # Text made only of fields holds one field when it is one `{{ }}`; otherwise ask Jinja.
    fields = _field_plan(source) if ast is None else None
    if match and (ast is None or _is_expression(match.group("expr"))):
        expr = match.group("expr")
        native = _Deferred(lambda: _env.compile_expression(expr, undefined_to_none=False))
        if fields is not None:  # the one field, without the blanks around it
            fields = tuple(f for f in fields if not isinstance(f, str))
        return CompiledTemplate(source, refs, True, native, fields)
    text = source if ast is None else ast
    return CompiledTemplate(source, refs, False, _Deferred(lambda: _env.from_string(text)), fields)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every CompiledTemplate inside a nested structure of dicts, lists and scalars."""
    if isinstance(value, CompiledTemplate):
        return value.render(context)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_value(v, context) for v in value]
    return value
