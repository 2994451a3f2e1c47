"""Flow document -> ExecutionGraph: the whole compiler, every error found at once.

Phase 1 checks the structure against the JSON Schema (`schema_errors`: schema errors as
located, human sentences). Phase 2 checks the meaning (`core`): step ids, each step
through its kind's registry entry, templates and what they reference (`references`),
sub-flows; then `linking` orders the graph (memory order, cycles). Both phases always
run (phase 2 skips whatever phase 1 found malformed), and every diagnostic is reported
together, in document order, as one `FlowError` (`diagnostics`).
"""

from __future__ import annotations

from .core import STEP_ID_PATTERN, FlowCompiler, compile_document, compile_file, compile_spec
from .references import RESERVED_NAMES, RUN_ATTRIBUTES, STEP_ATTRIBUTES

__all__ = [
    "compile_file",
    "compile_document",
    "compile_spec",
    "FlowCompiler",
    "RESERVED_NAMES",
    "RUN_ATTRIBUTES",
    "STEP_ATTRIBUTES",
    "STEP_ID_PATTERN",
]
