"""A tiny WGSL preprocessor, so one kernel source serves every adapter.

- ``#if NAME`` / ``#else`` / ``#endif`` keep or drop lines by a define's truth (they nest);
- ``#include NAME`` inserts the kernel library file ``NAME`` (``include(NAME)`` gives its text),
  preprocessed with the same defines;
- ``${NAME}`` is replaced by the define's value (workgroup sizes, tile sizes);
- ``FLOAT`` is ``f16`` where the define ``F16`` is true (the adapter has ``shader-f16``), else ``f32``,
  and ``enable f16;`` is added for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_VALUE = re.compile(r"\$\{(\w+)\}")


def preprocess(source: str, defines: dict[str, Any], include: Callable[[str], str] | None = None) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in defines:
            raise ValueError(f"kernel needs the define {name}")
        return str(defines[name])

    text = _VALUE.sub(value, "\n".join(_lines(source, defines, include)))
    f16 = bool(defines.get("F16"))
    text = re.sub(r"\bFLOAT\b", "f16" if f16 else "f32", text)
    return ("enable f16;\n" if f16 else "") + text + "\n"


def _lines(source: str, defines: dict[str, Any], include: Callable[[str], str] | None) -> list[str]:
    """The lines ``#if`` keeps, with included files (themselves preprocessed) in place."""
    out: list[str] = []
    keep: list[bool] = []
    for number, line in enumerate(source.splitlines(), 1):
        word = line.strip().split()
        if word and word[0] == "#if":
            keep.append(bool(defines.get(word[1])))
        elif word and word[0] == "#else":
            if not keep:
                raise ValueError(f"line {number}: #else without #if")
            keep[-1] = not keep[-1]
        elif word and word[0] == "#endif":
            if not keep:
                raise ValueError(f"line {number}: #endif without #if")
            keep.pop()
        elif word and word[0] == "#include" and all(keep):
            if include is None:
                raise ValueError(f"line {number}: #include without a library")
            out.extend(_lines(include(word[1]), defines, include))
        elif all(keep):
            out.append(line)
    if keep:
        raise ValueError("#if without #endif")
    return out
