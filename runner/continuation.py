"""Which run a new run continues (SPEC §3): `--continue`, `--parent` and branches.

The command line and `timbal chat` share these rules:
- `--continue` continues the latest *finished* run of the flow: a run still in flight is
  never a parent (a run started from it would never see the rest of its conversation);
- with nothing to continue, `timbal run --continue` is an error (exit 2) and `timbal chat
  --continue` starts a new conversation and says so;
- `--continue` and `--parent` on the `in_memory` saver are errors from the command line:
  nothing outlives the process there;
- two runs that continue from one parent are two branches, and the command says so.
"""

from __future__ import annotations

from .errors import InputError
from .savers.base import RunRecord, Saver

__all__ = ["refuse_in_memory", "run_to_continue", "branch_note"]


def refuse_in_memory(saver: Saver, option: str) -> None:
    """InputError (exit 2) when `option` (--continue, --parent) asks the in_memory saver
    for an earlier run: it starts empty in every process."""
    if not saver.keeps_runs:
        raise InputError(
            f"{option} needs a saver that keeps runs: the in_memory saver keeps nothing after "
            "the process ends; give the flow a state_saver or pass --saver jsonl:PATH"
        )


def run_to_continue(saver: Saver, flow_name: str, required: bool = True) -> RunRecord | None:
    """The latest finished run of `flow_name`. With nothing to continue: InputError when
    `required`, else None."""
    latest = saver.latest_finished(flow_name)
    if latest is None and required:
        raise InputError(
            f"--continue: flow {flow_name!r} has no finished run to continue in this saver "
            "(run it once without --continue first)"
        )
    return latest


def branch_note(saver: Saver, parent_id: str | None, run_id: str) -> str | None:
    """A line saying that `run_id` is a branch beside other runs of the same parent, or None."""
    if parent_id is None:
        return None
    others = [rid for rid in saver.children(parent_id) if rid != run_id]
    if not others:
        return None
    shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
    return (f"note: run {parent_id} was already continued by {shown}: this run is a new branch "
            f"beside {'it' if len(others) == 1 else 'them'} (timbal runs tree shows both)")
