"""The `notes` saver: runs kept in a notes file (JSON lines, fsynced, like the jsonl saver).

`state_saver: {type: notes, path: runs.notes}` in a flow file, or `--saver notes:PATH`.
"""

from __future__ import annotations

from runner.registry import SaverType
from runner.savers.base import config_option, saver_file, uri_path
from runner.savers.jsonl import JSONLSaver


class NotesSaver(JSONLSaver):
    """A JSONL saver under its own name: what a plugin saver needs is a `Saver` subclass."""

    kind = "notes"


SAVER_TYPE = SaverType(
    name="notes",
    cls=NotesSaver,
    schemes=("notes",),
    suffixes=(".notes",),
    uri_help="notes:PATH",
    from_uri=lambda uri, base_dir, create: NotesSaver(uri_path(uri, base_dir, "notes", create)),
    from_config=lambda options, base_dir, create: NotesSaver(
        saver_file(config_option(options, "path", "notes"), base_dir, "notes", create)
    ),
)
