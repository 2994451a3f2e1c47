"""Keep secrets out of state: every value written to a saver passes through `Redactor`.

Secret values are: environment variables named in the flow's `secrets:` list, every
environment variable whose name looks secret (…KEY, …TOKEN, …SECRET, …PASSWORD, …),
and values passed to a provider as `api_key` or in `headers`/`extra_headers`.

A secret is replaced wherever it appears in a string, a mapping key included, and also
in its JSON-escaped spellings (a python step that returns `json.dumps(...)` of a secret
holding `"` or `\\` must not leak it either). Values shorter than `MIN_SECRET_LENGTH`
characters are never treated as secret: replacing every `ab` or `1` would mangle
ordinary text and would say which short strings are secret.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["Redactor", "SECRET_NAME", "REDACTED", "MIN_SECRET_LENGTH", "secret_param_values", "redact_dsn"]

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
REDACTED = "***"
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words


class Redactor:
    """Replaces every occurrence of a secret value inside strings of nested data."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._values: set[str] = set(_environ_secrets(frozenset(names)))
        self._pattern: re.Pattern[str] | None = None
        self._compile()

    def _compile(self) -> None:
        if self._values:
            # Longest first, so a secret containing another is replaced whole.
            alts = sorted(
                {form for value in self._values for form in _spellings(value)},
                key=len,
                reverse=True,
            )
            self._pattern = re.compile("|".join(re.escape(a) for a in alts))
        else:
            self._pattern = None

    def add(self, value: Any) -> bool:
        """Treat one more value (e.g. an api_key given in params) as secret; True when new."""
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH and value not in self._values:
            self._values.add(value)
            self._compile()
            return True
        return False

    @property
    def active(self) -> bool:
        """Whether there is any secret value to redact."""
        return self._pattern is not None

    def __call__(self, data: Any) -> Any:
        """A copy of `data` with secret values replaced by ***."""
        if self._pattern is None:
            return data
        return self._redact(data)

    def _redact(self, data: Any) -> Any:
        if isinstance(data, str):
            return self._pattern.sub(REDACTED, data) if self._pattern else data
        if isinstance(data, dict):  # keys too: `{secret: value}` must not keep the secret
            return {self._redact(k): self._redact(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self._redact(v) for v in data]
        return data


def _spellings(value: str) -> set[str]:
    """`value` as it may appear inside saved text: as is, and JSON-escaped (both ways)."""
    escaped = json.dumps(value, ensure_ascii=False)[1:-1]
    ascii_escaped = json.dumps(value)[1:-1]
    return {value, escaped, ascii_escaped}


def _secrets_in(env: Any, names: frozenset[str]) -> set[str]:
    return {
        v for k, v in env.items() if (k in names or SECRET_NAME.search(k)) and len(v) >= MIN_SECRET_LENGTH
    }


# (the environment as last seen, the names asked for, the secret values found then)
_last_environ: tuple[dict[Any, Any], frozenset[str], frozenset[str]] | None = None


def _environ_secrets(names: frozenset[str]) -> frozenset[str]:
    """The secret values of os.environ: scanned again only when the environment changed."""
    global _last_environ
    raw = getattr(os.environ, "_data", None)  # the raw mapping: comparing it is one C loop
    last = _last_environ
    if raw is not None and last is not None and last[1] == names and last[0] == raw:
        return last[2]
    values = frozenset(_secrets_in(os.environ, names))
    if isinstance(raw, dict):
        _last_environ = (dict(raw), names, values)
    return values


def secret_param_values(params: dict[str, Any]) -> list[Any]:
    """Values of provider params that are credentials (api_key, header values)."""
    out: list[Any] = []
    for key, value in params.items():
        if SECRET_NAME.search(key):  # api_key, token, password, ...
            out.append(value)
        elif key in ("headers", "extra_headers") and isinstance(value, dict):
            out.extend(value.values())
    return out


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)

def redact_dsn(text: str) -> str:
    """`text` with any DSN password replaced by `***` (URL and key=value forms)."""
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    return _KV_PASSWORD.sub(r"\g<head>***", text)
