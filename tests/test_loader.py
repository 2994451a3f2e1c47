"""The YAML loader: plain data with positions, and located FlowErrors for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import FlowError, Location
from runner.loader import Document, load_bytes, load_document, load_text


def only_error(text: str) -> str:
    """The one headline of the FlowError that loading `text` as f.yaml raises."""
    with pytest.raises(FlowError) as info:
        load_text(text, "f.yaml")
    assert len(info.value.diagnostics) == 1
    return info.value.diagnostics[0].headline()


def test_plain_data_comes_back_as_dicts_lists_and_scalars() -> None:
    doc = load_text("a: 1\nb: [x, 2.5, true, null]\nc: {d: e}\n")
    assert doc.data == {"a": 1, "b": ["x", 2.5, True, None], "c": {"d": "e"}}


def test_every_node_and_key_has_a_one_based_position() -> None:
    doc = load_text("version: 1\nsteps:\n  - id: chat\n    prompt: hi\n", "f.yaml")
    assert doc.location(("steps", 0, "prompt")) == Location("f.yaml", 4, 13)
    assert doc.location(("steps", 0, "prompt"), key=True) == Location("f.yaml", 4, 5)
    assert doc.location(("steps", 0)) == Location("f.yaml", 3, 5)
    assert doc.location(()) == Location("f.yaml", 1, 1)


def test_a_missing_path_falls_back_to_the_nearest_ancestor() -> None:
    doc = load_text("steps:\n  - id: chat\n", "f.yaml")
    assert doc.location(("steps", 0, "prompt", "x")) == Location("f.yaml", 2, 5)
    assert doc.location(("steps", 0, "nope"), key=True) == Location("f.yaml", 2, 5)


def test_column_inside_a_plain_or_quoted_single_line_string() -> None:
    doc = load_text("a: hello {{ x }}\nb: 'hi {{ y }}'\nc: \"yo {{ z }}\"\n", "f.yaml")
    assert doc.location_in_string(("a",), 9) == Location("f.yaml", 1, 13)
    assert doc.location_in_string(("b",), 3) == Location("f.yaml", 2, 8)
    assert doc.location_in_string(("c",), 3) == Location("f.yaml", 3, 8)


def test_column_inside_a_literal_block() -> None:
    doc = load_text("a: |\n  one\n  two {{ x }}\n", "f.yaml")
    assert doc.location_in_string(("a",), doc.data["a"].index("{{")) == Location("f.yaml", 3, 7)


def test_escaped_strings_point_at_their_start() -> None:
    doc = load_text('a: "tab\\there {{ x }}"\n', "f.yaml")
    assert doc.location_in_string(("a",), 10) == Location("f.yaml", 1, 4)


def test_timestamps_stay_strings_and_keys_are_always_text() -> None:
    doc = load_text("date: 2024-01-02\non: true\n1: x\n")
    assert doc.data == {"date": "2024-01-02", "on": True, "1": "x"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("Yes", "Yes"), ("y", "y"),
        ("true", True), ("False", False), ("TRUE", True),
        ("1e3", 1000.0), ("-1.5E-2", -0.015), (".5", 0.5), ("1.", 1.0), (".inf", float("inf")),
        ("-.Inf", float("-inf")),
        ("010", 10), ("0o10", 8), ("0x1f", 31), ("-7", -7), ("+3", 3),
        ("1_000", "1_000"), ("0b101", "0b101"), ("1:30", "1:30"), ("~", None), ("null", None),
        ("", None), ("Null", None),
    ],
)
def test_plain_scalars_follow_the_yaml_12_core_schema(text: str, value: object) -> None:
    data = load_text(f"a: {text}\n").data["a"]
    assert data == value and type(data) is type(value)


def test_nan_is_a_float() -> None:
    value = load_text("a: .nan\n").data["a"]
    assert isinstance(value, float) and value != value


def test_explicit_tags_convert_by_the_core_schema_or_are_errors() -> None:
    data = load_text("a: !!int '010'\nb: !!float 1\nc: !!str 10\nd: !!bool 'true'\n").data
    assert data == {"a": 10, "b": 1.0, "c": "10", "d": True}
    with pytest.raises(FlowError, match="'yes' is not a valid !!bool"):
        load_text("a: !!bool yes\n")


def test_merge_keys_merge_with_explicit_keys_winning() -> None:
    doc = load_text("base: &b {model: echo, retries: 1}\nstep:\n  <<: *b\n  retries: 3\n")
    assert doc.data["step"] == {"retries": 3, "model": "echo"}


def test_a_byte_order_mark_is_ignored() -> None:
    assert load_bytes("\ufeffa: 1\n".encode()).data == {"a": 1}


def test_duplicate_key_is_located_at_the_second_and_names_the_first_line() -> None:
    assert only_error("a: 1\nb: 2\na: 3\n") == (
        "f.yaml:3:1: error: duplicate key 'a' (first defined on line 1)"
    )


def test_tabs_in_indentation_are_refused() -> None:
    assert only_error("a:\n\tb: 1\n") == (
        "f.yaml:2:1: error: tab character in indentation (YAML needs spaces)"
    )


def test_syntax_errors_carry_the_parsers_mark() -> None:
    assert only_error("a: b: c\n") == (
        "f.yaml:1:5: error: invalid YAML: mapping values are not allowed in this context"
    )


def test_an_empty_file_is_an_error() -> None:
    assert only_error("") == "f.yaml:1:1: error: the flow file is empty"
    assert only_error("# only a comment\n") == "f.yaml:1:1: error: the flow file is empty"


def test_the_top_level_must_be_a_mapping() -> None:
    assert "must be a mapping" in only_error("- a\n- b\n")
    assert "must be a mapping" in only_error("42\n")


def test_non_utf8_bytes_point_at_the_first_bad_byte() -> None:
    with pytest.raises(FlowError) as info:
        load_bytes(b"a: 1\nb: caf\xe9\n", "f.yaml")
    assert info.value.diagnostics[0].headline() == (
        "f.yaml:2:7: error: file is not valid UTF-8 (byte 0xe9)"
    )


def test_python_tags_are_refused() -> None:
    assert "'!!python/object/apply:os.system' is not allowed" in only_error(
        "a: !!python/object/apply:os.system [ls]\n"
    )


def test_unknown_tags_are_refused() -> None:
    assert only_error("a: !secret x\n") == (
        "f.yaml:1:4: error: unknown tag '!secret' (only plain YAML data is allowed)"
    )


def test_alias_bombs_are_capped() -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 7):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    assert "anchors and aliases expand" in only_error("\n".join(lines) + "\n")


def test_a_recursive_alias_is_refused() -> None:
    assert "recursive alias" in only_error("a: &x [1, *x]\n")


def test_several_documents_are_refused() -> None:
    assert "more than one YAML document" in only_error("a: 1\n---\nb: 2\n")


def test_control_characters_are_located() -> None:
    assert only_error("a: b\x07\n") == (
        "f.yaml:1:5: error: control character U+0007 is not allowed in YAML"
    )


def test_errors_carry_the_source_for_code_frames() -> None:
    with pytest.raises(FlowError) as info:
        load_text("a: 1\na: 2\n", "not/on/disk.yaml")
    text = info.value.format()
    assert "    2 | a: 2" in text and "^" in text


def test_load_document_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: 1\n")
    doc = load_document(path)
    assert isinstance(doc, Document)
    assert doc.data == {"a": 1} and doc.source == "a: 1\n" and doc.path == str(path)


def test_a_missing_file_is_a_flow_error(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="not found"):
        load_document(tmp_path / "nope.yaml")


def test_a_directory_is_a_flow_error(tmp_path: Path) -> None:
    with pytest.raises(FlowError):
        load_document(tmp_path)
