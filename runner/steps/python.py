"""`python` steps: call `function: package.module:name` with `args`; `return` is its result.

Modules are found next to the flow file first, then on the normal import path. A module
next to a flow is imported under a private package keyed by the flow's folder
(``_timbal_flowdir_<digest>.helpers``), so two flows with a `helpers.py` each never mix,
and `sys.path` is left as it was. Such a module is re-imported when its file changes
(hot reload). Sibling modules that such a module imports by plain name (`import utils`) are found
next to the flow too, while it is being imported. Sync functions run in a thread of
their own, async ones are awaited. An exception fails the step with the function's own
message and where it was raised.

`timeout` (seconds; python tools of an agent take it too) fails a call that runs longer.
Python cannot stop a thread, so a sync function that never returns keeps its thread;
the thread is a daemon, never joined, so it cannot keep the process alive: Ctrl-C or
SIGTERM still ends the run (`interrupted`) and the process.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import sys
import sysconfig
import threading
import traceback
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import StepError, did_you_mean
from ..registry import StepKind
from ..savers.base import encode_json
from .base import StepContext, StepOutcome

__all__ = [
    "STEP_KIND",
    "local_module_files",
    "execute",
    "call_function",
    "resolve_function",
    "module_file",
    "split_reference",
    "to_plain",
    "file_stamp",
    "in_daemon_thread",
]

_ROOT_PREFIX = "_timbal_flowdir_"
# Imports touch sys.modules and (for siblings) sys.path: one at a time across threads.
_IMPORT_LOCK = threading.RLock()
# Module file -> (mtime_ns, size) when it was last imported, to re-import edited modules.
_STAMPS: dict[str, tuple[int, int]] = {}
_STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def split_reference(reference: str) -> tuple[str, str]:
    """``"pkg.mod:name"`` -> ``("pkg.mod", "name")``; ValueError when it has no colon."""
    module, sep, name = reference.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"expected 'package.module:function', got {reference!r}")
    return module, name


def local_module_files(reference: str, base_dir: Path) -> list[Path]:
    """The files next to the flow (under `base_dir`) that importing the module of
    `reference` reads: each package's `__init__.py`, then the module itself (last).
    Empty when the module does not live next to the flow. The one python-module locator:
    the compiler (files watched on reload) and the importer below both use it."""
    try:
        module, _ = split_reference(reference)
    except ValueError:
        return []
    parts = module.split(".")
    here, files = base_dir, []
    for part in parts[:-1]:
        here = here / part
        if not here.is_dir():
            return []
        if (here / "__init__.py").is_file():  # namespace folders have none
            files.append((here / "__init__.py").resolve())
    for candidate in (here / f"{parts[-1]}.py", here / parts[-1] / "__init__.py"):
        if candidate.is_file():
            return [*files, candidate.resolve()]
    return []


def module_file(reference: str, base_dir: Path | None) -> Path | None:
    """The file that defines the module of `reference`, when it lives next to the flow
    (under `base_dir`) or can be located on the import path; None when not found."""
    module, _ = split_reference(reference)
    local = local_module_files(reference, base_dir) if base_dir is not None else []
    if local:
        return local[-1]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.has_location:
        return None
    return Path(spec.origin)


def _is_local(module: str, base_dir: Path | None) -> bool:
    return base_dir is not None and bool(local_module_files(f"{module}:_", base_dir))


def _root_package(base_dir: Path) -> str:
    """A private package whose __path__ is the flow's folder (one per folder)."""
    folder = str(base_dir.resolve())
    name = _ROOT_PREFIX + hashlib.sha1(folder.encode()).hexdigest()[:12]
    if name not in sys.modules:
        pkg = types.ModuleType(name, f"Modules next to {folder}")
        pkg.__path__ = [folder]
        pkg.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        pkg.__spec__.submodule_search_locations = [folder]
        sys.modules[name] = pkg
    return name


def _import_local(module: str, base_dir: Path) -> types.ModuleType:
    qualified = f"{_root_package(base_dir)}.{module}"
    folder = str(base_dir.resolve())
    # Sibling modules imported the usual way (`import utils` inside helpers.py) resolve
    # next to the flow too, but only while this import runs.
    sys.path.insert(0, folder)
    try:
        loaded = sys.modules.get(qualified)
        if loaded is not None and _changed(loaded):
            loaded = importlib.reload(loaded)
        elif loaded is None:
            loaded = importlib.import_module(qualified)
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    _stamp(loaded)
    return loaded


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """A file's (mtime_ns, size), to tell that it changed; None when it cannot be read."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _changed(module: types.ModuleType) -> bool:
    path = getattr(module, "__file__", None)
    return path is not None and _STAMPS.get(path) != file_stamp(path)


def _stamp(module: types.ModuleType) -> None:
    path = getattr(module, "__file__", None)
    if path:
        stamp = file_stamp(path)
        if stamp is not None:
            _STAMPS[path] = stamp


def _running_script(module_name: str, base_dir: Path | None) -> types.ModuleType | None:
    """The `__main__` module when `module_name` names the script being run (a builder
    flow referencing the script's own functions), so the script is not imported twice."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main is None or not main_file or Path(main_file).stem != module_name:
        return None
    found = module_file(f"{module_name}:_", base_dir)
    if found is None or found.resolve() == Path(main_file).resolve():
        return main
    return None


def resolve_function(reference: str, base_dir: Path | None = None) -> Callable[..., Any]:
    """Import the module of ``package.module:name`` (next to the flow first) and return
    the callable. `name` may be dotted (``Class.method``). Raises ImportError,
    AttributeError or TypeError with a message that names what was missing."""
    module_name, attr = split_reference(reference)
    with _IMPORT_LOCK:
        main = _running_script(module_name, base_dir)
        if main is not None:
            module = main
        elif _is_local(module_name, base_dir):
            assert base_dir is not None
            module = _import_local(module_name, base_dir)
        else:
            module = importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AttributeError(f"module '{module_name}' has no attribute '{attr}'") from None
    if not callable(target):
        raise TypeError(f"'{reference}' is not callable (it is a {type(target).__name__})")
    return target  # type: ignore[no-any-return]


def to_plain(value: Any) -> Any:
    """`value` as plain JSON data (pydantic models, dataclasses, sets, tuples converted), so
    a step's return reads the same now, from a saved run and after a resume."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [to_plain(v) for v in value]
        try:
            return sorted(items)  # a set has no order; a sorted list saves deterministically
        except TypeError:
            return items
    if hasattr(value, "model_dump"):  # pydantic
        return to_plain(value.model_dump(mode="json"))
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses

        return to_plain(dataclasses.asdict(value))
    return json.loads(encode_json(value))


def _where(exc: BaseException, function: Callable[..., Any] | None, base_dir: Path | None) -> str:
    """``file:line in name`` of the frame that raised, preferring the user's own code
    (the folder of `function`'s file, else the deepest frame outside the runner and the
    standard library)."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = Path(__file__).resolve().parent.parent  # the runner package
    source = _source_file(function) if function is not None else None
    user_dir = Path(source).resolve().parent if source else None
    chosen = None
    for frame in frames:
        if frame.filename.startswith("<"):  # frozen importlib frames
            continue
        path = Path(frame.filename).resolve()
        if user_dir is not None and path.is_relative_to(user_dir):
            chosen = frame
        elif user_dir is None and not path.is_relative_to(here) and not path.is_relative_to(_STDLIB):
            chosen = frame
    if chosen is None:
        if not frames or function is None:
            return ""
        chosen = frames[-1]
    path = Path(chosen.filename)
    shown = str(path)
    if base_dir is not None:
        try:
            shown = str(path.resolve().relative_to(base_dir.resolve()))
        except ValueError:
            pass
    return f"{shown}:{chosen.lineno} in {chosen.name}"


def _source_file(function: Callable[..., Any]) -> str | None:
    try:
        return inspect.getsourcefile(inspect.unwrap(function))
    except TypeError:  # builtins have no source file
        return None


def _arguments(args: Any) -> tuple[list[Any], dict[str, Any]]:
    if args is None:
        return [], {}
    if isinstance(args, Mapping):
        return [], dict(args)
    if isinstance(args, list | tuple):
        return list(args), {}
    return [args], {}  # a single value: one positional argument


def _check_arguments(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> str:
    """Why `function` cannot take these arguments ('' when it can), naming unknown ones first."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return ""  # no signature to check (some builtins): let the call decide
    params = signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names = [n for n, p in params.items() if p.kind is not inspect.Parameter.POSITIONAL_ONLY]
        for name in kwargs:
            if name not in names:
                hint = did_you_mean(name, names)
                accepted = ", ".join(names) or "none"
                return f"unexpected argument '{name}'" + (
                    f" (did you mean '{hint}'?)" if hint else f" (it takes: {accepted})"
                )
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    return ""


def in_daemon_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
    """`function(*args, **kwargs)` in a new daemon thread; a future of its result.

    Not the loop's executor: `asyncio.run` and the interpreter join those threads at exit,
    so one user function that never returns would keep the process alive for ever.
    Cancelling the future abandons the call (its thread runs on until it returns).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return  # cancelled meanwhile (a timeout, Ctrl-C)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (context.run(function, *args, **kwargs), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting step
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop is gone: nobody waits for this result any more

    name = getattr(function, "__qualname__", "function")
    threading.Thread(target=target, name=f"timbal-python:{name}", daemon=True).start()
    return future


async def call_function(
    function: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    timeout: float | None = None,
) -> Any:
    """Call a user's function (sync in a daemon thread, async awaited) and collect what it
    returns: an awaitable is awaited, a generator (sync or async) is read into a list.
    Past `timeout` seconds, raises StepError (the call is abandoned)."""
    try:
        return await asyncio.wait_for(_call(function, args, kwargs), timeout)
    except asyncio.TimeoutError:
        raise StepError(f"timed out after {timeout:g} s (timeout: {timeout:g})") from None


async def _call(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        result = function(*args, **kwargs)
    else:
        # Sync code may block (files, HTTP): keep it off the event loop.
        result = await in_daemon_thread(function, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    if inspect.isasyncgen(result):
        result = [item async for item in result]
    elif inspect.isgenerator(result):
        result = await in_daemon_thread(list, result)
    return result


async def execute(ctx: StepContext) -> StepOutcome:
    """Import the function, render `args`, call it, and return its (plain) result."""
    step = ctx.spec.id
    reference = str(ctx.config.get("function") or "")
    try:
        function = resolve_function(reference, ctx.base_dir)
    except StepError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken user module is this step's failure
        # When the user's module itself raised while importing, say where.
        where = _where(exc, None, ctx.base_dir)
        detail = f"{type(exc).__name__}: {exc}" + (f" (at {where})" if where else "")
        raise StepError(f"cannot load '{reference}': {detail}", step) from None
    args, kwargs = _arguments(ctx.render(ctx.config.get("args")))
    problem = _check_arguments(function, args, kwargs)
    if problem:
        raise StepError(f"bad arguments for '{reference}': {problem}", step)
    timeout = ctx.config.get("timeout")
    try:
        result = await call_function(function, args, kwargs, float(timeout) if timeout else None)
    except asyncio.CancelledError:
        raise
    except StepError as exc:  # the timeout
        raise StepError(str(exc), step) from None
    except Exception as exc:  # noqa: BLE001 - the function's own error fails the step
        where = _where(exc, function, ctx.base_dir)
        suffix = f" (at {where})" if where else ""
        raise StepError(f"{type(exc).__name__}: {exc}{suffix}", step) from None
    return StepOutcome(return_value=to_plain(result))


def compile_step(compiler: Any, step: dict[str, Any]) -> None:
    """Watch the function's module on reload when it lives next to the flow."""
    function = step["raw"].get("function")
    if isinstance(function, str):
        compiler.python_module(function)


STEP_KIND = StepKind(
    name="python",
    execute=execute,
    rendered=("args",),
    compile=compile_step,
    description="Calls a Python function; `return` is what it returns.",
)
