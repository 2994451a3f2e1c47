"""Benchmarks of Timbal flows beside its rivals (LangGraph, Timbal's PyPI package).

Run them all with ``python -m benchmarks`` (``--quick`` for a smoke run); see ``__main__``.
"""
