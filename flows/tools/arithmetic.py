"""Python tools for flows/agent.yaml: plain functions whose docstrings and type hints
describe them to the model (name, description, parameters)."""

from __future__ import annotations


def add(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def multiply(a: float, b: float) -> float:
    """Multiply two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a * b
