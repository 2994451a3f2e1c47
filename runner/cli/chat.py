"""`timbal chat FLOW`: a conversation at the terminal, one run per line.

Each line is one run of the flow whose parent is the previous turn's run, so the flow's
memory carries the conversation (SPEC §3). The line goes to the flow's single required
string input, else to an input named ``prompt`` or ``message``. Before each turn the
files the flow uses are checked; when one changed the flow is compiled again and the
conversation carries on with the new flow (a broken edit prints its errors and the last
good flow stays).

Commands: ``/history`` (the turns so far), ``/rewind [N]`` (branch from N turns back:
the next run's parent is that older run), ``/reset`` (a fresh conversation, no parent),
``/help``, ``/quit`` (or end of input, Ctrl-D). The first turn from a run that was
continued already (by ``--parent``, ``--continue`` or ``/rewind``) prints the branch note
that ``timbal run --parent`` prints.

At a terminal, readline gives line editing and history, and replies stream as they
arrive. With piped stdin there are no prompts or banners: each input line prints its
reply as one line on stdout (an empty line when the turn failed; the error goes to
stderr), so scripts can pair questions and answers. Status lines (run ids, reloads,
reused steps) go to stderr. ``--json`` prints each turn as one JSON object per line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from ..continuation import branch_note, refuse_in_memory, run_to_continue
from ..errors import InputError, TimbalError
from ..graph import ExecutionGraph
from ..openai_chat import line_input_name, reply_text
from ..reload import FileStamps
from ..savers.base import Saver
from ..status import ExitCode
from .watch import describe_paths, recompile, say

__all__ = ["ChatSession", "Turn", "chat"]

EXIT_OK, EXIT_INTERRUPTED = ExitCode.OK, ExitCode.INTERRUPTED
HELP = "/history  /rewind [N]  /reset  /help  /quit"


@dataclass(frozen=True)
class Turn:
    """One exchange of the conversation: the run, the line sent and the reply shown."""

    run_id: str
    text: str
    reply: str


def one_line(text: str) -> str:
    """`text` on one line, reversibly: a newline is written `\\n`, a backslash `\\\\`, so a
    script reading a piped chat keeps each reply paired with its input line."""
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class ChatSession:
    """One `timbal chat`: the last good flow, the saver, the cache and the current branch."""

    def __init__(
        self,
        flow: Path,
        assignments: tuple[str, ...] = (),
        saver_uri: str | None = None,
        use_cache: bool = True,
        as_json: bool = False,
        interactive: bool = False,
        stream: bool = False,
    ) -> None:
        from ..cache import StepCache
        from ..compiler import compile_file
        from ..savers import open_saver

        self.flow = flow
        self.assignments = assignments
        self.as_json = as_json
        self.interactive = interactive
        self.stream = stream and interactive and not as_json
        self.cache = StepCache() if use_cache else None
        before = FileStamps([flow])
        self.graph: ExecutionGraph = compile_file(flow)
        self.stamps = FileStamps({flow, *self.graph.files}, before)
        self.line_input = line_input_name(self.graph)
        self._check_inputs(self.graph, "")  # bad -i values: exit 2 before the first turn
        # Opened last: nothing after it can fail, so the caller always gets it to close.
        self.saver: Saver = open_saver(self.graph.saver, saver_uri)
        self.turns: list[Turn] = []
        # The next turn starts from a run picked by --parent, --continue or /rewind, which may
        # have been continued already: then that turn is a new branch, and says so.
        self.branching = False
        # A turn whose run waits on answers: the next lines answer its questions, in order.
        self.pending: _PendingTurn | None = None

    # -- the branch ----------------------------------------------------------------------
    @property
    def parent_id(self) -> str | None:
        """The run the next turn continues from (None: a fresh conversation)."""
        return self.turns[-1].run_id if self.turns else None

    def _branch(self, run_id: str) -> list[Turn]:
        """The turns that led to `run_id` (itself included), oldest first, from the saver."""
        turns = []
        for rid in self.saver.ancestry(self.saver.resolve(run_id)):
            record = self.saver.get_run(rid)
            text = record.inputs.get(self.line_input, "")
            turns.append(Turn(rid, str(text), reply_text(record.outputs)))
        return turns[::-1]

    def rewind(self, n: int) -> str:
        """Drop the last `n` turns: the next turn branches from the run before them."""
        if not 1 <= n <= len(self.turns):
            if not self.turns:
                raise ValueError("nothing to rewind")
            if len(self.turns) == 1:
                raise ValueError("there is 1 turn to rewind: /rewind 1")
            raise ValueError(f"/rewind takes 1 to {len(self.turns)}: there are {len(self.turns)} turns")
        del self.turns[-n:]
        self.branching = bool(self.turns)
        where = f"run {self.parent_id}" if self.parent_id else "the start"
        return f"rewound {n} turn(s): the next turn continues from {where}"

    def reset(self) -> str:
        """Forget the branch: the next turn starts a fresh conversation."""
        self.turns.clear()
        self.branching = False
        return "new conversation: the next turn has no parent"

    # -- reload --------------------------------------------------------------------------
    def reload_if_changed(self) -> None:
        """Compile the flow again when one of its files changed since the last compile."""
        changed = self.stamps.changed()
        if not changed:
            return
        base = Path(self.flow).resolve().parent
        graph, self.stamps = recompile(self.flow, self.stamps)
        if graph is None:
            say("── the flow has errors: this turn uses the last good flow")
            return
        try:
            line_input = line_input_name(graph)
        except InputError as exc:
            say(exc.format())
            say("── this turn uses the last good flow")
            return
        self.graph, self.line_input = graph, line_input
        say(f"── reloaded the flow ({describe_paths(changed, base)} changed)")

    # -- one turn ------------------------------------------------------------------------
    def _check_inputs(self, graph: ExecutionGraph, text: str) -> dict[str, Any]:
        from ..inputs import parse_assignments, prepare_inputs

        values = {**parse_assignments(graph, list(self.assignments)), self.line_input: text}
        prepare_inputs(graph, values)
        return values

    def send(self, text: str) -> bool:
        """Run one turn with `text`; print the reply. True when the run succeeded (or waits
        for answers: its questions are asked, and the next lines answer them).

        Raises KeyboardInterrupt when the run was interrupted (it is recorded as such).
        """
        self.reload_if_changed()
        graph = self.graph
        try:
            values = self._check_inputs(graph, text)
        except InputError as exc:
            return self._failed(exc.format())
        return self._run(graph, text, values, {"parent_id": self.parent_id})

    def answer(self, line: str) -> bool:
        """Take `line` as the answer to the waiting turn's next question; once all are
        answered, the run goes on. False when the answer does not fit (it is asked again)."""
        from ..inputs import read_answer

        pending = self.pending
        assert pending is not None
        question = pending.questions[len(pending.answers)]
        try:
            pending.answers[question["step_id"]] = read_answer(question, line)
        except InputError as exc:
            say(exc.format())
            self._ask(question)
            return False
        if len(pending.answers) < len(pending.questions):
            self._ask(pending.questions[len(pending.answers)])
            return True
        self.pending = None
        return self._run(pending.graph, pending.text, None,
                         {"resume": pending.run_id, "answers": pending.answers})

    def _ask(self, question: dict[str, Any]) -> None:
        from .running import question_text

        say(click.style(question_text(question), bold=True) if self.interactive else question_text(question))

    def _run(self, graph: ExecutionGraph, text: str, values: dict[str, Any] | None,
             how: dict[str, Any]) -> bool:
        """Run (or resume, `how`) one turn and print what it gives."""
        from ..runnable import RunnableFlow
        from .running import print_outputs, run_interruptibly

        out_step = graph.output_step
        streamed: list[str] = []

        def listener(event: Any) -> None:
            if event.type == "step_chunk" and event.step_id == out_step:
                chunk = event.data.get("text", "")
                streamed.append(chunk)
                sys.stdout.write(chunk)
                sys.stdout.flush()

        stream = frozenset({out_step}) if self.stream and out_step else False
        if self.cache is not None:
            self.cache.begin_run()
        runnable = RunnableFlow(graph, self.saver, cache=self.cache)
        try:
            result = asyncio.run(
                run_interruptibly(
                    runnable.run(values, listener=listener, stream=stream, **how)
                )
            )
        except (asyncio.CancelledError, KeyboardInterrupt):
            if streamed:
                click.echo("")
            raise KeyboardInterrupt from None
        except TimbalError as exc:
            if streamed:
                click.echo("")
            return self._failed(f"error: {exc}")
        if result.status == "waiting":
            if self.as_json:
                click.echo(json.dumps(result.to_dict(), ensure_ascii=False, default=str))
            elif streamed:
                click.echo("")
            self.pending = _PendingTurn(result.run_id, graph, text, result.waiting)
            self._ask(result.waiting[0])
            return True
        if self.as_json:
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False, default=str))
        elif result.ok and self.interactive:
            print_outputs(result.outputs, "".join(streamed) if streamed else None)
        elif result.ok:
            click.echo(one_line(reply_text(result.outputs)))
        elif streamed:
            click.echo("")
        reused = f", reused: {', '.join(self.cache.reused)}" if self.cache and self.cache.reused else ""
        if not result.ok:
            say(f"error: {result.error}")
            say(f"run {result.run_id} {result.status}{reused}")
            self._note_branch(result)
            if not self.interactive and not self.as_json:
                click.echo("")  # one output line per input line, for scripts
            return False
        self._status(f"run {result.run_id}{reused}")
        self._note_branch(result)
        self.turns.append(Turn(result.run_id, text, reply_text(result.outputs)))
        return True

    def _note_branch(self, result: Any) -> None:
        """After the first turn from a picked run: the note `timbal run --parent` prints when
        that run had been continued already (this turn is a new branch beside it)."""
        if self.branching:
            self.branching = False
            note = branch_note(self.saver, result.parent_id, result.run_id)
            if note:
                say(note)

    def _status(self, line: str) -> None:
        """A status line on stderr, dimmed at a terminal so replies stand out."""
        from .base import use_color

        say(click.style(line, dim=True) if self.interactive and use_color() else line)

    def _failed(self, message: str) -> bool:
        say(message)
        if not self.interactive and not self.as_json:
            click.echo("")
        return False

    # -- commands ------------------------------------------------------------------------
    def history(self) -> None:
        """Print the turns of the current branch on stdout."""
        if self.as_json:
            click.echo(json.dumps([asdict(t) for t in self.turns], ensure_ascii=False))
            return
        if not self.turns:
            say("(no turns yet)")
        for n, turn in enumerate(self.turns, 1):
            click.echo(f"[{n}] > {turn.text}")
            click.echo(f"{' ' * (len(str(n)) + 3)}{turn.reply}")

    def command(self, line: str) -> bool:
        """Carry out a /command. False when the chat should end."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit", "/q"):
            return False
        if name == "/history":
            self.history()
        elif name == "/reset":
            say(self.reset())
        elif name == "/rewind":
            try:
                say(self.rewind(int(arg) if arg else 1))
            except ValueError as exc:
                say(f"error: {exc}" if arg.isdigit() or not arg else f"error: /rewind N takes a number, got {arg!r}")
        elif name in ("/help", "/?"):
            say(HELP)
        else:
            say(f"error: unknown command {name} (commands: {HELP})")
        return True


@dataclass
class _PendingTurn:
    """A turn whose run waits on answers, and the answers given so far."""

    run_id: str
    graph: ExecutionGraph
    text: str
    questions: list[dict[str, Any]]
    answers: dict[str, Any] = field(default_factory=dict)


def _lines(interactive: bool, prompt: str) -> Iterator[str]:
    """Input lines: with readline at a terminal (Ctrl-C clears the line), else stdin."""
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\r\n")
        return
    try:
        import readline  # noqa: F401  line editing and history for input()
    except ImportError:  # pragma: no cover - Windows without pyreadline
        pass
    while True:
        try:
            yield input(prompt)
        except KeyboardInterrupt:
            sys.stdout.write("\n")
        except EOFError:
            sys.stdout.write("\n")
            return


def chat(
    flow: Path,
    assignments: tuple[str, ...] = (),
    saver_uri: str | None = None,
    parent: str | None = None,
    cont: bool = False,
    use_cache: bool = True,
    as_json: bool = False,
) -> int:
    """`timbal chat FLOW`: read lines until EOF or /quit; the exit code (0, or 130 when a
    piped chat is interrupted)."""
    interactive = sys.stdin.isatty()
    session = ChatSession(
        flow, assignments, saver_uri, use_cache, as_json, interactive, sys.stdout.isatty()
    )
    try:
        if parent or cont:
            refuse_in_memory(session.saver, "--continue" if cont else "--parent")
        if parent:
            session.turns = session._branch(parent)
        elif cont:
            latest = run_to_continue(session.saver, session.graph.name, required=False)
            if latest is not None:
                session.turns = session._branch(latest.run_id)
            else:
                say(f"no finished run of {session.graph.name} to continue: starting a new conversation")
        session.branching = bool(session.turns)
        if interactive:
            say(f"chat with {session.graph.name} ({HELP}; Ctrl-D to leave)")
            if session.turns:
                say(f"continuing from run {session.parent_id} ({len(session.turns)} turn(s))")
        for line in _lines(interactive, "> "):
            if session.pending is not None and line.strip() not in ("/quit", "/exit", "/q"):
                session.answer(line)
                continue
            if not line.strip():
                continue
            if line.startswith("/") and not line.startswith("//"):
                if not session.command(line):
                    break
                continue
            try:
                session.send(line[1:] if line.startswith("//") else line)
            except KeyboardInterrupt:
                say("interrupted")
                if not interactive:
                    return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        session.saver.close()
    return EXIT_OK
