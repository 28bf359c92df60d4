"""Go's text/template, as Ollama's TEMPLATE layers use it (pure Python, so the browser runs it too).

``parse`` reads a template into nodes; ``execute`` writes it over data. What is here is the language
(text, comments, ``{{-``/``-}}`` trims, pipelines and parentheses, ``$`` variables declared and
assigned, ``if``/``else if``/``with``/``range`` with ``else``, ``break``/``continue``) and the functions
Go gives every template (``and or not eq ne lt le gt ge len index slice print printf println``) with
Ollama's (``json currentDate yesterdayDate toTypeScriptType``). Named templates (``define``,
``template``, ``block``) are not. Values are Python's: dicts are Go maps (ranged in key order) and
``Struct`` is a struct, with the JSON names and the ``String()`` Ollama gives its template types.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from ferrousforge.errors import BadRequest

# What a render may spend: templates come with requests too, so a range in a range can't run away.
MAX_OUTPUT = 4 << 20  # characters written
MAX_RANGE = 100_000  # steps of a range over a number


class TemplateError(BadRequest):
    pass


# ---- values ------------------------------------------------------------------------------------


class Struct:
    """A Go struct: fields by Go name in order, marshalled to JSON under ``tags`` ("name" or
    "name,omitempty"; the Go name where none), printed as that JSON when ``stringer``."""

    __slots__ = ("fields", "stringer", "tags")

    def __init__(self, fields: dict[str, Any], tags: dict[str, str] | None = None, stringer: bool = False):
        self.fields, self.tags, self.stringer = fields, tags or {}, stringer

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Struct) and self.fields == other.fields

    __hash__ = None  # type: ignore[assignment]


class JSONMap(dict[str, Any]):
    """A map that prints as its JSON (Ollama's tool-call arguments and parameter properties)."""


class JSONList(list[Any]):
    """A list that prints as its JSON (Ollama's .Tools)."""


class PropertyType(list[str]):
    """A JSON-schema type: one name, or several (prints and marshals as the one name alone)."""


def _plain(value: Any) -> Any:
    """A value as json.dumps takes it, the way Go's encoding/json writes it."""
    if isinstance(value, Struct):
        out = {}
        for name, v in value.fields.items():
            key, _, opts = value.tags.get(name, name).partition(",")
            if "omitempty" in opts and (v is None or v == 0 or (_sized(v) and not len(v))):
                continue
            out[key] = _plain(v)
        return out
    if isinstance(value, PropertyType):
        return value[0] if len(value) == 1 else list(value)
    if isinstance(value, dict):
        return {str(k): _plain(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    return value


def marshal(value: Any) -> str:
    """Go's json.Marshal: compact, map keys sorted, and <, > and & escaped as \\u003c and so on."""
    text = json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple | dict | bytes)


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, slices and maps are false; structs are true."""
    if isinstance(value, Struct):
        return True
    return bool(value)


def sprint(value: Any, top: bool = True) -> str:
    """A value as fmt.Print writes it (a missing value as nothing)."""
    if value is None:
        return "" if top else "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, PropertyType):
        return value[0] if len(value) == 1 else "[" + " ".join(value) + "]"
    if isinstance(value, JSONMap | JSONList) or (isinstance(value, Struct) and value.stringer):
        return marshal(value)
    if isinstance(value, Struct):
        return "{" + " ".join(sprint(v, False) for v in value.fields.values()) + "}"
    if isinstance(value, dict):
        items = (f"{sprint(k, False)}:{sprint(value[k], False)}" for k in sorted(value, key=str))
        return "map[" + " ".join(items) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(sprint(v, False) for v in value) + "]"
    return str(value)


def _go_float(value: float) -> str:
    """A float as Go's %v writes it: its shortest digits, with an exponent from 1e+06 and under 1e-04."""
    if math.isnan(value) or math.isinf(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text, neg = "".join(map(str, digits)), "-" if sign else ""
    point = len(text) + exponent  # where the decimal point goes in the digits
    if point - 1 < -4 or point - 1 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{neg}{mantissa}e{'-' if point - 1 < 0 else '+'}{abs(point - 1):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{text}"
    if point >= len(text):
        return neg + text + "0" * (point - len(text))
    return f"{neg}{text[:point]}.{text[point:]}"


# ---- parsing -----------------------------------------------------------------------------------


@dataclass
class Arg:
    """One operand: kind is "dot", "field", "var", "ident", "const" or "pipe"; ``chain`` are the
    fields read from it after (``$.Messages``, ``(index .X 0).Name``)."""

    kind: str
    value: Any = None
    chain: list[str] = field(default_factory=list)


@dataclass
class Pipe:
    commands: list[list[Arg]]
    decl: list[str] = field(default_factory=list)  # $names declared (:=) or assigned (=)
    assign: bool = False


@dataclass
class Action:
    pipe: Pipe


@dataclass
class Branch:
    """if, with or range: its pipe, the list run when it holds, and the else list."""

    kind: str
    pipe: Pipe
    body: list[Any]
    orelse: list[Any] = field(default_factory=list)


@dataclass
class Jump:
    kind: str  # break or continue


Node = str | Action | Branch | Jump

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<str>"(?:[^"\\\n]|\\.)*")
    |(?P<raw>`[^`]*`)
    |(?P<char>'(?:[^'\\\n]|\\.)+')
    |(?P<decl>:=)|(?P<assign>=)
    |(?P<var>\$\w*)
    |(?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?))
    |(?P<field>(?:\.\w+)+|\.)
    |(?P<ident>[A-Za-z_]\w*)
    |(?P<punct>[()|,])""",
    re.X,
)


@dataclass
class _Token:
    kind: str
    text: str
    spaced: bool  # whitespace before it (``$x.A`` reads a field of $x; ``$x .A`` is two operands)


def _tokens(body: str, line: int) -> list[_Token]:
    out: list[_Token] = []
    at, spaced = 0, True
    while at < len(body):
        m = _TOKEN.match(body, at)
        if not m:
            raise TemplateError(f"template: line {line}: unexpected {body[at]!r} in action")
        kind = m.lastgroup or ""
        if kind == "space":
            spaced = True
        else:
            out.append(_Token(kind, m.group(), spaced))
            spaced = False
        at = m.end()
    return out


def _const(token: _Token, line: int) -> Any:
    text = token.text
    if token.kind == "raw":
        return text[1:-1]
    if token.kind in ("str", "char"):
        try:
            value = json.loads('"' + text[1:-1].replace("\\'", "'") + '"')
        except ValueError:
            raise TemplateError(f"template: line {line}: bad string {text}") from None
        return ord(value) if token.kind == "char" and len(value) == 1 else value
    text = text.replace("_", "")
    try:
        return int(text, 0) if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", text) else float(text)
    except ValueError:
        raise TemplateError(f"template: line {line}: bad number {token.text}") from None


class _PipeReader:
    """One action's tokens read into a pipe."""

    def __init__(self, tokens: list[_Token], line: int):
        self.tokens, self.at, self.line = tokens, 0, line

    def fail(self, message: str) -> TemplateError:
        return TemplateError(f"template: line {self.line}: {message}")

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def pipe(self, closing: str | None = None) -> Pipe:
        decl: list[str] = []
        assign = False
        save, names = self.at, []  # $x := ... / $i, $v := ... / $x = ...
        while (t := self.peek()) and t.kind == "var":
            names.append(t.text)
            self.at += 1
            nxt = self.peek()
            if nxt and nxt.text == ",":
                self.at += 1
                continue
            if nxt and nxt.kind in ("decl", "assign"):
                decl, assign = names, nxt.kind == "assign"
                self.at += 1
            break
        if not decl:
            self.at = save
        elif len(decl) > 2:
            raise self.fail("too many declarations in command")
        commands: list[list[Arg]] = []
        while True:
            args = []
            while (t := self.peek()) and t.text not in ("|", closing or "\0"):
                args.append(self.operand())
            if not args:
                raise self.fail("missing value for command" if not commands else "missing command after |")
            commands.append(args)
            t = self.peek()
            if t is None or t.text == closing:
                break
            self.at += 1  # |
        return Pipe(commands, decl, assign)

    def operand(self) -> Arg:
        t = self.tokens[self.at]
        self.at += 1
        if t.kind == "field":
            arg = Arg("dot") if t.text == "." else Arg("field", chain=t.text[1:].split("."))
        elif t.kind == "var":
            arg = Arg("var", t.text)
        elif t.kind == "ident":
            constants = {"true": True, "false": False, "nil": None}
            arg = Arg("const", constants[t.text]) if t.text in constants else Arg("ident", t.text)
        elif t.kind in ("str", "raw", "char", "num"):
            arg = Arg("const", _const(t, self.line))
        elif t.text == "(":
            inner = self.pipe(closing=")")
            if not (close := self.peek()) or close.text != ")":
                raise self.fail("unclosed left paren")
            self.at += 1
            arg = Arg("pipe", inner)
        else:
            raise self.fail(f"unexpected {t.text!r} in operand")
        while (after := self.peek()) and after.kind == "field" and not after.spaced and after.text != ".":
            if arg.kind in ("const", "ident"):
                raise self.fail(f"unexpected {after.text} after {arg.value!r}")
            arg.chain += after.text[1:].split(".")
            self.at += 1
        return arg

    def done(self) -> None:
        if (t := self.peek()) is not None:
            raise self.fail(f"unexpected {t.text!r} in action")


_ACTION = re.compile(r"\{\{(-[ \t\r\n])?")
_COMMENT = re.compile(r"\s*/\*")


def _actions(source: str) -> Iterator[tuple[str, str | None, int]]:
    """The template as (text before, action body or None at the end, line) with trims applied."""
    at, trim_next, line = 0, False, 1
    while True:
        m = _ACTION.search(source, at)
        text = source[at : m.start() if m else len(source)]
        line += source.count("\n", at, m.start() if m else len(source))
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m and m.group(1):
            text = text.rstrip(" \t\r\n")
        if not m:
            yield text, None, line
            return
        start = m.end()
        close = _close_of(source, start, line)
        body = source[start:close]
        trim_next = body.endswith(" -") or body.endswith("\t-") or body.endswith("\n-")
        if trim_next:
            body = body[:-1]
        yield text, body.strip(), line
        line += source.count("\n", start, close)
        at = close + 2


def _close_of(source: str, start: int, line: int) -> int:
    """Where an action's ``}}`` is, past any quoted text and comment in it."""
    if _COMMENT.match(source, start):
        end = source.find("*/", start)
        if end < 0:
            raise TemplateError(f"template: line {line}: unclosed comment")
        close = source.find("}}", end + 2)
        if close < 0 or source[end + 2 : close].strip(" -"):
            raise TemplateError(f"template: line {line}: comment ends before closing delimiter")
        return close
    i = start
    while i < len(source):
        ch = source[i]
        if source.startswith("}}", i):
            return i
        if ch in "\"'`":
            end = i + 1
            while end < len(source) and source[end] != ch:
                if source[end] == "\\" and ch != "`":
                    end += 1
                elif source[end] == "\n" and ch != "`":
                    break
                end += 1
            i = end
        i += 1
    raise TemplateError(f"template: line {line}: unclosed action")


class _Parser:
    def __init__(self, source: str):
        self.items = list(_actions(source))
        self.at = 0

    def nodes(self, depth: int = 0) -> tuple[list[Node], str, Pipe | None, int]:
        """Nodes up to an ``end`` or ``else`` (or the template's end): the nodes, what ended them, the
        pipe of an ``else if``/``else with`` and its line."""
        if depth > 100:
            raise TemplateError("template: nested too deeply")
        out: list[Node] = []
        while self.at < len(self.items):
            text, body, line = self.items[self.at]
            self.at += 1
            if text:
                out.append(text)
            if body is None:
                break
            if body.startswith("/*"):
                continue
            reader = _PipeReader(_tokens(body, line), line)
            first = reader.peek()
            word = first.text if first and first.kind == "ident" else ""
            if word in ("end", "else"):
                reader.at += 1
                if word == "else" and (nxt := reader.peek()) and nxt.text in ("if", "with"):
                    reader.at += 1
                    pipe = reader.pipe()
                    return out, "else " + nxt.text, pipe, line
                reader.done()
                return out, word, None, line
            if word in ("if", "with", "range"):
                reader.at += 1
                out.append(self.branch(word, reader.pipe(), line, depth))
            elif word in ("break", "continue"):
                reader.at += 1
                reader.done()
                out.append(Jump(word))
            elif word in ("define", "template", "block"):
                raise TemplateError(
                    f"template: line {line}: named templates ({word}) are not supported: "
                    "write the text inline"
                )
            else:
                pipe = reader.pipe()
                reader.done()
                out.append(Action(pipe))
        return out, "", None, 0

    def branch(self, kind: str, pipe: Pipe, line: int, depth: int) -> Branch:
        if kind == "range" and pipe.assign:
            raise TemplateError(f"template: line {line}: range can only declare variables")
        body, ended, chained, at = self.nodes(depth + 1)
        node = Branch(kind, pipe, body)
        if ended == "else":
            node.orelse, ended, _, at = self.nodes(depth + 1)
            if ended != "end":
                raise TemplateError(
                    f"template: line {at or line}: expected end after else, got {ended or 'EOF'}"
                )
        elif ended.startswith("else "):  # else if / else with: a branch that takes this one's end
            node.orelse = [self.branch(ended[5:], chained or pipe, at, depth + 1)]
        elif ended != "end":
            raise TemplateError(f"template: line {line}: unexpected EOF: {kind} has no end")
        return node


@dataclass
class Template:
    nodes: list[Node]
    names: set[str]  # the field and variable names it reads, lowercased (Ollama's Vars)


def parse(source: str) -> Template:
    """A template's nodes; a TemplateError (a 400) says what in it cannot be read."""
    try:
        nodes, ended, _, line = _Parser(source).nodes()
        if ended:
            raise TemplateError(f"template: line {line}: unexpected {{{{{ended}}}}}")
        names: set[str] = set()
        _check(nodes, names, ["$"], in_range=False)
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    return Template(nodes, names)


def _check(nodes: list[Any], names: set[str], scope: list[str], in_range: bool) -> None:
    """Refuse what Go refuses when it parses (a function it does not know, a variable used where none
    is declared, break or continue outside a range) and gather the names read (``names``, lowercased:
    Ollama's Vars)."""

    def pipe(p: Pipe, scope: list[str]) -> None:
        for args in p.commands:
            for arg in args:
                names.update(name.lower() for name in arg.chain)
                if arg.kind == "ident" and arg.value not in FUNCTIONS and arg.value not in ("and", "or"):
                    raise TemplateError(f'template: function "{arg.value}" not defined')
                if arg.kind == "var" and arg.value not in scope:
                    raise TemplateError(f'template: undefined variable "{arg.value}"')
                if arg.kind == "pipe":
                    pipe(arg.value, [*scope])
        if p.assign and p.decl[0] not in scope:
            raise TemplateError(f'template: undefined variable "{p.decl[0]}"')

    for node in nodes:
        if isinstance(node, Action):
            pipe(node.pipe, scope)
            if not node.pipe.assign:
                scope.extend(node.pipe.decl)
        elif isinstance(node, Branch):
            inner = [*scope]
            pipe(node.pipe, inner)
            if not node.pipe.assign:
                inner.extend(node.pipe.decl)
            _check(node.body, names, [*inner], in_range or node.kind == "range")
            _check(node.orelse, names, [*inner], in_range)
        elif isinstance(node, Jump) and not in_range:
            raise TemplateError(f"template: {{{{{node.kind}}}}} outside {{{{range}}}}")


def cut_after(template: Template, name: str) -> Template:
    """The template up to the first action that prints field ``name``, and nothing after it (how
    Ollama ends a prompt at its last turn's .Response: a test of .Response in an if is not a cut)."""
    found = False

    def reads(pipe: Pipe) -> bool:
        return any(
            (arg.kind == "field" and name in arg.chain) or (arg.kind == "pipe" and reads(arg.value))
            for args in pipe.commands
            for arg in args
        )

    def walk(nodes: list[Node]) -> list[Node]:
        nonlocal found
        out: list[Node] = []
        for node in nodes:
            if found:
                break
            if isinstance(node, Branch):
                body = walk(node.body)
                out.append(Branch(node.kind, node.pipe, body, [] if found else walk(node.orelse)))
            else:
                out.append(node)
                found = isinstance(node, Action) and reads(node.pipe)
        return out

    return Template(walk(template.nodes), template.names)


# ---- execution ---------------------------------------------------------------------------------


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Struct):
        if name not in value.fields:
            raise TemplateError(f"template: can't evaluate field {name}")
        return value.fields[name]
    if isinstance(value, dict):
        return value.get(name)
    if value is None:
        return None
    raise TemplateError(f"template: can't evaluate field {name} in a {type(value).__name__}")


def _length(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, Struct) or not hasattr(value, "__len__"):
        raise TemplateError(f"template: len of {sprint(value)!r}")
    return len(value)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list | tuple | str) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise TemplateError(f"template: index out of range: {key}")
            value = value[key]
        else:
            raise TemplateError(f"template: can't index item of type {type(value).__name__}")
    return value


def _slice(value: Any, *bounds: int) -> Any:
    if value is None:
        value = []
    if len(bounds) > 2 or not isinstance(value, str | list | tuple):
        raise TemplateError("template: slice takes a string or list and at most two indexes")
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) == 2 else len(value)
    if not 0 <= start <= end <= len(value):
        raise TemplateError(f"template: slice index out of range: [{start}:{end}]")
    return value[start:end]


def _compare(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(a: Any, b: Any) -> bool:
        basic = (str, int, float, bool)
        if not (isinstance(a, basic) and isinstance(b, basic)) or isinstance(a, str) != isinstance(b, str):
            raise TemplateError(f"template: incompatible types for comparison: {sprint(a)!r}, {sprint(b)!r}")
        return op(a, b)

    return compare


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("template: eq needs at least two arguments")
    return any(a == b for b in others)


def _sprint_args(args: tuple[Any, ...]) -> str:
    """fmt.Sprint: a space between two operands when neither is a string."""
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += sprint(arg, False)
    return out


def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def verb(m: re.Match[str]) -> str:
        flags, kind = m.group(1), m.group(2)
        if any(int(n) > 1000 for n in re.findall(r"\d+", flags)):
            raise TemplateError(f"template: printf width or precision over 1000 in %{flags}{kind}")
        if kind == "%":
            return "%"
        value = next(values, None)
        if kind == "q":
            return json.dumps(sprint(value, False), ensure_ascii=False)
        if kind in "dfeg" and isinstance(value, int | float) and not isinstance(value, bool):
            return ("%" + flags + kind) % value
        return ("%" + flags + "s") % sprint(value, False)

    return re.sub(r"%([-+# 0]*\d*(?:\.\d+)?)([vsdqtfeg%])", verb, fmt)


def _typescript(prop: Any) -> str:
    """Ollama's toTypeScriptType: a parameter's JSON-schema type as TypeScript writes it."""
    if not isinstance(prop, Struct):
        return "any"
    any_of = prop.fields.get("AnyOf") or []
    if any_of:
        return " | ".join(_typescript(p) for p in any_of)
    names = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}
    names |= {"array": "any[]", "object": "Record<string, any>", "null": "null"}
    types = prop.fields.get("Type") or []
    return " | ".join(names.get(t, "any") for t in types) if types else "any"


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "not": lambda x: not truth(x),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "len": _length,
    "index": _index,
    "slice": _slice,
    "print": lambda *a: _sprint_args(a),
    "println": lambda *a: " ".join(sprint(x, False) for x in a) + "\n",
    "printf": _printf,
    "json": marshal,
    "currentDate": lambda *_: date.today().isoformat(),
    "yesterdayDate": lambda *_: (date.today() - timedelta(days=1)).isoformat(),
    "toTypeScriptType": _typescript,
}


class _Run:
    def __init__(self, root: Any, seconds: float):
        self.root = root
        self.until = time.monotonic() + seconds
        self.vars: list[list[Any]] = [["$", root]]
        self.out: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise TemplateError(f"template: the output passed {MAX_OUTPUT} characters")
        self.out.append(text)

    def lookup(self, name: str) -> Any:
        for var in reversed(self.vars):
            if var[0] == name:
                return var[1]
        raise TemplateError(f'template: undefined variable "{name}"')

    def nodes(self, nodes: list[Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.write(node)
            elif isinstance(node, Action):
                value = self.pipe(node.pipe, dot)
                if not node.pipe.decl:
                    self.write(sprint(value))
            elif isinstance(node, Branch):
                self.branch(node, dot)
            else:
                raise _Break() if node.kind == "break" else _Continue()

    def branch(self, node: Branch, dot: Any) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range(node, dot)
                return
            value = self.pipe(node.pipe, dot)
            if truth(value):
                self.nodes(node.body, value if node.kind == "with" else dot)
            else:
                self.nodes(node.orelse, dot)
        finally:
            del self.vars[mark:]

    def range(self, node: Branch, dot: Any) -> None:
        value = self.pipe(node.pipe, dot, declare=False)
        if isinstance(value, dict):
            items: list[tuple[Any, Any]] = [(k, value[k]) for k in sorted(value, key=str)]
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if value > MAX_RANGE:
                raise TemplateError(f"template: a range over more than {MAX_RANGE}")
            items = [(i, i) for i in range(value)]
        elif value is None:
            items = []
        else:
            raise TemplateError(f"template: range can't iterate over {sprint(value)!r}")
        if not items:
            self.nodes(node.orelse, dot)
            return
        mark = len(self.vars)
        for key, item in items:
            if time.monotonic() > self.until:
                raise TemplateError("template: took too long to render")
            del self.vars[mark:]
            names = node.pipe.decl
            if len(names) == 1:
                self.vars.append([names[0], item])
            elif len(names) == 2:
                self.vars += [[names[0], key], [names[1], item]]
            try:
                self.nodes(node.body, item)
            except _Continue:
                continue
            except _Break:
                break

    def pipe(self, pipe: Pipe, dot: Any, declare: bool = True) -> Any:
        value: Any = None
        for i, args in enumerate(pipe.commands):
            value = self.command(args, dot, (value,) if i else ())
        if declare and pipe.decl:
            if pipe.assign:
                for var in reversed(self.vars):
                    if var[0] == pipe.decl[0]:
                        var[1] = value
                        break
                else:
                    raise TemplateError(f'template: undefined variable "{pipe.decl[0]}"')
            else:
                self.vars.append([pipe.decl[0], value])
        return value

    def command(self, args: list[Arg], dot: Any, piped: tuple[Any, ...]) -> Any:
        head = args[0]
        if head.kind == "ident":
            name = head.value
            if name in ("and", "or"):  # evaluated lazily, as Go does
                operands = [*args[1:]]
                if not operands and not piped:
                    raise TemplateError(f"template: {name} needs an argument")
                value: Any = None
                for arg in operands:
                    value = self.arg(arg, dot)
                    if truth(value) != (name == "and"):
                        return value
                return piped[0] if piped else value
            fn = FUNCTIONS.get(name)
            if fn is None:
                raise TemplateError(f'template: function "{name}" not defined')
            values = [self.arg(a, dot) for a in args[1:]] + list(piped)
            try:
                made = fn(*values)
            except TypeError as exc:
                raise TemplateError(f"template: wrong arguments for {name}: {exc}") from None
            if isinstance(made, str) and len(made) > MAX_OUTPUT:
                raise TemplateError(f"template: {name} made a string longer than {MAX_OUTPUT}")
            return made
        if len(args) > 1 or piped:
            raise TemplateError("template: can't give an argument to a non-function")
        return self.arg(head, dot)

    def arg(self, arg: Arg, dot: Any) -> Any:
        if arg.kind == "dot" or arg.kind == "field":
            value = dot
        elif arg.kind == "var":
            value = self.lookup(arg.value)
        elif arg.kind == "const":
            value = arg.value
        elif arg.kind == "pipe":
            mark = len(self.vars)
            value = self.pipe(arg.value, dot)
            del self.vars[mark:]
        else:  # a function, called with no arguments
            value = self.command([arg], dot, ())
        for name in arg.chain:
            value = _field(value, name)
        return value


def execute(template: Template, data: Any, seconds: float = 2.0) -> str:
    """The template written over ``data`` (its ``.``), in at most about ``seconds``."""
    run = _Run(data, seconds)
    try:
        run.nodes(template.nodes, data)
    except (_Break, _Continue):
        raise TemplateError("template: break or continue outside range") from None
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    return "".join(run.out)
