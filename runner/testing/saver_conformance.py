"""The saver conformance suite: what every state saver must do (SPEC §3), as tests.

Our four savers run it, and so can yours, with one fixture (as LangGraph's checkpoint
conformance suite is used):

    import pytest
    from runner.testing.saver_conformance import SaverConformance

    class TestRedisSaver(SaverConformance):
        @pytest.fixture
        def store(self, tmp_path):
            # each call opens a new saver object on one fresh store
            savers = []
            def opener():
                savers.append(RedisSaver(url, prefix=tmp_path.name))
                return savers[-1]
            yield opener
            for saver in savers:
                saver.close()

`store` returns a function: each call opens a new saver object on the same store (how
"reopening sees everything" is checked); an in-memory saver may return the same object.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from ..errors import InputError, RunNotFound, SaverError
from ..ids import new_run_id
from ..savers.base import RunRecord, Saver, StepRecord

__all__ = ["SaverConformance", "Opener", "add_run", "msg"]

#: Opens a new saver object on the store under test.
Opener = Callable[[], Saver]


def msg(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "content": content}


def add_run(
    saver: Saver,
    parent: str | None = None,
    flow: str = "chat",
    said: str = "hi",
    memory_id: str = "session",
    status: str = "succeeded",
    started_at: float | None = None,
) -> str:
    """A finished run whose one step added a user message and a reply to `memory_id`."""
    run_id = new_run_id()
    run = RunRecord(run_id, parent, flow, f"{flow}.yaml", "hash")
    if started_at is not None:
        run.started_at = started_at
    saver.start_run(run)
    saver.save_step(run_id, StepRecord(
        "chat", "succeeded", 1, f"re: {said}",
        messages={memory_id: [msg("user", said), msg("assistant", f"re: {said}")]},
    ))
    saver.finish_run(run_id, status, {"response": f"re: {said}"})
    return run_id


class SaverConformance:
    """Subclass it and give a `store` fixture; every `test_*` method runs on your saver."""

    @pytest.fixture
    def store(self) -> Opener:
        raise NotImplementedError("give your subclass a `store` fixture that opens your saver")

    @pytest.fixture
    def saver(self, store: Opener) -> Saver:
        return store()

    def test_a_run_round_trips_every_field(self, saver: Saver) -> None:
        parent = add_run(saver)
        run = RunRecord(
            run_id=new_run_id(), parent_id=parent, flow_name="support-chat",
            flow_path="/flows/support.yaml", flow_hash="sha256:abc", started_at=1700000000.25,
            inputs={"prompt": "Hi", "tone": "formal", "n": 3, "nested": {"a": [1, 2.5, None, True]}},
        )
        saver.start_run(run)
        steps = [
            StepRecord("chat", "succeeded", 1, "Hello!", None, "openai/gpt-4o-mini",
                       {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
                       1700000000.5, 1700000001.75, 2,
                       {"session1": [msg("user", "Hi"), msg("assistant", "Hello!")]}, "key-1"),
            StepRecord("audit", "failed", 2, None, "timeout after 60s", "anthropic/claude", {}, 1.0,
                       2.0, 3, {}, None),
            StepRecord("skip_me", "skipped", 3),
            StepRecord("sub/inner", "succeeded", 4, {"parsed": ["json", 1]}, model="echo",
                       messages={"session1": [msg("user", "x"), msg("assistant", "y")]}),
        ]
        for step in steps:
            saver.save_step(run.run_id, step)
        assert saver.get_run(run.run_id).status == "running"
        saver.finish_run(run.run_id, "failed", outputs={"response": "Hello!", "score": None},
                         error="step audit failed", usage={"total_tokens": 13}, ended_at=1700000002.5)

        got = saver.get_run(run.run_id)
        expected = RunRecord(
            run.run_id, parent, "support-chat", "/flows/support.yaml", "sha256:abc", "failed",
            1700000000.25, 1700000002.5, run.inputs, {"response": "Hello!", "score": None},
            "step audit failed", {"total_tokens": 13}, steps,
        )
        assert got.to_dict() == expected.to_dict()

    def test_finish_run_without_an_end_time_uses_now(self, saver: Saver) -> None:
        run_id = new_run_id()
        saver.start_run(RunRecord(run_id, None, "f", None, "h"))
        before = time.time()
        saver.finish_run(run_id, "succeeded", "plain text output")
        got = saver.get_run(run_id)
        assert got.ended_at is not None and before - 1 <= got.ended_at <= time.time() + 1
        assert got.outputs == "plain text output" and got.usage == {} and got.error is None

    def test_a_later_record_of_a_step_replaces_the_earlier_one(self, saver: Saver) -> None:
        run_id = new_run_id()
        saver.start_run(RunRecord(run_id, None, "f", None, "h", started_at=1000.0))
        saver.save_step(run_id, StepRecord("a", "succeeded", 1, "A", messages={"m": [msg("user", "a")]}))
        saver.save_step(run_id, StepRecord("b", "failed", 2, error="boom"))
        saver.finish_run(run_id, "failed", error="b failed")

        # Resume: the same run, running again; b is run again and succeeds.
        saver.start_run(RunRecord(run_id, None, "f", None, "h", started_at=2000.0))
        resumed = saver.get_run(run_id)
        assert resumed.status == "running" and resumed.ended_at is None and resumed.error is None
        assert resumed.started_at == 1000.0
        assert [s.step_id for s in resumed.steps] == ["a", "b"]
        saver.save_step(run_id, StepRecord("b", "succeeded", 3, "B", messages={"m": [msg("user", "b")]}))
        saver.finish_run(run_id, "succeeded", "B")

        got = saver.get_run(run_id)
        assert [(s.step_id, s.status, s.return_value) for s in got.steps] == [
            ("a", "succeeded", "A"), ("b", "succeeded", "B")]
        assert saver.load_memory(run_id) == {"m": [msg("user", "a"), msg("user", "b")]}
        assert [r.run_id for r in saver.list_runs()] == [run_id]

    def test_writing_to_an_unknown_run_raises_run_not_found(self, saver: Saver) -> None:
        with pytest.raises(RunNotFound):
            saver.save_step("NOPE", StepRecord("a", "succeeded"))
        with pytest.raises(RunNotFound):
            saver.finish_run("NOPE", "succeeded")
        with pytest.raises(RunNotFound):
            saver.delete_run("NOPE")

    def test_reading_an_unknown_run_raises_run_not_found(self, saver: Saver) -> None:
        with pytest.raises(RunNotFound):
            saver.get_run("NOPE")
        with pytest.raises(RunNotFound):
            saver.memory_delta("NOPE")
        with pytest.raises(RunNotFound):
            saver.load_memory("NOPE")

    def test_memory_follows_a_chain_of_three_runs(self, saver: Saver) -> None:
        a = add_run(saver, said="one")
        b = add_run(saver, a, said="two")
        c = add_run(saver, b, said="three")
        turn = [msg("user", "one"), msg("assistant", "re: one")]
        assert saver.load_memory(a) == {"session": turn}
        assert saver.load_memory(c)["session"] == turn + [
            msg("user", "two"), msg("assistant", "re: two"),
            msg("user", "three"), msg("assistant", "re: three"),
        ]
        assert saver.memory_delta(c) == (b, {"session": [msg("user", "three"), msg("assistant", "re: three")]})
        assert list(saver.ancestry(c)) == [c, b, a]

    def test_a_cycle_in_the_ancestry_is_an_error_not_an_endless_walk(self, saver: Saver) -> None:
        a, b = new_run_id(), new_run_id()
        saver.start_run(RunRecord(a, b, "chat", None, "hash"))  # a damaged store: a <-> b
        saver.start_run(RunRecord(b, a, "chat", None, "hash"))
        for walk in (saver.ancestry, saver.load_memory):
            with pytest.raises(SaverError, match="its own ancestor|cycle"):
                list(itertools.islice(walk(a), 10))  # bounded, so the old endless walk fails

    def test_branches_never_see_each_others_messages(self, saver: Saver) -> None:
        root = add_run(saver, said="root")
        left = add_run(saver, root, said="left")
        right = add_run(saver, root, said="right")
        deeper = add_run(saver, left, said="deeper")
        contents = {rid: [m["content"] for m in saver.load_memory(rid)["session"]]
                    for rid in (left, right, deeper)}
        assert contents[left] == ["root", "re: root", "left", "re: left"]
        assert contents[right] == ["root", "re: root", "right", "re: right"]
        assert contents[deeper] == ["root", "re: root", "left", "re: left", "deeper", "re: deeper"]
        assert [m["content"] for m in saver.load_memory(root)["session"]] == ["root", "re: root"]

    def test_memory_keeps_each_memory_id_apart_in_step_order(self, saver: Saver) -> None:
        parent = add_run(saver, said="before", memory_id="s1")
        run_id = new_run_id()
        saver.start_run(RunRecord(run_id, parent, "f", None, "h"))
        # Saved out of order (parallel steps end in any order); seq orders them.
        saver.save_step(run_id, StepRecord("third", "succeeded", 3, messages={"s1": [msg("user", "3")]}))
        saver.save_step(run_id, StepRecord("first", "succeeded", 1, messages={
            "s1": [msg("user", "1")], "auditor": [msg("user", "rate")]}))
        saver.save_step(run_id, StepRecord("failed", "failed", 2, messages={"s1": [msg("user", "x")]}))
        saver.save_step(run_id, StepRecord("skipped", "skipped", 4))
        memory = saver.load_memory(run_id)
        assert [m["content"] for m in memory["s1"]] == ["before", "re: before", "1", "3"]
        assert memory["auditor"] == [msg("user", "rate")]
        assert saver.memory_delta(run_id)[1] == {
            "s1": [msg("user", "1"), msg("user", "3")], "auditor": [msg("user", "rate")]}

    def test_a_run_without_steps_adds_no_memory(self, saver: Saver) -> None:
        parent = add_run(saver)
        run_id = new_run_id()
        saver.start_run(RunRecord(run_id, parent, "f", None, "h"))
        assert saver.memory_delta(run_id) == (parent, {})
        assert saver.load_memory(run_id) == saver.load_memory(parent)

    def test_tool_calls_and_unicode_survive_the_round_trip(self, saver: Saver) -> None:
        text = "héllo wörld ✓ 日本語 🎉 \"quotes\" \\ back\nnew line\u2028sep\ttab \x00nul"
        messages = [
            msg("user", text),
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "lookup", "arguments": json.dumps({"q": "ü"})}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "résultat"},
        ]
        run_id = new_run_id()
        saver.start_run(RunRecord(run_id, None, "flöw ✓", "fl/ö.yaml", "h", inputs={"prompt": text}))
        saver.save_step(run_id, StepRecord("chat", "succeeded", 1, text, messages={"mém": messages}))
        saver.finish_run(run_id, "succeeded", {"réponse": text})
        got = saver.get_run(run_id)
        assert got.inputs == {"prompt": text} and got.outputs == {"réponse": text}
        assert got.steps[0].return_value == text
        assert saver.load_memory(run_id) == {"mém": messages}
        assert [r.run_id for r in saver.list_runs(flow="flöw ✓")] == [run_id]

    def test_list_runs_is_newest_first_and_filters_by_flow_and_status(self, saver: Saver) -> None:
        old = add_run(saver, flow="a", status="succeeded", started_at=1000.0)
        mid = add_run(saver, flow="b", status="failed", started_at=2000.0)
        new = add_run(saver, flow="a", status="failed", started_at=3000.0)
        running = new_run_id()
        saver.start_run(RunRecord(running, None, "a", None, "h", started_at=4000.0))

        assert [r.run_id for r in saver.list_runs()] == [running, new, mid, old]
        assert [r.run_id for r in saver.list_runs(flow="a")] == [running, new, old]
        assert [r.run_id for r in saver.list_runs(status="failed")] == [new, mid]
        assert [r.run_id for r in saver.list_runs(flow="a", status="failed")] == [new]
        assert [r.run_id for r in saver.list_runs(status="running")] == [running]
        assert [r.run_id for r in saver.list_runs(limit=2)] == [running, new]
        assert saver.list_runs(flow="nope") == []
        listed = saver.list_runs(flow="b")[0]
        assert listed.steps == [] and listed.status == "failed" and listed.outputs == {"response": "re: hi"}

    def test_latest_is_the_newest_run_of_a_flow(self, saver: Saver) -> None:
        assert saver.latest() is None
        first = add_run(saver, flow="chat")
        other = add_run(saver, flow="other")
        second = add_run(saver, first, flow="chat")
        latest = saver.latest("chat")
        assert latest is not None and latest.run_id == second
        newest = saver.latest()
        assert newest is not None and newest.run_id == second and other != second
        assert saver.latest("missing") is None

    def test_resolve_finds_a_run_by_unique_prefix_in_any_case(self, saver: Saver) -> None:
        a = add_run(saver)
        b = add_run(saver)
        common = os.path.commonprefix([a, b])
        assert saver.resolve(a) == a
        assert saver.resolve(a[: len(common) + 1]) == a
        assert saver.resolve(b[: len(common) + 1].lower()) == b
        with pytest.raises(RunNotFound, match="ambiguous"):
            saver.resolve(common)
        with pytest.raises(RunNotFound, match="no run"):
            saver.resolve("ZZZZZZ")

    def test_resolve_prefers_an_exact_id(self, saver: Saver) -> None:
        for run_id in ("run1", "run10"):
            saver.start_run(RunRecord(run_id, None, "f", None, "h"))
        assert saver.resolve("run1") == "run1"
        with pytest.raises(RunNotFound, match="ambiguous"):
            saver.resolve("run")
        # LIKE wildcards in a prefix are plain characters.
        with pytest.raises(RunNotFound):
            saver.resolve("r_n")

    def test_children_and_descendants(self, saver: Saver) -> None:
        root = add_run(saver)
        left = add_run(saver, root)
        right = add_run(saver, root)
        leaf = add_run(saver, left)
        assert saver.children(root) == [left, right]
        assert saver.children(left) == [leaf]
        assert saver.children(leaf) == []
        assert list(saver.descendants(root)) == [left, leaf, right]

    def test_delete_run_forgets_the_run_and_only_it(self, saver: Saver) -> None:
        root = add_run(saver, said="root")
        child = add_run(saver, root, said="child")
        sibling = add_run(saver, root, said="sibling")
        saver.delete_run(child)
        with pytest.raises(RunNotFound):
            saver.get_run(child)
        with pytest.raises(RunNotFound):
            saver.resolve(child)
        assert [r.run_id for r in saver.list_runs()] == [sibling, root]
        assert saver.children(root) == [sibling]
        assert [m["content"] for m in saver.load_memory(sibling)["session"]] == [
            "root", "re: root", "sibling", "re: sibling"]
        with pytest.raises(RunNotFound):
            saver.delete_run(child)

    def test_delete_refuses_to_orphan_a_run_unless_recursive(self, saver: Saver) -> None:
        root = add_run(saver, said="root")
        child = add_run(saver, root, said="child")
        grandchild = add_run(saver, child, said="grandchild")
        with pytest.raises(InputError, match="descendant"):
            saver.delete_run(root)
        assert saver.get_run(root).run_id == root  # nothing was deleted
        assert saver.delete_runs([child, grandchild]) == [grandchild, child]  # all named: no orphan
        other = add_run(saver, root, said="other")
        # A prefix of root's id that no other run shares (runs made in the same millisecond
        # share all but the last characters of their ids).
        prefix = next(root[:n] for n in range(12, len(root) + 1) if not other.startswith(root[:n]))
        assert saver.delete_run(prefix, recursive=True) == [other, root]  # children first
        assert saver.list_runs() == []

    def test_a_new_saver_on_the_same_store_sees_everything(self, store: Opener) -> None:
        first = store()
        a = add_run(first, said="one")
        b = add_run(first, a, said="two")
        gone = add_run(first, a, said="gone")
        first.delete_run(gone)
        first.close()

        second = store()
        assert [r.run_id for r in second.list_runs()] == [b, a]
        assert [m["content"] for m in second.load_memory(b)["session"]] == [
            "one", "re: one", "two", "re: two"]
        assert second.get_run(b).outputs == {"response": "re: two"}
        c = add_run(second, b, said="three")
        third = store()
        assert third.resolve(c.lower()) == c
        assert len(third.load_memory(c)["session"]) == 6

    def test_writes_from_one_saver_object_are_seen_by_another_open_one(self, store: Opener) -> None:
        one, two = store(), store()
        a = add_run(one)
        assert two.get_run(a).status == "succeeded"
        b = add_run(two, a)
        assert one.children(a) == [b]

    def test_memory_of_a_run_whose_ancestor_was_deleted_names_the_missing_run(self, saver: Saver) -> None:
        root = add_run(saver)
        child = add_run(saver, root)
        grandchild = add_run(saver, child)
        saver._delete_run(child)  # the one-run primitive: what a store damaged by hand would hold
        with pytest.raises(RunNotFound, match=child):
            saver.load_memory(grandchild)
