"""`timbal test`: test cases with checks, run against whole flows and conversations.

    from runner.evals import collect_suites, run_suites
    suites = collect_suites([Path("flows/")])          # compiles; raises FlowError
    report = await run_suites(suites, concurrency=4)
    report.passed, report.counts(), report.to_dict()

Cases come from a flow's `tests:` block or a `--cases` file (`cases`), checks are
evaluated in `checks` (a judge asks a model: `judge`), `suite` runs them and `report`
shows the result as a table or JUnit XML.
"""

from __future__ import annotations

from .cases import CHECK_KINDS, Check, TestCase, cases_from_flow, load_cases_file
from .checks import CheckResult
from .suite import CaseResult, FlowSuite, TestReport, collect_suites, find_flow_files, run_suites

__all__ = [
    "CHECK_KINDS", "Check", "TestCase", "cases_from_flow", "load_cases_file", "CheckResult",
    "CaseResult", "FlowSuite", "TestReport", "collect_suites", "find_flow_files", "run_suites",
]
