"""YAML -> Document: plain data plus a 1-based line/column for every node and every key.

Flow files are read as YAML 1.2 with its core schema, as editors and JSON Schema tools
read them: `yes`, `no`, `on`, `off` are text, `1e3` is a number, `010` is ten, `0o10`
eight and `0x10` sixteen (PyYAML alone reads YAML 1.1, where all of these differ).
Only plain data is accepted: the standard YAML tags (str, int, float, bool, null,
map, seq; timestamps stay strings) and merge keys. Everything that can go wrong
while reading a flow file (bad bytes, tabs, syntax, duplicate keys, tags, alias
bombs, an empty file, a top level that is not a mapping) raises a located
`FlowError`, never another exception type.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import Diagnostic, FlowError, Location

__all__ = ["Document", "Span", "load_document", "load_text", "load_bytes", "MAX_ALIAS_EXPANSION"]

#: Nodes that aliases may add on top of the document's own nodes (a "billion laughs" guard).
MAX_ALIAS_EXPANSION = 20_000

# The C parser is several times faster; a 1,000-step flow must load in a few milliseconds.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The YAML 1.2 core schema's plain scalars (YAML 1.2.2, section 10.3.2).
_CORE_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_CORE_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_CORE_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_CORE_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$"
)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader with the YAML 1.2 core schema's implicit types instead of 1.1's."""

    yaml_implicit_resolvers: dict[Any, Any] = {}


for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:null", _CORE_NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", _CORE_BOOL, list("tTfF")),
    ("tag:yaml.org,2002:int", _CORE_INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _CORE_FLOAT, list("-+.0123456789")),
    ("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"]),
):
    _Loader.add_implicit_resolver(_tag, _regexp, _first)
# PyYAML's C composer recurses on the C stack: ~25,000 nested collections crash the
# process (SIGSEGV). Text that may nest that deep is checked first, and refused beyond
# _MAX_DEPTH (documents deeper than ~1,000 levels fail to build anyway).
_CHECK_DEPTH_ABOVE = 10_000
_MAX_DEPTH = 1_000

_Y = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_Y + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _TIMESTAMP, _MERGE = (_Y + t for t in ("map", "seq", "timestamp", "merge"))
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP})


PathKey = tuple[Any, ...]


@dataclass(frozen=True)
class Span:
    """Where a node sits in the source: 0-based start/end line and column, and its scalar style."""

    line: int
    col: int
    end_line: int
    end_col: int
    style: str | None = None  # None (plain), "'", '"', "|", ">" for scalars


@dataclass
class Document:
    """A loaded flow file: `data` (plain dicts/lists/scalars), its `source`, and positions.

    `nodes` maps a path tuple such as ``("steps", 2, "prompt")`` to the YAML node of that
    value; `key_nodes` maps the same path to the node of the mapping key that holds it
    (nodes, not spans: building a Span per node would cost more than the parse). A
    document built from Python data (the builder) has no positions at all.
    """

    data: Any
    path: str = "<string>"
    source: str = ""
    nodes: dict[PathKey, Node] = field(default_factory=dict, repr=False)
    key_nodes: dict[PathKey, Node] = field(default_factory=dict, repr=False)

    @property
    def has_positions(self) -> bool:
        """Whether the document came from text (and so can point at lines and columns)."""
        return bool(self.nodes)

    def span(self, path: PathKey, key: bool = False) -> Span | None:
        """The span of the node at `path` (its key with key=True), or of its nearest ancestor."""
        path = tuple(path)
        if key and path in self.key_nodes:
            return _span(self.key_nodes[path])
        while True:
            if path in self.nodes:
                return _span(self.nodes[path])
            if not path:
                return None
            path = path[:-1]

    def location(self, path: PathKey = (), key: bool = False) -> Location | None:
        """A Location (1-based) for the node at `path`; key=True points at its mapping key."""
        span = self.span(path, key)
        if span is None:
            return None
        return Location(self.path, span.line + 1, span.col + 1)

    def location_in_string(self, path: PathKey, offset: int) -> Location | None:
        """The Location of character `offset` of the string at `path`.

        Exact for single-line plain/quoted scalars and for literal blocks (``|``); for
        folded or multi-line scalars, whose text differs from the source, the start of
        the string (plus the line offset for literal-like text) is the best we can do.
        """
        node = self.nodes.get(tuple(path))
        span = _span(node) if node is not None else None
        value = self._value_at(path)
        if span is None or not isinstance(value, str):
            return self.location(path)
        offset = max(0, min(offset, len(value)))
        lines = self.lines
        if span.style == "|":
            line_in_value = value.count("\n", 0, offset)
            col_in_line = offset - (value.rfind("\n", 0, offset) + 1)
            src_line = span.line + 1 + line_in_value
            if src_line < len(lines):
                text = lines[src_line]
                indent = len(text) - len(text.lstrip(" "))
                return Location(self.path, src_line + 1, indent + col_in_line + 1)
            return self.location(path)
        if span.line == span.end_line and span.line < len(lines):
            start = span.col + (1 if span.style in ("'", '"') else 0)
            # Only trust the column if the source really holds the value verbatim (no escapes).
            if lines[span.line][start : start + len(value)] == value:
                return Location(self.path, span.line + 1, start + offset + 1)
        return self.location(path)

    def _value_at(self, path: PathKey) -> Any:
        node = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    @functools.cached_property
    def lines(self) -> list[str]:
        """The source's lines, split once: every located template error reads them."""
        return self.source.splitlines()

    @property
    def sources(self) -> dict[str, str]:
        """``{path: source}``, for FlowError so code frames show even for text not on disk."""
        return {self.path: self.source} if self.source else {}


def _error(message: str, path: str, line: int, col: int, source: str) -> FlowError:
    """A FlowError with one diagnostic at 0-based line/col."""
    loc = Location(path, line + 1, col + 1)
    return FlowError([Diagnostic(message, loc)], sources={path: source} if source else None)


def load_document(path: str | os.PathLike[str]) -> Document:
    """Read and parse a flow file. Raises FlowError (located when possible)."""
    display = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise FlowError(f"flow file not found: {display}") from None
    except IsADirectoryError:
        raise FlowError(f"not a file: {display}") from None
    except OSError as exc:
        raise FlowError(f"cannot read {display}: {exc.strerror or exc}") from None
    return load_bytes(raw, display)


def load_bytes(raw: bytes, path: str = "<string>", mapping: bool = True) -> Document:
    """Decode UTF-8 (pointing at the first bad byte) and parse (`mapping`: as `load_text`)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n")
        line_start = before.rfind(b"\n") + 1
        col = len(before[line_start:].decode("utf-8", errors="replace"))
        good = raw.decode("utf-8", errors="replace")
        raise _error(
            f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})", path, line, col, good
        ) from None
    return load_text(text, path, mapping)


def load_text(text: str, path: str = "<string>", mapping: bool = True) -> Document:
    """Parse YAML text into a Document. Raises FlowError for anything but one plain mapping
    (any plain data with `mapping=False`, e.g. a list of test cases)."""
    if text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte order mark is harmless; drop it
    try:
        if _may_nest_deeper(text, _CHECK_DEPTH_ABOVE) and _nests_deeper(text, _MAX_DEPTH):
            raise RecursionError
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, path) from None
    except yaml.reader.ReaderError as exc:  # a control character: located by its position
        pos = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, pos)
        col = pos - (text.rfind("\n", 0, pos) + 1)
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or " ")
        raise _error(
            f"control character U+{char:04X} is not allowed in YAML", path, line, col, text
        ) from None
    except yaml.YAMLError as exc:  # anything else the parser may raise, still as a FlowError
        raise _error(f"invalid YAML: {exc}", path, 0, 0, text) from None
    except RecursionError:
        raise _error("the document is nested too deeply", path, 0, 0, text) from None
    if root is None:
        raise _error("the flow file is empty", path, 0, 0, text)
    doc = Document(data=None, path=path, source=text)
    builder = _Builder(doc)
    try:
        data = builder.build(root, ())
    except RecursionError:
        raise _error("the document is nested too deeply", path, 0, 0, text) from None
    if builder.diagnostics:
        raise FlowError(builder.diagnostics, sources={path: text})
    if mapping and not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else "a string" if isinstance(data, str) else "a single value"
        raise _error(
            f"a flow file must be a mapping of keys (version, steps, ...), not {what}",
            path,
            root.start_mark.line,
            root.start_mark.column,
            text,
        )
    doc.data = data
    return doc


def _may_nest_deeper(text: str, limit: int) -> bool:
    """Cheap bound: each level of nesting needs a new line, a bracket or a compact `- `/`? `."""
    bound = text.count("\n") + text.count("[") + text.count("{")
    bound += sum(text.count(ind) for ind in ("- ", "-\t", "? ", "?\t"))
    return bound > limit


def _nests_deeper(text: str, limit: int) -> bool:
    """Whether collections nest deeper than `limit`, from the parser's events (the C parser
    does not recurse; its cost grows with the square of the depth, hence the early stop)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limit:
                return True
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return False


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, path: str) -> FlowError:
    """A YAML syntax error at the parser's mark, in words a user can act on."""
    mark = exc.problem_mark or exc.context_mark
    lines = text.splitlines()
    if mark is not None and mark.line >= len(lines) and exc.context_mark is not None:
        # The problem is at the end of the file (an unclosed quote...): show where it began.
        mark = exc.context_mark
    line, col = (mark.line, mark.column) if mark is not None else (0, 0)
    char = lines[line][col] if line < len(lines) and col < len(lines[line]) else ""
    problem = (exc.problem or "invalid YAML").strip()
    if char == "\t" or "tab" in problem:
        message = "tab character in indentation (YAML needs spaces)"
    elif "expected a single document" in (exc.context or ""):
        message = "more than one YAML document ('---'); a flow file holds exactly one"
    else:
        message = f"invalid YAML: {problem}"
        if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            message += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        elif exc.context:
            message += f" ({exc.context})"
    return _error(message, path, line, col, text)


_NOT_CORE = object()


def _core_scalar(tag: str, text: str) -> Any:
    """The value of a null, bool, int or float scalar under the YAML 1.2 core schema
    (`_NOT_CORE` when `text` is not one)."""
    if tag == _NULL:
        return None if _CORE_NULL.match(text) else _NOT_CORE
    if tag == _BOOL:
        return text.lower() == "true" if _CORE_BOOL.match(text) else _NOT_CORE
    if tag == _INT and _CORE_INT.match(text):
        return _core_int(text)
    if tag == _FLOAT and _CORE_INT.match(text):  # `!!float 1`
        return float(_core_int(text))
    if tag == _FLOAT and _CORE_FLOAT.match(text):
        lowered = text.lower()
        if lowered.endswith(".nan"):
            return float("nan")
        if lowered.endswith(".inf"):
            return float("-inf") if text.startswith("-") else float("inf")
        return float(text)
    return _NOT_CORE


def _core_int(text: str) -> int:
    """A core schema int: decimal (`010` is ten), `0o` octal or `0x` hexadecimal."""
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_Y) :] if tag.startswith(_Y) else tag


def _span(node: Node) -> Span:
    style = node.style if isinstance(node, ScalarNode) else None
    return Span(
        node.start_mark.line, node.start_mark.column, node.end_mark.line, node.end_mark.column, style
    )


class _Builder:
    """Turns composed nodes into plain values, recording spans and collecting errors."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.diagnostics: list[Diagnostic] = []
        self.unique: set[int] = set()
        self.visits = 0
        self.active: set[int] = set()  # nodes being built now: seeing one again is a recursive alias

    def error(self, message: str, node: Node) -> None:
        mark = node.start_mark
        self.diagnostics.append(Diagnostic(message, Location(self.doc.path, mark.line + 1, mark.column + 1)))

    def build(self, node: Node, path: PathKey) -> Any:
        nid = id(node)
        self.visits += 1
        if nid in self.unique:
            # An alias re-uses a node: cap how much such re-use may expand the data.
            if self.visits - len(self.unique) > MAX_ALIAS_EXPANSION:
                raise _error(
                    f"anchors and aliases expand to more than {MAX_ALIAS_EXPANSION} extra nodes",
                    self.doc.path, node.start_mark.line, node.start_mark.column, self.doc.source,
                )
        else:
            self.unique.add(nid)
        if nid in self.active:
            raise _error("recursive alias: an anchor refers to itself", self.doc.path,
                         node.start_mark.line, node.start_mark.column, self.doc.source)
        self.doc.nodes[path] = node
        tag = node.tag
        if isinstance(node, ScalarNode):
            return self.scalar(node, tag)
        self.active.add(nid)
        try:
            if isinstance(node, SequenceNode):
                if tag != _SEQ:
                    self.bad_tag(node, tag)
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if tag != _MAP:
                    self.bad_tag(node, tag)
                return self.mapping(node, path)
        finally:
            self.active.discard(nid)
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover - yaml has 3 kinds

    def bad_tag(self, node: Node, tag: str) -> None:
        name = _tag_name(tag)
        if "python/" in tag:
            self.error(f"tag '{name}' is not allowed: flow files hold plain data only", node)
        else:
            self.error(f"unknown tag '{name}' (only plain YAML data is allowed)", node)

    def scalar(self, node: ScalarNode, tag: str) -> Any:
        if tag not in _SCALAR_TAGS:
            self.bad_tag(node, tag)
            return node.value
        if tag in (_STR, _TIMESTAMP):
            return node.value
        value = _core_scalar(tag, node.value)
        if value is _NOT_CORE:
            # An explicit tag on text it cannot convert, e.g. `!!int abc` or `!!bool yes`.
            self.error(f"'{node.value}' is not a valid {_tag_name(tag)}", node)
            return node.value
        return value

    def mapping(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        own_node = self.doc.nodes.get(path)
        # Merge keys first, so that the explicit keys' positions (recorded after) win.
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                for source in self.merge_sources(value_node):
                    built = self.build(source, path)
                    for key, value in built.items():
                        merged.setdefault(key, value)  # earlier sources win over later ones
        if own_node is not None:
            self.doc.nodes[path] = own_node
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, ScalarNode):
                self.error("mapping keys must be plain text, not a list or mapping", key_node)
                continue
            if key_node.tag not in _SCALAR_TAGS:
                self.bad_tag(key_node, key_node.tag)
            # Keys are always text: `on:`/`yes:` must not turn into booleans in a config file.
            key = key_node.value
            if key in first_line:
                self.error(
                    f"duplicate key '{key}' (first defined on line {first_line[key]})", key_node
                )
                continue
            first_line[key] = key_node.start_mark.line + 1
            self.doc.key_nodes[path + (key,)] = key_node
            out[key] = self.build(value_node, path + (key,))
        for key, value in merged.items():
            out.setdefault(key, value)
        return out

    def merge_sources(self, value_node: Node) -> list[MappingNode]:
        if isinstance(value_node, MappingNode):
            return [value_node]
        if isinstance(value_node, SequenceNode) and all(
            isinstance(v, MappingNode) for v in value_node.value
        ):
            return list(value_node.value)
        self.error("a merge key '<<' needs a mapping or a list of mappings", value_node)
        return []
