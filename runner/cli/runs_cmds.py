"""Commands: see runner/cli/__init__.py."""

from __future__ import annotations

from .base import main  # noqa: F401
