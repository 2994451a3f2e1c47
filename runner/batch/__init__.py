"""`timbal batch` and `timbal worker`: one run per row of a data file, locally or on workers.

    from runner.batch import run_batch
    progress = await run_batch(graph, Path("rows.jsonl"), Path("rows.jsonl.out.jsonl"), concurrency=8)

`data` reads JSONL and CSV rows one at a time, `output` writes the ordered, resumable
output file, `local` runs rows in this process, `queue` puts them on a PostgreSQL job
queue (procrastinate) that `timbal worker` processes on any number of machines take.
"""

from __future__ import annotations

from .data import Row, count_rows, read_rows, split_row
from .local import BatchProgress, default_output, run_batch
from .output import done_rows, sort_output

__all__ = ["Row", "read_rows", "count_rows", "split_row", "BatchProgress", "default_output", "run_batch",
           "done_rows", "sort_output"]
