"""How a TestReport is shown: a table of checks for people, JUnit XML for CI systems."""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime, timezone
from itertools import groupby
from typing import Any

from .cases import shorten
from .checks import output_text
from .suite import ERROR, FAILED, PASSED, CaseResult, TestReport

__all__ = ["render_table", "summary_line", "junit_xml"]

_VALUE_WIDTH = 80
# Characters XML 1.0 cannot hold at all (not even escaped): a model's output may have them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def summary_line(report: TestReport) -> str:
    """``5 cases: 4 passed, 1 failed, 0 errors (12 checks, 1 failed) in 0.31s``."""
    n = report.counts()
    return (f"{n['cases']} case{'' if n['cases'] == 1 else 's'}: {n[PASSED]} passed, {n[FAILED]} failed, "
            f"{n[ERROR]} error{'' if n[ERROR] == 1 else 's'} ({n['checks']} checks, {n['checks_failed']} failed)"
            f" in {report.seconds:.2f}s")


def render_table(report: TestReport, console: Any) -> None:
    """Print one row per check (a failed run: one row with its error) on a rich Console;
    failing rows show the value the check saw and why it failed."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=False, expand=False)
    table.add_column("case", overflow="fold")
    table.add_column("check", overflow="fold")
    table.add_column("", no_wrap=True)
    table.add_column("value / reason", overflow="fold")
    for result in report.results:
        name = f"{result.flow}/{result.case.name}"
        if result.status == ERROR:
            table.add_row(name, "run", Text("ERROR", style="bold red"), Text(str(result.error), style="red"))
            continue
        if not result.checks:
            table.add_row(name, "(no checks: the run succeeded)", Text("PASS", style="green"), "")
        for check in result.checks:
            mark = Text("PASS", style="green") if check.passed else Text("FAIL", style="bold red")
            detail = "" if check.passed else _failure_detail(check.actual, check.reason)
            table.add_row(name, check.check.describe(), mark, detail)
            name = ""
    console.print(table)
    style = "bold green" if report.passed else "bold red"
    console.print(Text(summary_line(report), style=style))


def _failure_detail(actual: Any, reason: str) -> str:
    value = shorten(output_text(actual), _VALUE_WIDTH)
    return f"got {value}\n{reason}" if reason else f"got {value}"


def junit_xml(report: TestReport) -> str:
    """The report as JUnit XML (the Ant/Jenkins form GitHub, GitLab and Jenkins read): one
    <testsuite> per flow, one <testcase> per case, <failure> for failed checks and <error>
    for failed runs."""
    root = ET.Element("testsuites", name="timbal test")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    seconds = 0.0
    stamp = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None).isoformat()
    host = socket.gethostname()
    for flow, group in groupby(report.results, key=lambda r: r.flow):
        results = list(group)
        suite_seconds = sum(r.seconds for r in results)
        counts = _counts(results)
        suite = ET.SubElement(root, "testsuite", name=flow, tests=str(len(results)),
                              failures=str(counts[FAILED]), errors=str(counts[ERROR]), skipped="0",
                              time=f"{suite_seconds:.3f}", timestamp=stamp, hostname=host)
        for result in results:
            _testcase(suite, result)
        totals["tests"] += len(results)
        totals["failures"] += counts[FAILED]
        totals["errors"] += counts[ERROR]
        seconds += suite_seconds
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{report.seconds:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _counts(results: Iterable[CaseResult]) -> dict[str, int]:
    out = {PASSED: 0, FAILED: 0, ERROR: 0}
    for r in results:
        out[r.status] += 1
    return out


def _testcase(suite: ET.Element, result: CaseResult) -> None:
    case = ET.SubElement(suite, "testcase", name=_xml(result.case.name), classname=result.flow,
                         time=f"{result.seconds:.3f}")
    if result.case.location is not None:
        case.set("file", result.case.location.path)
        case.set("line", str(result.case.location.line))
    if result.status == ERROR:
        error = ET.SubElement(case, "error", message=_xml(shorten(result.error or "", 200)), type="RunError")
        error.text = _xml(result.error or "")
    elif result.status == FAILED:
        failed = result.failed_checks
        lines = [f"{c.check.describe()}: {c.reason or 'failed'}\n  got: {output_text(c.actual)}" for c in failed]
        first = failed[0]
        failure = ET.SubElement(case, "failure", type="AssertionError",
                                message=_xml(shorten(f"{first.check.describe()}: {first.reason or 'failed'}", 200)))
        failure.text = _xml("\n".join(lines))
    if result.run_id:
        out = ET.SubElement(case, "system-out")
        out.text = _xml(f"run {result.run_id}\noutputs: {output_text(result.outputs)}")
