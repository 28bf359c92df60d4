"""A streamed reply split into what clients expect apart: thinking, content and tool calls.

Thinking is the section between ``<think>`` and ``</think>`` at the start of a reply (or from the
start when the prompt already opened it). Tool calls come in the model's own markup when its template
has one (``<tool_call>{...}</tool_call>``, ``[TOOL_CALLS][...]``, ...) or as JSON objects at the start of
the reply (the form ferrousforge.tools asks of models whose template knows no tools). Each call is
given out as soon as it is complete; text that cannot start a marker is given out at once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# the tool-call markup of common chat templates: (opening, closing or None when the JSON ends it)
CALL_MARKERS = (
    ("<tool_call>", "</tool_call>"),
    ("<|tool_call_start|>", "<|tool_call_end|>"),
    ("[TOOL_CALLS]", None),
    ("<|tool_call|>", None),  # Granite 3: a JSON list after it
    ("<|python_tag|>", None),
)


def thinks(template: str | None) -> bool:
    """Whether a chat template writes thinking sections (the model can be asked to think)."""
    return template is not None and any(
        m in template for m in (THINK_OPEN, "enable_thinking", "reasoning_content")
    )


def call_markers(template: str | None) -> list[tuple[str, str | None]]:
    """The tool-call markup a chat template writes: the common ones it names, and for an Ollama
    template, the text it writes before its calls."""
    from ferrousforge.chat_format import go_call_tag

    found: list[tuple[str, str | None]] = [m for m in CALL_MARKERS if template and m[0] in template]
    if (tag := go_call_tag(template)) and all(tag != m[0] for m in found):
        found.append((tag, None))
    return found


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class Parts:
    """What one piece of streamed text became."""

    thinking: str = ""
    content: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)  # [{id, function: {name, arguments}}]

    def __bool__(self) -> bool:
        return bool(self.thinking or self.content or self.calls)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def as_calls(value: object, tools: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tool calls a decoded JSON value holds, or None when it is not (only) calls to these tools.

    Accepts ``{name, arguments}``, ``{name, parameters}``, ``{function: {name, arguments}}`` and lists of
    them; arguments as an object or as JSON text."""
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return None
        inner = item.get("function")
        fn: dict[str, Any] = inner if isinstance(inner, dict) else item
        name = fn.get("name", fn.get("tool_name"))  # (Command R's)
        args = fn.get("arguments", fn.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                return None
        if name not in tools or not isinstance(args, dict):
            return None
        calls.append({"id": new_call_id(), "function": {"name": name, "arguments": args}})
    return calls or None


class ReplyParser:
    """Feed it the reply's text as it streams; it returns the Parts to send now."""

    def __init__(
        self,
        *,
        thinking: bool = False,
        in_thinking: bool = False,
        tools: dict[str, Any] | None = None,
        markers: list[tuple[str, str | None]] | None = None,
        json_calls: bool = False,
        max_calls: int | None = None,
    ) -> None:
        self.thinking = thinking  # parse a thinking section at the start
        self.state = "think" if in_thinking else "start"  # start | think | content | json | marked
        self.tools = tools or {}
        self.markers = markers or []
        # a grammar made JSON at the reply's start a call: one cut short (num_predict) is dropped, not text
        self.json_calls = json_calls
        self.max_calls = max_calls  # calls given out at most (parallel_tool_calls: false); the rest dropped
        self.calls = 0
        self.marker: tuple[str, str | None] | None = None  # the one being read
        self.buffer = ""
        self.seen_content = False
        self.after_thinking = False
        self._decoder = json.JSONDecoder()

    def feed(self, text: str) -> Parts:
        self.buffer += text
        out = Parts()
        while self._step(out, final=False):
            pass
        return out

    def finish(self) -> Parts:
        out = Parts()
        while self._step(out, final=True):
            pass
        if self.buffer:  # an unfinished section: what it is so far
            if self.state == "think":
                out.thinking += self.buffer
            else:
                out.content += (
                    self.marker[0] if self.state == "marked" and self.marker else ""
                ) + self.buffer
            self.buffer = ""
        return out

    # one transition; True while there may be more to do with the buffer
    def _step(self, out: Parts, final: bool) -> bool:
        buf = self.buffer
        if self.state == "start":
            if not self.thinking:  # nothing to recognise first: stream as it comes, whitespace too
                self.state = "content"
                return True
            head = buf.lstrip()
            if not head:
                return False
            if self.thinking and (head.startswith(THINK_OPEN) or THINK_OPEN.startswith(head)):
                if len(head) < len(THINK_OPEN) and not final:
                    return False
                if head.startswith(THINK_OPEN):
                    self.buffer, self.state = head[len(THINK_OPEN) :], "think"
                    return True
            self.state = "content"
            return True
        if self.state == "think":
            end = buf.find(THINK_CLOSE)
            if end >= 0:
                out.thinking += buf[:end]
                self.buffer, self.state = buf[end + len(THINK_CLOSE) :], "content"
                self.after_thinking = True  # the whitespace that follows is no content
                return True
            keep = 0 if final else _partial_suffix(buf, THINK_CLOSE)
            out.thinking += buf[: len(buf) - keep]
            self.buffer = buf[len(buf) - keep :]
            return False
        if self.state == "content":
            return self._content(out, final)
        if self.state == "json":
            return self._json(out, final)
        return self._marked(out, final)

    def _content(self, out: Parts, final: bool) -> bool:
        if self.after_thinking:
            self.buffer = self.buffer.lstrip()
            if not self.buffer:
                return False
            self.after_thinking = False
        buf = self.buffer
        if self.tools and not self.seen_content:  # JSON calls only at the start of the reply
            head = buf.lstrip()
            if not head:
                return False
            if head[0] in "{[":
                self.buffer, self.state = head, "json"
                return True
        hits = [(i, m) for m in self.markers if (i := buf.find(m[0])) >= 0] if self.tools else []
        if hits:
            at, marker = min(hits, key=lambda h: h[0])
            self._say(out, buf[:at])
            self.buffer, self.state, self.marker = buf[at + len(marker[0]) :], "marked", marker
            return True
        keep = (
            0
            if final or not self.tools
            else max((_partial_suffix(buf, m[0]) for m in self.markers), default=0)
        )
        self._say(out, buf[: len(buf) - keep])
        self.buffer = buf[len(buf) - keep :]
        return False

    def _say(self, out: Parts, text: str) -> None:
        if text:
            out.content += text
            self.seen_content = self.seen_content or bool(text.strip())

    def _give(self, out: Parts, calls: list[dict[str, Any]]) -> None:
        if self.max_calls is not None:
            calls = calls[: max(0, self.max_calls - self.calls)]
        self.calls += len(calls)
        out.calls.extend(calls)

    def _json(self, out: Parts, final: bool) -> bool:
        """JSON calls at the start of the reply, one after the other; anything else is content."""
        buf = self.buffer.lstrip()
        if not buf:
            self.buffer = ""
            return False
        try:
            value, end = self._decoder.raw_decode(buf)
        except RecursionError:  # nested past what any call holds: text
            self.state, self.seen_content, self.buffer = "content", True, buf
            return True
        except ValueError:
            if final and self.json_calls and buf[0] == "{":  # a call cut short
                self.buffer = ""
                return False
            if final or buf[0] not in "{[":
                self.state = "content"
                self.seen_content = True
                self.buffer = buf
                return True
            return False  # not complete yet
        calls = as_calls(value, self.tools)
        if calls is None:  # JSON, but not a call: an ordinary answer
            self.state, self.seen_content, self.buffer = "content", True, buf
            self._say(out, buf[:end])
            self.buffer = buf[end:]
            return True
        self._give(out, calls)
        self.buffer = buf[end:]
        return True

    def _marked(self, out: Parts, final: bool) -> bool:
        """Inside the model's tool-call markup: calls as they complete, then back to content."""
        assert self.marker is not None
        opening, closing = self.marker
        buf = self.buffer
        if closing is not None:
            end = buf.find(closing)
            if end < 0:
                return False
            body, rest = buf[:end], buf[end + len(closing) :]
        else:
            stripped = buf.lstrip()
            try:
                value, end = self._decoder.raw_decode(stripped)
            except RecursionError:
                body, rest = stripped, ""
            except ValueError:
                if not final:
                    return False
                body, rest = stripped, ""
            else:
                body, rest = json.dumps(value), stripped[end:]
        try:
            calls = as_calls(json.loads(body), self.tools)
        except (ValueError, RecursionError):
            calls = None
        if calls is None:  # not a call after all: the markup is text
            self._say(out, opening + body + (closing or ""))
        else:
            self._give(out, calls)
        self.buffer, self.state, self.marker = rest, "content", None
        return True
