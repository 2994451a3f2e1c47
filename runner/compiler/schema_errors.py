"""Phase 1: the structure, checked against the JSON Schema; each schema error becomes a
located, human sentence ("step 'x' needs 'prompt'", "unknown key 'promt' (did you mean ...)")."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from ..errors import did_you_mean
from ..loader import PathKey
from ..registry import step_kinds
from ..schema import flow_check, load_schema, step_properties
from .diagnostics import CompilerBase, quote_list

__all__ = ["SchemaErrors", "TYPE_WORDS"]

TYPE_WORDS: dict[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
# Pattern errors get a sentence instead of a regular expression.
_PATTERN_WORDS: dict[str, str] = {
    "function": "must look like 'package.module:name'",
    "python": "must look like 'package.module:name'",
    "name": "may only hold letters, digits, '_' and '-' (at most 64)",
}


@functools.cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


def _required_only(subschemas: Any) -> bool:
    return isinstance(subschemas, list) and all(
        isinstance(s, dict) and set(s) == {"required"} and len(s["required"]) == 1 for s in subschemas
    )


class SchemaErrors(CompilerBase):
    """Schema validation and its wording."""

    def check_schema(self) -> None:
        fast = flow_check()
        if fast is not None and fast(self.data):
            return  # valid: no need for jsonschema's (slower) detailed walk
        errors = list(_validator().iter_errors(self.data))
        # Unknown keys whose did-you-mean is a missing required key explain that "missing" error.
        suggested: dict[PathKey, set[str]] = {}
        unknown: list[tuple[str, PathKey, str | None, str | None]] = []
        for err in errors:
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                path = tuple(err.absolute_path)
                for key, guess, hint in self._unknown_keys(err):
                    unknown.append((key, path, guess, hint))
                    if guess:
                        suggested.setdefault(path, set()).add(guess)
        for key, path, guess, hint in unknown:
            mean = f" (did you mean '{guess}'?)" if guess else ""
            self.error(f"unknown key '{key}' {self.inside(path)}{mean}", path + (key,), key=True, hint=hint)
        for err in errors:
            if err.validator != "additionalProperties":
                self._schema_error(err, suggested)

    def _unknown_keys(self, err: Any) -> list[tuple[str, str | None, str | None]]:
        schema = err.schema
        props = schema.get("properties", {})
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        out = []
        for key in err.instance:
            if key in props or any(p.search(key) for p in patterns):
                continue
            guess = did_you_mean(key, props)
            hint = None
            if guess is None and "id" in props and "type" in props:
                kinds = [k for k in step_kinds.names() if key in step_properties(k)]
                if kinds:
                    hint = f"'{key}' belongs to {' and '.join(kinds)} steps: set `type: {kinds[0]}`"
            out.append((key, guess, hint))
        return out

    def _schema_error(self, err: Any, suggested: dict[PathKey, set[str]]) -> None:
        path: PathKey = tuple(err.absolute_path)
        v, inst, schema = err.validator, err.instance, err.schema
        if v == "required":
            missing = [r for r in err.validator_value if isinstance(inst, dict) and r not in inst]
            if not missing or set(missing) & suggested.get(path, set()):
                return
            self.error(self.subject(path, f"needs {quote_list(missing)}"), path)
        elif v in ("anyOf", "oneOf") and _required_only(err.validator_value):
            names = [s["required"][0] for s in err.validator_value]
            present = [n for n in names if isinstance(inst, dict) and n in inst]
            if not present:
                if not set(names) & suggested.get(path, set()):
                    self.error(self.subject(path, f"needs {quote_list(names)}"), path)
            elif v == "oneOf":
                self.exclusive(path, present)
        elif v == "not" and isinstance(err.validator_value, dict) and "required" in err.validator_value:
            # From `dependentSchemas: {a: {not: {required: [b]}}}`: a and b exclude each other.
            schema_path = list(err.relative_schema_path)
            names = list(err.validator_value["required"])
            if "dependentSchemas" in schema_path:
                names.insert(0, schema_path[schema_path.index("dependentSchemas") + 1])
            self.exclusive(path, names)
        elif v in ("anyOf", "oneOf"):
            # e.g. an input's `type`: explain with the most specific alternative (an enum if any).
            context = list(err.context or [])
            pick = next((c for c in context if c.validator == "enum"), None)
            if pick is None and context:
                from jsonschema.exceptions import best_match

                pick = best_match(context)
            if pick is not None:
                self._schema_error(pick, suggested)
            else:
                self.error(self.subject(path, "is not valid"), path)
        elif v == "type":
            want = schema.get("type")
            wants = want if isinstance(want, list) else [want]
            words = " or ".join(TYPE_WORDS.get(w, str(w)) for w in wants)
            hint = None
            if len(path) == 2 and path[0] == "inputs" and isinstance(inst, str):
                hint = f"write `{path[1]}: {{type: {inst}}}`"
            self.error(self.subject(path, f"must be {words}"), path, hint=hint)
        elif v == "const":
            self.error(self.subject(path, f"must be {json.dumps(err.validator_value)}"), path)
        elif v == "enum":
            allowed = ", ".join(str(x) for x in err.validator_value)
            text = f"must be one of {allowed}, not {json.dumps(inst, default=str)}"
            if isinstance(inst, str):
                guess = did_you_mean(inst, [str(x) for x in err.validator_value])
                if guess:
                    text += f" (did you mean '{guess}'?)"
            self.error(self.subject(path, text), path)
        elif v == "pattern":
            last = path[-1] if path else ""
            if last == "id" and len(path) == 3 and path[0] == "steps":
                self.error(
                    f"invalid step id '{inst}': use lowercase letters, digits and '_', "
                    "not starting with a digit",
                    path,
                )
            elif len(path) == 2 and path[0] == "secrets":
                self.error(f"'secrets' entry '{inst}' is not an environment variable name", path)
            else:
                words = _PATTERN_WORDS.get(str(last), f"must match {err.validator_value}")
                self.error(self.subject(path, f"{words}, not '{inst}'"), path)
        elif v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            bound = {"minimum": "at least", "exclusiveMinimum": "greater than",
                     "maximum": "at most", "exclusiveMaximum": "less than"}[v]
            self.error(self.subject(path, f"must be {bound} {err.validator_value}"), path)
        elif v == "minItems" and path == ("steps",):
            self.error("the flow has no steps: 'steps' needs at least one", path)
        elif v in ("minItems", "minLength"):
            self.error(self.subject(path, "must not be empty"), path)
        elif v == "uniqueItems":
            self.error(self.subject(path, "has duplicate entries"), path)
        else:
            self.error(self.subject(path, err.message), path)

    def exclusive(self, path: PathKey, names: list[str]) -> None:
        """Keys that may not be used together: located at the later one in the file."""
        later = max(names, key=lambda n: self._sort_key(path + (n,), self.doc.location(path + (n,), key=True)))
        both = "both" if len(names) == 2 else "several"
        self.error(f"{self.subject(path, f'takes {quote_list(names)}, not {both}')}",
                   path + (later,), key=True)
