"""Templates made of text and `{{ a.b }}` fields are read straight from the context; what
they render must be exactly what Jinja renders, errors included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.engine import environ_view
from runner.templates import TemplateRenderError, _render_fields, compile_template

NAMES = ["inputs", "step", "items", "keys", "x", "range", "env"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=8), st.lists(st.integers(), max_size=3))
values = st.recursive(scalars, lambda inner: st.dictionaries(st.sampled_from(NAMES), inner, max_size=3),
                      max_leaves=8)
contexts = st.dictionaries(st.sampled_from(NAMES), values, max_size=4)
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(".".join)
texts = st.text(alphabet="ab \n.{}%#", max_size=6)


def _jinja(template: Any, context: dict[str, Any]) -> Any:
    """What Jinja alone renders (the fast path switched off), or the error's text."""
    slow = type(template)(template.source, template.references, template.native, template._render, None)
    try:
        return slow.render(context)
    except TemplateRenderError as exc:
        return ("error", str(exc))


def _ours(template: Any, context: dict[str, Any]) -> Any:
    try:
        return template.render(context)
    except TemplateRenderError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.one_of(texts, paths.map(lambda p: "{{ " + p + " }}")), min_size=1, max_size=4),
       context=contexts)
def test_field_templates_render_as_jinja_does(pieces: list[str], context: dict[str, Any]) -> None:
    source = "".join(pieces)
    try:
        template = compile_template(source)
    except Exception:  # noqa: BLE001 - not a template Jinja accepts: nothing to compare
        return
    assert _ours(template, context) == _jinja(template, context)


@settings(max_examples=300, deadline=None)
@given(text=texts, path=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3), leaf=scalars,
       other=contexts)
def test_fields_that_are_there_render_as_jinja_does(text: str, path: list[str], leaf: Any,
                                                    other: dict[str, Any]) -> None:
    context: Any = leaf
    for name in reversed(path):
        context = {name: context}
    context = {**other, **context}
    for source in ("{{ " + ".".join(path) + " }}", text + "{{ " + ".".join(path) + " }}" + text):
        try:
            template = compile_template(source)
        except Exception:  # noqa: BLE001 - not a template Jinja accepts: nothing to compare
            continue
        assert _ours(template, context) == _jinja(template, context)


@pytest.mark.parametrize(("source", "context", "expected"), [
    ("{{ inputs.items }}", {"inputs": {"items": [1, 2]}}, [1, 2]),  # the key, not dict.items
    ("  {{ inputs.n }} ", {"inputs": {"n": 3}}, 3),  # one field: its native value
    ("n={{ inputs.n }}!", {"inputs": {"n": None}}, "n=None!"),
    ("Hi {{ inputs.name }}, {{ inputs.tags }}", {"inputs": {"name": "Ann", "tags": ["a"]}}, "Hi Ann, ['a']"),
    ("{{ a.b.c }}/{{ a.b.c }}", {"a": {"b": {"c": 1.5}}}, "1.5/1.5"),
])
def test_the_fast_path_takes_plain_fields(source: str, context: dict[str, Any], expected: Any) -> None:
    template = compile_template(source)
    assert template._fields is not None
    assert _render_fields(template._fields, template.native, context) == expected
    assert template.render(context) == expected == _jinja(template, context)


def test_what_the_fast_path_cannot_read_goes_to_jinja(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIMBAL_SURELY_UNSET", raising=False)
    template = compile_template("{{ env.TIMBAL_SURELY_UNSET }}")
    with pytest.raises(TemplateRenderError, match="environment variable TIMBAL_SURELY_UNSET is not set"):
        template.render({"env": environ_view()})
    upper = compile_template("{{ inputs.name.upper }}")  # an attribute, not a key: Jinja's lookup
    assert callable(upper.render({"inputs": {"name": "x"}}))
    with pytest.raises(TemplateRenderError, match="undefined"):
        compile_template("{{ inputs.missing }}").render({"inputs": {}})
    # Jinja rewrites line ends in text: such templates are Jinja's alone.
    assert compile_template("a\r\n{{ x }}")._fields is None
    assert compile_template("a\r\n{{ x }}").render({"x": 1}) == "a\n1"
