"""Sandboxed Jinja2: parse a template once, find what it references, render it natively.

A string that is exactly one ``{{ expression }}`` renders to the native value of the
expression (a list stays a list); any other template renders to text. Undefined
names raise, never render as empty text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
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


_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    extensions=["jinja2.ext.loopcontrols"],
)
_env.filters["tojson"] = lambda v, indent=None: __import__("json").dumps(
    v, indent=indent, ensure_ascii=False, default=str
)

#: Names Jinja provides itself; a step may not be named after one.
JINJA_GLOBALS: frozenset[str] = frozenset(_env.globals) | {"true", "false", "none", "True", "False", "None"}

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

    @property
    def roots(self) -> frozenset[str]:
        """The top-level names read by the template."""
        return frozenset(r.root for r in self.references)

    def render(self, context: Mapping[str, Any]) -> Any:
        """Render with `context`; native value for a single expression, else text."""
        try:
            if self.native:
                value = self._render(**context)
                if isinstance(value, StrictUndefined):
                    str(value)  # raises UndefinedError with Jinja's message
                return value
            return self._render.render(**context)
        except UndefinedError as exc:
            raise TemplateRenderError(f"undefined: {exc.message}") from None
        except SecurityError as exc:
            raise TemplateRenderError(f"refused by the template sandbox: {exc}") from None
        except TemplateRenderError:
            raise
        except Exception as exc:  # noqa: BLE001 - any error inside a user expression
            raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None

    def __repr__(self) -> str:
        return f"CompiledTemplate({self.source!r})"


def _references(ast: nodes.Template) -> tuple[Reference, ...]:
    """Top-level names read by the template, with the first attribute or key read from each."""
    bound: set[str] = set()
    for node in ast.find_all((nodes.Assign, nodes.For, nodes.Macro, nodes.With)):
        for target in node.find_all(nodes.Name):
            if target.ctx in ("store", "param"):
                bound.add(target.name)
    refs: list[Reference] = []
    seen_names: set[int] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        inner = node.node
        if isinstance(inner, nodes.Name) and inner.ctx == "load" and inner.name not in bound:
            if isinstance(node, nodes.Getattr):
                attr: str | None = node.attr
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                attr = node.arg.value
            else:
                attr = None
            refs.append(Reference(inner.name, attr, node.lineno))
            seen_names.add(id(inner))
    for node in ast.find_all(nodes.Name):
        if node.ctx == "load" and node.name not in bound and id(node) not in seen_names:
            refs.append(Reference(node.name, None, node.lineno))
    # Names that are globals/filters of Jinja itself are not references.
    return tuple(r for r in refs if r.root not in _env.globals)


def compile_template(source: str) -> CompiledTemplate:
    """Parse `source`. Raises jinja2.TemplateSyntaxError (with .lineno) on bad syntax."""
    ast = _env.parse(source)
    refs = _references(ast)
    match = _SINGLE_EXPR.match(source)
    if match:
        expr = match.group("expr")
        try:
            fn = _env.compile_expression(expr, undefined_to_none=False)
            return CompiledTemplate(source, refs, True, fn)
        except TemplateSyntaxError:
            pass  # e.g. "{{ a }} and {{ b }}" is not a single expression
    return CompiledTemplate(source, refs, False, _env.from_string(source))


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every CompiledTemplate inside a nested structure of dicts, lists and scalars."""
    if isinstance(value, CompiledTemplate):
        return value.render(context)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_value(v, context) for v in value]
    return value
