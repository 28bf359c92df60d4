"""A tiny WGSL preprocessor, so one kernel source serves every adapter.

- ``#if NAME`` / ``#else`` / ``#endif`` keep or drop lines by a define's truth (they nest);
- ``#include NAME`` inserts the kernel library file ``NAME`` (``include(NAME)`` gives its text),
  preprocessed with the same defines;
- ``#for I COUNT`` / ``#endfor`` repeat their lines COUNT times (a number or a define), ``${I}``
  becoming 0, 1, ...: a loop unrolled in the source, so that a thread's arrays are indexed by
  constants and stay in registers on every compiler;
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
    """The lines ``#if`` keeps, with included files (themselves preprocessed) and ``#for`` blocks
    (repeated) in place."""
    out: list[str] = []
    keep: list[bool] = []
    lines = source.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
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
        elif word and word[0] == "#for":
            body, number = _for_body(lines, number)
            if all(keep):
                name, count = word[1], _count(word[2], defines)
                for i in range(count):
                    text = "\n".join(body).replace("${" + name + "}", str(i))
                    out.extend(_lines(text, defines, include))
        elif word and word[0] == "#endfor":
            raise ValueError(f"line {number}: #endfor without #for")
        elif word and word[0] == "#include" and all(keep):
            if include is None:
                raise ValueError(f"line {number}: #include without a library")
            out.extend(_lines(include(word[1]), defines, include))
        elif all(keep):
            out.append(line)
    if keep:
        raise ValueError("#if without #endif")
    return out


def _for_body(lines: list[str], start: int) -> tuple[list[str], int]:
    """The lines of the ``#for`` block opened just before ``start`` (nested blocks whole), and the
    line number after its ``#endfor``."""
    depth = 1
    for at in range(start, len(lines)):
        word = lines[at].strip().split()[:1]
        depth += {"#for": 1, "#endfor": -1}.get(word[0] if word else "", 0)
        if depth == 0:
            return lines[start:at], at + 1
    raise ValueError(f"line {start}: #for without #endfor")


def _count(value: str, defines: dict[str, Any]) -> int:
    count = int(defines[value]) if value in defines else int(value) if value.isdigit() else None
    if count is None:
        raise ValueError(f"#for needs a number or a define for its count, not {value}")
    return count
