"""An example Timbal plugin: the `shout` step kind, the `notes` saver and the `reverse/…` models.

Each lives in its own module and is registered by an entry point in pyproject.toml;
nothing in Timbal names them.
"""
