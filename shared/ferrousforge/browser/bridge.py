"""Small helpers over Pyodide's FFI: Python values to JS objects, timing, the page's JS helpers."""

from __future__ import annotations

from typing import Any

import js
from pyodide.ffi import JsProxy, to_js


def jsobj(value: Any) -> Any:
    """A Python dict/list (nested) as plain JS objects/arrays."""
    return to_js(value, dict_converter=js.Object.fromEntries)


def now_ms() -> float:
    return float(js.performance.now())


def helpers() -> Any:
    """The page's ``forge_js`` module: kernels, ORT/tokenizer/wllama loaders, runtime URLs."""
    import forge_js  # registered by web/forge.mjs

    return forge_js


def py(value: Any) -> Any:
    """A JS value as Python (dicts, lists); Python values pass through."""
    return value.to_py() if isinstance(value, JsProxy) else value


def absent(value: Any) -> bool:
    """JS ``null`` or ``undefined`` (null arrives as a ``JsNull`` object, not ``None``)."""
    return value is None or type(value).__name__ == "JsNull"


def aborted(signal: Any) -> bool:
    """Whether a page's AbortSignal (or None) has been aborted."""
    return signal is not None and not absent(signal) and bool(signal.aborted)
