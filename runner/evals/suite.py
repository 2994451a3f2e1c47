"""Run test cases: each case's parent turns, then the case's own run, then its checks.

Every case runs on its own in-memory saver, so a case's `parent` turns form one
conversation that no other case sees, and tests never write into the flow's own
state store. Cases run concurrently (`concurrency` at a time); a session's `StepCache`
(`timbal test --watch`) lets unchanged steps reuse their results from the previous round.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Diagnostic, FlowError, TimbalError
from ..graph import ExecutionGraph
from .cases import TestCase, cases_from_flow, load_cases_file
from .checks import CheckResult, evaluate

if TYPE_CHECKING:
    from ..cache import StepCache

__all__ = ["FlowSuite", "CaseResult", "TestReport", "collect_suites", "find_flow_files", "run_suites"]

PASSED, FAILED, ERROR = "passed", "failed", "error"


@dataclass(frozen=True)
class FlowSuite:
    """A compiled flow and the cases to run on it."""

    graph: ExecutionGraph
    cases: tuple[TestCase, ...]

    @property
    def name(self) -> str:
        return self.graph.name


@dataclass
class CaseResult:
    """One case's outcome: `passed`, `failed` (a check failed) or `error` (a run failed)."""

    flow: str
    case: TestCase
    status: str
    checks: list[CheckResult] = field(default_factory=list)
    run_id: str | None = None
    outputs: Any = None
    usage: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """The case's JSON form (`timbal test --json`)."""
        return {
            "flow": self.flow,
            "name": self.case.name,
            "status": self.status,
            "run_id": self.run_id,
            "outputs": self.outputs,
            "usage": self.usage,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass
class TestReport:
    """Every case's result, in the order the cases were written."""

    __test__ = False  # not a pytest class

    results: list[CaseResult]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(r.status == PASSED for r in self.results)

    def counts(self) -> dict[str, int]:
        """Cases by status, and checks run and failed."""
        out = {PASSED: 0, FAILED: 0, ERROR: 0}
        for r in self.results:
            out[r.status] += 1
        checks = [c for r in self.results for c in r.checks]
        return {"cases": len(self.results), **out, "checks": len(checks),
                "checks_failed": sum(not c.passed for c in checks)}

    def to_dict(self) -> dict[str, Any]:
        """`timbal test --json`: {passed, summary, seconds, cases}."""
        return {"passed": self.passed, "summary": self.counts(), "seconds": round(self.seconds, 3),
                "cases": [r.to_dict() for r in self.results]}


_TESTS_KEY = re.compile(r"(?m)^tests\s*:")
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache"}


def find_flow_files(folder: Path) -> list[Path]:
    """The flow files with a top-level `tests:` block under `folder` (recursively, sorted).
    Other YAML files (sub-flows, data) are left out without being compiled."""
    import yaml

    found = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
            continue
        if _SKIP_DIRS.intersection(path.relative_to(folder).parts):
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            # Broken YAML that has a tests: block is a flow with tests: compile it, so its
            # located errors are shown (exit 2) rather than the file quietly left out.
            if _TESTS_KEY.search(path.read_bytes().decode("utf-8", "replace")):
                found.append(path)
            continue
        if isinstance(data, dict) and "tests" in data and "steps" in data:
            found.append(path)
    return found


def collect_suites(paths: Sequence[Path], cases_file: Path | None = None,
                   name_filter: str | None = None) -> list[FlowSuite]:
    """Compile every flow and read its cases (a folder: each flow file in it with `tests:`).
    `cases_file` replaces the cases of the one flow given. Raises FlowError with every
    problem of every file."""
    from ..compiler import compile_file

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(find_flow_files(path))
        else:
            files.append(path)
    if cases_file is not None and len(files) != 1:
        raise FlowError("--cases applies to one flow file; give exactly one FLOW")
    problems: list[Diagnostic] = []
    sources: dict[str, str] = {}
    suites: list[FlowSuite] = []
    for file in files:
        try:
            graph = compile_file(file)
            cases = load_cases_file(cases_file, graph) if cases_file else cases_from_flow(graph)
        except FlowError as exc:
            problems.extend(exc.diagnostics)
            sources.update(exc.sources)
            continue
        if name_filter:
            needle = name_filter.casefold()
            cases = [c for c in cases if needle in c.name.casefold() or needle in f"{graph.name}/{c.name}".casefold()]
        suites.append(FlowSuite(graph, tuple(cases)))
    if problems:
        raise FlowError(problems, sources)
    return suites


async def _run_case(graph: ExecutionGraph, case: TestCase, cache: StepCache | None) -> CaseResult:
    from .. import RunnableFlow  # the public name: wherever the module that defines it lives
    from ..savers.in_memory import InMemorySaver

    flow = RunnableFlow(graph, InMemorySaver(), cache=cache)
    result = CaseResult(flow=graph.name, case=case, status=ERROR)
    parent_id: str | None = None
    try:
        for n, turn in enumerate(case.parent, 1):
            earlier = await flow.run(dict(turn), parent_id=parent_id)
            if not earlier.ok:
                result.error = f"parent turn {n} {earlier.status}: {earlier.error}"
                result.run_id = earlier.run_id
                return result
            parent_id = earlier.run_id
        run = await flow.run(dict(case.inputs), parent_id=parent_id)
    except TimbalError as exc:
        result.error = str(exc)
        return result
    result.run_id, result.outputs, result.usage = run.run_id, run.outputs, dict(run.usage or {})
    result.seconds = run.duration
    if not run.ok:
        result.error = f"the run {run.status}: {run.error}"
        return result
    context = {"inputs": dict(case.inputs), "outputs": run.outputs, "usage": result.usage,
               "case": case.name, "run_id": run.run_id, "flow": graph.name}
    base_dir = graph.path.parent if graph.path else None
    for check in case.checks:
        try:
            outcome = await evaluate(check, run.outputs, result.usage, run.duration, context, base_dir)
        except TimbalError as exc:  # e.g. the judge's provider is unreachable
            outcome = CheckResult(check, False, f"{type(exc).__name__}: {exc}")
        result.checks.append(outcome)
    result.status = PASSED if all(c.passed for c in result.checks) else FAILED
    return result


async def run_suites(suites: Iterable[FlowSuite], concurrency: int = 4,
                     cache: StepCache | None = None,
                     on_result: Callable[[CaseResult], None] | None = None) -> TestReport:
    """Run every case of every suite, `concurrency` at a time; results in the cases' order.
    `on_result` is called as each case finishes (a progress bar)."""
    started = time.monotonic()
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(graph: ExecutionGraph, case: TestCase) -> CaseResult:
        async with limit:
            result = await _run_case(graph, case, cache)
        if on_result is not None:
            on_result(result)
        return result

    jobs = [one(s.graph, c) for s in suites for c in s.cases]
    results = list(await asyncio.gather(*jobs))
    return TestReport(results, time.monotonic() - started)


def watched_files(suites: Iterable[FlowSuite], cases_file: Path | None) -> set[Path]:
    """Every file the suites depend on: flows, their sub-flows and modules, the cases file,
    and the modules of python checks."""
    from ..steps.python import module_file

    files: set[Path] = set()
    for suite in suites:
        files |= set(suite.graph.files)
        if suite.graph.path is not None:
            files.add(Path(suite.graph.path))
        base = suite.graph.path.parent if suite.graph.path else None
        for case in suite.cases:
            for check in case.checks:
                if check.kind == "python":
                    found = module_file(check.expected, base)
                    if found is not None:
                        files.add(found)
    if cases_file is not None:
        files.add(cases_file)
    return files
