"""`python -m runner.cli`: the same as the `timbal` command."""

from __future__ import annotations

from . import main

if __name__ == "__main__":
    main(prog_name="timbal")
