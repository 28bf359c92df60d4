"""Field readers for JSON request bodies: a wrong type or value is a BadRequest naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from ferrousforge.errors import BadRequest

T = TypeVar("T")
MISSING: Any = object()


def require_object(body: object, what: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return body


def field(body: dict[str, Any], key: str, kind: type[T] | tuple[type, ...], default: Any = MISSING) -> Any:
    value = body.get(key, MISSING)
    if value is MISSING or value is None:
        if default is MISSING:
            raise BadRequest(f"'{key}' is required")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if int in kinds and float not in kinds and (whole := as_int(value)) is not None:
        value = whole  # JSON has one number type: 5.0 is an integer, as JSON Schema says
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"'{key}' must be {_describe(kinds)}")
    if not isinstance(value, kinds):
        raise BadRequest(f"'{key}' must be {_describe(kinds)}")
    return value


def as_int(value: object) -> int | None:
    """``value`` as an int when it is one (``5`` or ``5.0``, not ``True``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def check_ranges(body: dict[str, Any], ranges: Mapping[str, tuple[float, float]]) -> None:
    """The numbers these dialects bound (temperature 0 to 2, ...): outside, a 400 as theirs answer."""
    for name, (low, high) in ranges.items():
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high
        ):
            raise BadRequest(f"'{name}' must be a number from {low:g} to {high:g}")


def token_ids(value: object) -> list[int] | None:
    """``value`` as a list of token ids (integers in [0, 2**31)), or None when it is not one."""
    if not isinstance(value, list):
        return None
    ids = [as_int(x) for x in value]
    if not all(t is not None and 0 <= t < 2**31 for t in ids):
        return None
    return ids  # type: ignore[return-value]


def string_list(body: dict[str, Any], key: str) -> list[str]:
    value = field(body, key, list, [])
    if not all(isinstance(v, str) for v in value):
        raise BadRequest(f"'{key}' must be a list of strings")
    return value


def _describe(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "an object",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)
