"""Helpers for the reliability and security tests: flows, subprocesses, state checks.

Not collected by pytest (no `test_` files here). The crash, signal and concurrency tests
drive real processes with these; nothing of the runner is mocked.
"""
