"""The extension points: one registry each for step kinds, savers and model backends.

A step kind, a saver or a model backend declares everything about itself in its own
module, as one module-level descriptor:

- `runner/steps/<kind>.py` defines ``STEP_KIND = StepKind(...)``,
- `runner/savers/<name>.py` defines ``SAVER_TYPE = SaverType(...)``,
- `runner/models/<name>.py` defines ``MODEL_BACKEND = ModelBackend(...)``.

The registries find the built-ins by importing every module of those packages that
defines the descriptor, and third-party packages through the entry point groups
`timbal.steps`, `timbal.savers` and `timbal.models` (an entry point names a descriptor,
or a module holding one). Each registry loads once, on first use: `import runner` and
`timbal validate` stay fast, and no backend imports its heavy client (litellm, psycopg,
llama.cpp) until it is called. Nothing else in the code lists kinds, savers or backends.
"""

from __future__ import annotations

import pkgutil
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from .models.types import ChunkCallback, ModelReply, ModelRequest
    from .savers.base import Saver
    from .steps.base import StepContext, StepOutcome

__all__ = [
    "StepKind",
    "SaverType",
    "ModelBackend",
    "Registry",
    "RegistryError",
    "step_kinds",
    "saver_types",
    "model_backends",
]


class RegistryError(Exception):
    """A descriptor that cannot be registered (a name taken twice, a malformed entry point)."""


def _frozen(value: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class StepKind:
    """Everything the compiler, engine, cache, builder and graph know about a step kind.

    - `execute(ctx) -> StepOutcome` runs one step (async).
    - `leaf`: holds one of the run's concurrency slots while it runs. Containers (steps
      that run other steps, such as `flow`) must not, or nested flows would deadlock.
    - `cacheable`: free of side effects, so `watch`/`chat` may reuse an earlier result.
    - `rendered`: config keys whose strings are templates, rendered at run time.
    - `defaults`: config keys filled in when the step does not set them.
    - `uses_model`: takes the flow's `defaults:` block, a fixed `model` and a `memory_id`.
    - `attributes`: what templates may read of such a step besides `return`, `usage`,
      `status`, `error`, `model` (a loop's `last`, `iterations`), set by `StepOutcome.attributes`.
    - `container`: the step runs its `subflow` as a body (map, loop): drawn as a cluster,
      and run again on resume (its body's succeeded steps are kept from their records).
    - `about(config)`: a few words on what the step does, for graphs (`loop (max 5)`).
    - `asks`: the step waits on a person's answer (given with `answers=` on resume).
    - `compile(compiler, step)`: extra compile-time work (files, sub-flows, checks); the
      compiler's public helpers are documented in `runner.compiler.FlowCompiler`.
    - `schema`: the JSON Schema of the step's keys (`properties`, `required`, ...). Built-in
      kinds are described in schemas/flow.schema.json; a plugin kind's schema is merged in.
    """

    name: str
    execute: Callable[[StepContext], Awaitable[StepOutcome]]
    leaf: bool = True
    cacheable: bool = False
    rendered: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=_frozen)
    uses_model: bool = False
    attributes: tuple[str, ...] = ()
    container: bool = False
    asks: bool = False
    about: Callable[[Mapping[str, Any]], str] | None = None
    compile: Callable[[Any, dict[str, Any]], None] | None = None
    schema: Mapping[str, Any] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", _frozen(self.defaults))


@dataclass(frozen=True)
class SaverType:
    """A state saver: its `state_saver.type` name, the URIs it reads, how it is built.

    - `from_config(options, base_dir, create)`: from a flow's `state_saver:` block (rendered).
    - `from_uri(uri, base_dir, create)`: from a `--saver` / `TIMBAL_SAVER` URI whose scheme (the
      part before `:`) is one of `schemes`, or a bare path ending in one of `suffixes`.
    - `aliases`: other `type` names accepted for it (e.g. `memory` for `in_memory`).
    - `uri_help`: the URI form in messages, e.g. `sqlite:PATH`.
    - `options`: the JSON Schema properties of its `state_saver` keys, for plugin savers
      (the built-ins' keys are described in schemas/flow.schema.json).
    """

    name: str
    #: `create=False`: a command that only inspects state; a store that is not there is an
    #: InputError, never created.
    from_config: Callable[[Mapping[str, Any], Path | None, bool], Saver]
    from_uri: Callable[[str, Path | None, bool], Saver]
    schemes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] | None = None
    uri_help: str = ""
    #: The saver class, reachable as `runner.savers.<ClassName>` (and from `runner`).
    cls: type[Saver] | None = None


@dataclass(frozen=True)
class ModelBackend:
    """A model backend: the model names it serves and its async `complete`.

    A model is served by the backend with the longest matching prefix: `prefixes=("echo",)`
    serves `echo` and `echo/...`. `fallback=True` serves every model no prefix claims.
    `available()`, when given, says whether the backend serves at this moment (a setting
    may hand its models to another backend).
    """

    name: str
    complete: Callable[[ModelRequest, ChunkCallback | None], Awaitable[ModelReply]]
    prefixes: tuple[str, ...] = ()
    fallback: bool = False
    available: Callable[[], bool] | None = None

    def enabled(self) -> bool:
        """Whether the backend serves at this moment (`available`, when given, says)."""
        return self.available is None or self.available()

    def serves(self, model: str) -> str | None:
        """The prefix of this backend that matches `model` (None if none does)."""
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if model == prefix or model.startswith(prefix.rstrip("/") + "/"):
                return prefix
        return None


T = TypeVar("T", StepKind, SaverType, ModelBackend)


class Registry(Generic[T]):
    """Descriptors by name: the built-ins of one package, then entry points of one group."""

    def __init__(self, kind: type[T], package: str, attribute: str, group: str) -> None:
        self.kind: type[T] = kind
        self.package = package
        self.attribute = attribute
        self.group = group
        self._items: dict[str, T] = {}
        self._builtin: set[str] = set()
        self._loaded = False
        self._lock = threading.RLock()
        #: Goes up with every registration: caches of choices among the items compare it.
        self.version = 0

    def register(self, item: T, builtin: bool = False) -> T:
        """Add a descriptor; a name taken by another descriptor is an error."""
        if not isinstance(item, self.kind):
            raise RegistryError(f"{item!r} is not a {self.kind.__name__}")
        with self._lock:
            known = self._items.get(item.name)
            if known is not None and known is not item:
                raise RegistryError(f"two {self.kind.__name__}s are named {item.name!r}")
            self._items[item.name] = item
            self.version += 1
            if builtin:
                self._builtin.add(item.name)
        return item

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            package = import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                module = import_module(f"{self.package}.{info.name}")
                item = getattr(module, self.attribute, None)
                if item is not None:
                    self.register(item, builtin=True)
            from importlib.metadata import entry_points  # slow to import: only when loading

            for point in entry_points(group=self.group):
                loaded = point.load()
                item = getattr(loaded, self.attribute, None) if isinstance(loaded, ModuleType) else loaded
                if item is None:
                    raise RegistryError(f"entry point {point.name!r} ({point.value}) has no {self.attribute}")
                self.register(item)
            self._loaded = True

    def get(self, name: str) -> T | None:
        """The descriptor called `name`, or None."""
        self._load()
        return self._items.get(name)

    def __getitem__(self, name: str) -> T:
        """The descriptor called `name` (KeyError if none)."""
        item = self.get(name)
        if item is None:
            raise KeyError(name)
        return item

    def names(self) -> tuple[str, ...]:
        """Every registered name: built-ins in module order, then plugins."""
        self._load()
        return tuple(self._items)

    def builtin_names(self) -> tuple[str, ...]:
        """The names that ship with the runner (what schemas/flow.schema.json lists)."""
        self._load()
        return tuple(n for n in self._items if n in self._builtin)

    def __iter__(self) -> Iterator[T]:
        self._load()
        return iter(list(self._items.values()))


step_kinds: Registry[StepKind] = Registry(StepKind, "runner.steps", "STEP_KIND", "timbal.steps")
saver_types: Registry[SaverType] = Registry(SaverType, "runner.savers", "SAVER_TYPE", "timbal.savers")
model_backends: Registry[ModelBackend] = Registry(ModelBackend, "runner.models", "MODEL_BACKEND", "timbal.models")
