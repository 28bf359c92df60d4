"""``ferrousforge run`` as ``ollama run`` behaves: a prompt streams one answer; without one, a chat
with Ollama's slash commands; ``--verbose`` prints the timings; an embedding model prints its vector."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any, TextIO

from ferrousforge.client import Client
from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge.options import Options

HELP = """Available Commands:
  /set parameter NAME VALUE   Set a parameter (temperature, num_ctx, seed, stop, ...)
  /set system TEXT            Set the system message
  /set verbose | quiet        Show or hide the timings after each answer
  /set format json | noformat Answer in JSON, or freely
  /set think [LEVEL] | nothink Thinking models: think first (low, medium, high), or not
  /set wordwrap | nowordwrap  Wrap answers between words at the terminal's edge, or not
  /show info | parameters | system | template
  /load MODEL                 Chat with another model
  /save MODEL                 Save this session (system, parameters, messages) as a new model
  /clear                      Clear the session's context
  /bye                        Exit
  /?, /help                   This help

Use \"\"\" to begin and end a multi-line message.
A vision model sees the images whose paths a message names (.png, .jpg, .gif, .bmp)."""

# A path to an image in a message: quoted (spaces allowed) or not
_EXTENSION = r"\.(?:png|jpe?g|gif|bmp)"
_IMAGE_PATH = re.compile(
    rf"""(?:"([^"]+?{_EXTENSION})"|'([^']+?{_EXTENSION})'|(\S+?{_EXTENSION}))(?=[\s,.;:!?)]|$)""", re.I
)


def take_images(text: str) -> tuple[str, list[str]]:
    """The images a message names by path, as ``ollama run`` takes them for a vision model: each
    existing file is read (base64) and its path taken out of the text."""
    images: list[str] = []

    def take(match: re.Match[str]) -> str:
        path = os.path.expanduser(next(g for g in match.groups() if g))
        if not os.path.isfile(path):
            return match.group(0)
        with open(path, "rb") as f:
            images.append(base64.b64encode(f.read()).decode())
        print(f"Added image '{path}'", file=sys.stderr)
        return ""

    rest = _IMAGE_PATH.sub(take, text)
    return (" ".join(rest.split()) if images else text), images


def sees(info: dict[str, Any] | None) -> bool:
    return "vision" in (info or {}).get("capabilities", [])


def go_duration(ns: int) -> str:
    """Nanoseconds as Go's time.Duration prints them (Ollama's --verbose): 1.5s, 15.123ms, 12.3µs."""
    for unit, size in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if ns >= size:
            text = f"{ns / size:.9f}".rstrip("0").rstrip(".")
            return text + unit
    return f"{ns}ns"


def summary(final: dict[str, Any], stream: TextIO) -> None:
    """Ollama's timing block for a finished answer."""

    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s" if ns else "n/a"

    prompt_count, prompt_ns = final.get("prompt_eval_count", 0), final.get("prompt_eval_duration", 0)
    count, ns = final.get("eval_count", 0), final.get("eval_duration", 0)
    for label, value in (
        ("total duration", go_duration(final.get("total_duration", 0))),
        ("load duration", go_duration(final.get("load_duration", 0))),
        ("prompt eval count", f"{prompt_count} token(s)"),
        ("prompt eval duration", go_duration(prompt_ns)),
        ("prompt eval rate", rate(prompt_count, prompt_ns)),
        ("eval count", f"{count} token(s)"),
        ("eval duration", go_duration(ns)),
        ("eval rate", rate(count, ns)),
    ):
        stream.write(f"{label + ':':<22}{value}\n")
    stream.flush()


THINK_LEVELS = ("low", "medium", "high")  # how much a thinking model thinks (--think=high)


class Wrapped:
    """Text streamed to a terminal, wrapped between words as ollama run wraps it (five columns short of
    the edge): a word is held until it ends, then goes on a new line if it would pass the edge."""

    def __init__(self, out: TextIO, width: int) -> None:
        self.out, self.width = out, width
        self.column, self.word = 0, ""

    @classmethod
    def for_terminal(cls, wrap: bool) -> TextIO | Wrapped:
        columns = shutil.get_terminal_size((0, 0)).columns
        return cls(sys.stdout, columns - 5) if wrap and sys.stdout.isatty() and columns >= 10 else sys.stdout

    def write(self, text: str) -> None:
        for char in text:
            if not char.isspace():
                self.word += char
                continue
            self._word()
            if char == "\n":
                self.out.write(char)
                self.column = 0
            elif self.column < self.width:  # (a space at the edge is the line break)
                self.out.write(char)
                self.column += 1
        if len(self.word) >= self.width:  # longer than a line: the terminal breaks it
            self._word()

    def _word(self) -> None:
        if self.column and self.column + len(self.word) > self.width:
            self.out.write("\n")
            self.column = 0
        self.out.write(self.word)
        self.column += len(self.word)
        self.word = ""

    def flush(self) -> None:
        self.out.flush()

    def end(self) -> None:
        self._word()
        self.out.flush()


def _write(
    chunks: Iterator[dict[str, Any]],
    content: Callable[[dict[str, Any]], tuple[str, str]],
    show_thinking: bool,
    wrap: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Streams the answer's text (and thinking, set apart as Ollama does; ``content``: a chunk's
    thinking and text), wrapped between words on a terminal unless ``wrap`` is off; the whole text and
    the last chunk."""
    parts: list[str] = []
    last: dict[str, Any] = {}
    thinking = False
    out = Wrapped.for_terminal(wrap)
    for chunk in chunks:
        last = chunk
        thought, piece = content(chunk)
        if thought and show_thinking:
            if not thinking:
                out.write("Thinking...\n")
                thinking = True
            out.write(thought)
        if piece:
            if thinking:
                out.write("\n...done thinking.\n\n")
                thinking = False
            parts.append(piece)
            out.write(piece)
        out.flush()
    if isinstance(out, Wrapped):
        out.end()
    return "".join(parts), last


def one_shot(
    api: Client,
    model: str,
    info: dict[str, Any],
    text: str,
    extra: dict[str, Any],
    verbose: bool,
    thinking: bool,
    wrap: bool = True,
) -> None:
    """``info``: the model's /api/show answer (its capabilities say how it answers)."""
    if "completion" not in info.get("capabilities", []) and "embedding" in info.get("capabilities", []):
        embedding = api.embed(
            model, text, **{k: v for k, v in extra.items() if k in ("keep_alive", "dimensions")}
        )
        sys.stdout.write(json.dumps(embedding["embeddings"][0]) + "\n")
        return
    extra = {k: v for k, v in extra.items() if k != "dimensions"}
    if sees(info):
        text, images = take_images(text)
        if images:
            extra["images"] = images
    chunks = api.generate(model, text, stream=True, **extra)
    _, last = _write(chunks, lambda c: (c.get("thinking", ""), c.get("response", "")), thinking, wrap)
    sys.stdout.write("\n")
    if verbose:
        sys.stdout.write("\n")
        summary(last, sys.stderr)


def _read_message() -> str:
    """One message from the prompt: a line, or lines between triple quotes (EOFError at the end)."""
    line = input(">>> ")
    if not line.strip().startswith('"""'):
        return line
    lines = [line.strip()[3:]]
    while not lines[-1].endswith('"""'):
        lines.append(input("... "))
    lines[-1] = lines[-1][:-3]
    return "\n".join(lines).strip("\n")


def line_editing() -> Callable[[], None]:
    """Line editing at the prompt (arrows, Ctrl-R) and the messages of earlier chats under the up
    arrow, as ollama run has them: kept in ~/.ferrousforge/history unless OLLAMA_NOHISTORY (or
    FERROUSFORGE_NOHISTORY) is set. Returns what saves the history at the end."""
    try:
        import readline  # input() edits lines once this is imported
    except ImportError:  # (Windows)
        return lambda: None
    if os.environ.get("OLLAMA_NOHISTORY") or os.environ.get("FERROUSFORGE_NOHISTORY"):
        return lambda: None
    from ferrousforge_host.config import HOME

    path = HOME / "history"
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(1000)

    def save() -> None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)

    return save


def interactive(
    api: Client,
    model: str,
    extra: dict[str, Any],
    verbose: bool,
    thinking: bool,
    info: dict[str, Any] | None = None,
    wrap: bool = True,
) -> None:
    """The chat; ``info`` (/api/show's answer): a model's own MESSAGEs are shown first, as the
    conversation so far (the server starts every chat with them)."""
    save_history = line_editing()
    try:
        _chat(api, model, extra, verbose, thinking, info, wrap)
    finally:
        save_history()


def _chat(
    api: Client,
    model: str,
    extra: dict[str, Any],
    verbose: bool,
    thinking: bool,
    info: dict[str, Any] | None,
    wrap: bool,
) -> None:
    for shown in (info or {}).get("messages", []):
        if shown.get("role") == "user":
            print(f">>> {shown.get('content', '')}")
        elif shown.get("role") == "assistant":
            print(f"{shown.get('content', '')}\n")
    messages: list[dict[str, Any]] = []
    options: dict[str, Any] = {}
    system = ""
    extra = {k: v for k, v in extra.items() if k != "dimensions"}
    while True:
        try:
            line = _read_message()
        except EOFError:
            sys.stdout.write("\n")
            return
        if not line.strip():
            continue
        if line.startswith("/"):
            word = line.split(maxsplit=3)
            command = word[0]
            if command in ("/bye", "/exit"):
                return
            if command in ("/?", "/help"):
                print(HELP)
            elif command == "/clear":
                messages.clear()
                print("Cleared session context")
            elif command == "/set" and len(word) >= 2:
                if word[1] == "parameter" and len(word) == 4:
                    value = _parameter(word[2], word[3])
                    if value is not None:
                        options[word[2]] = value
                        print(f"Set parameter '{word[2]}' to '{word[3]}'")
                elif word[1] == "system" and len(word) >= 3:
                    system = line.split(maxsplit=2)[2].strip().strip('"')
                    print("Set system message.")
                elif word[1] in ("verbose", "quiet"):
                    verbose = word[1] == "verbose"
                    print(f"Set '{word[1]}' mode.")
                elif word[1:] == ["format", "json"] or word[1] == "noformat":
                    extra["format"] = "json" if word[1] == "format" else None
                    print("Set format to 'json' mode." if word[1] == "format" else "Disabled format.")
                elif word[1] in ("think", "nothink"):
                    level = word[2] if len(word) > 2 and word[1] == "think" else ""
                    if level and level not in THINK_LEVELS:
                        print("Usage: /set think [low|medium|high] | /set nothink")
                        continue
                    extra["think"] = level or word[1] == "think"
                    print(f"Set 'think' mode to '{level}'." if level else f"Set '{word[1]}' mode.")
                elif word[1] in ("wordwrap", "nowordwrap"):
                    wrap = word[1] == "wordwrap"
                    print("Set 'wordwrap' mode." if wrap else "Set 'nowordwrap' mode.")
                else:
                    print(
                        "Usage: /set parameter NAME VALUE | /set system TEXT | /set verbose | /set quiet"
                        " | /set format json | /set noformat | /set think | /set nothink"
                        " | /set wordwrap | /set nowordwrap"
                    )
            elif command == "/show" and len(word) >= 2:
                _show(api, model, word[1], options, system)
            elif command == "/load" and len(word) == 2:
                print(f"Loading model '{word[1]}'")
                try:
                    api.chat(word[1], [])
                except ForgeError as exc:
                    print(f"error: {exc.message}")
                    continue
                model = word[1]
                info = api.show(model)
                messages.clear()
            elif command == "/save" and len(word) == 2:
                try:
                    _save(api, model, word[1], system, options, messages)
                except ForgeError as exc:
                    print(f"error: {exc.message}")
                    continue
                print(f"Created new model '{word[1]}'")
            else:
                print(f"Unknown command '{command}'. Type /? for help")
            continue
        message: dict[str, Any] = {"role": "user", "content": line}
        if sees(info):
            message["content"], images = take_images(line)
            if images:
                message["images"] = images
        messages.append(message)
        history = ([{"role": "system", "content": system}] if system else []) + messages
        fields = {**extra, **({"options": options} if options else {})}
        chunks = api.chat(model, history, stream=True, **fields)
        reply, last = _write(chunks, _message, thinking, wrap)
        sys.stdout.write("\n\n")
        if verbose:
            summary(last, sys.stderr)
            sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": reply})


def _save(
    api: Client,
    model: str,
    name: str,
    system: str,
    options: dict[str, Any],
    messages: list[dict[str, str]],
) -> None:
    """``/save``: a model from this one with the session's system message, parameters and messages
    (after the model's own MESSAGEs, which every chat with it starts from)."""
    fields: dict[str, Any] = {"from": model, "messages": [*api.show(model).get("messages", []), *messages]}
    if system:
        fields["system"] = system
    if options:
        fields["parameters"] = options
    for _ in api.create(name, **fields):
        pass


def _message(chunk: dict[str, Any]) -> tuple[str, str]:
    message = chunk.get("message", {})
    return message.get("thinking", ""), message.get("content", "")


def _parameter(name: str, text: str) -> Any:
    """A /set parameter value parsed as the request options take it (numbers, booleans, stop
    strings); None after printing why it was refused."""
    if name not in {f.name for f in fields(Options)}:
        print(f"Couldn't set parameter: unknown parameter '{name}'")
        return None
    value: Any = [text] if name == "stop" else text
    if name != "stop":
        with contextlib.suppress(ValueError):
            value = json.loads(text)
    try:
        Options.parse({name: value})
    except BadRequest as exc:
        print(f"Couldn't set parameter: {exc}")
        return None
    return value


def model_facts(info: dict[str, Any]) -> list[tuple[str, str]]:
    """What ``show`` and the chat's ``/show info`` list of a model, from /api/show's answer."""
    d = info.get("details", {})
    context = info.get("model_info", {}).get(f"{d.get('family')}.context_length")
    return [
        (label, str(value or ""))
        for label, value in (
            ("architecture", d.get("family")),
            ("parameters", d.get("parameter_size")),
            ("quantization", d.get("quantization_level")),
            ("format", d.get("format")),
            ("context length", context),
            ("capabilities", ", ".join(info.get("capabilities", []))),
        )
    ]


def projector_facts(info: dict[str, Any]) -> list[tuple[str, str]]:
    """A vision model's projector, as ``ollama show`` lists it (none for other models)."""
    meta = info.get("projector_info") or {}
    if not meta:
        return []
    return [
        (label, str(value))
        for label, value in (
            ("architecture", meta.get("general.architecture")),
            ("projector type", meta.get("clip.projector_type")),
            ("embedding length", meta.get("clip.vision.embedding_length")),
            ("dimensions", meta.get("clip.vision.projection_dim")),
            ("image size", meta.get("clip.vision.image_size")),
        )
        if value is not None
    ]


def _show(api: Client, model: str, what: str, options: dict[str, Any], system: str) -> None:
    info = api.show(model)
    if what == "info":
        for label, value in model_facts(info):
            print(f"  {label:<16}{value}")
        if projector := projector_facts(info):
            print("  Projector")
            for label, value in projector:
                print(f"    {label:<18}{value}")
    elif what == "parameters":
        print(info.get("parameters", "") or "No parameters were specified for this model.")
        for name, value in options.items():
            print(f"{name:<30} {json.dumps(value)}  (this session)")
    elif what == "system":
        print(system or info.get("system", "") or "No system message was specified for this model.")
    elif what == "template":
        print(info.get("template", "") or "No prompt template was specified for this model.")
    else:
        print("Usage: /show info | parameters | system | template")
