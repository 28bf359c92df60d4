"""Ollama's Go templates: the language (ferrousforge.gotemplate) and a chat rendered as Ollama does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferrousforge.chat_format import check_template, prefill_of, render
from ferrousforge.errors import BadRequest
from ferrousforge.gotemplate import execute, parse
from ferrousforge.reply import ReplyParser, call_markers

LIBRARY = json.loads((Path(__file__).parent / "data" / "ollama_templates.json").read_text())["templates"]
CHATS = {
    "user": [{"role": "user", "content": "Hello, how are you?"}],
    "user-assistant-user": [
        {"role": "user", "content": "Hello, how are you?"},
        {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
        {"role": "user", "content": "I'd like to show off how chat templating works!"},
    ],
}
CHATS["system-user-assistant-user"] = [
    {"role": "system", "content": "You are a helpful assistant."},
    *CHATS["user-assistant-user"],
]
# Ollama's own test drops one trailing space from these templates' output before comparing
TRAILING_SPACE = {"chatqa", "llama2-chat", "mistral-instruct", "openchat", "vicuna"}


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_ollamas_library_templates_render_what_ollama_renders(name: str) -> None:
    """Every template of Ollama's library folder, over the chats of its test data, byte for byte."""
    entry = LIBRARY[name]
    for chat, expected in entry["renders"].items():
        got = render(entry["template"], CHATS[chat])
        if name in TRAILING_SPACE and got.endswith(" "):
            got = got[:-1]
        assert got == expected, (name, chat)


MISTRAL_MESSAGES = """[INST] {{ if .System }}{{ .System }}

{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}{{ .Content }}[/INST] {{ else if eq .Role "assistant" -}}
{{ .Content }}[INST] {{ end }}
{{- end }}"""


def test_the_whole_chat_goes_to_a_messages_template() -> None:
    """.System is every system message joined; a final assistant message is where the reply goes on."""
    chat = [
        {"role": "system", "content": "You are a helpful assistant!"},
        {"role": "user", "content": "Hello friend!"},
        {"role": "assistant", "content": "Hello human!"},
        {"role": "user", "content": "What is your name?"},
    ]
    expected = "[INST] You are a helpful assistant!\n\nHello friend![/INST] Hello human![INST] "
    expected += "What is your name?[/INST] "
    assert render(MISTRAL_MESSAGES, chat) == expected
    two_systems = [{"role": "system", "content": "A"}, {"role": "system", "content": "B"}, chat[1]]
    assert render("{{ .System }}|{{ range .Messages }}{{ .Content }};{{ end }}", two_systems) == (
        "A\n\nB|A\n\nB;Hello friend!;"  # (as Ollama: a run of one role is one message)
    )
    prefilled = [*chat, {"role": "assistant", "content": "My name"}]
    text = render(MISTRAL_MESSAGES, prefilled, prefill=prefill_of(prefilled))
    assert text.endswith("What is your name?[/INST] My name")


TOOLS_TEMPLATE = """{{- if .Tools }}<tools>{{ range .Tools }}
{{ . }}{{ end }}
</tools>
{{ end }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "assistant" }}<a>{{ if .ToolCalls }}{{ range .ToolCalls -}}
<tool_call>{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}</tool_call>
{{- end }}{{ else }}{{ .Content }}{{ end }}</a>
{{ else if eq .Role "tool" }}<r name="{{ .ToolName }}">{{ .Content }}</r>
{{ else }}<{{ .Role }}>{{ .Content }}</{{ .Role }}>
{{ end }}
{{- if and $last (ne .Role "assistant") }}<a>{{ end }}
{{- end }}"""
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather <now> & here",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    },
}
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "sunny", "name": "get_weather"},
]
TOOL_PROMPT = (
    '<tools>\n{"type":"function","function":{"name":"get_weather",'
    '"description":"Weather \\u003cnow\\u003e \\u0026 here",'
    '"parameters":{"type":"object","required":["city"],'
    '"properties":{"city":{"type":"string","description":"City name"},"days":{"type":"integer"}}}}}'
    "\n</tools>\n"
    "<user>Weather in Paris?</user>\n"
    '<a><tool_call>{"name": "get_weather", "arguments": {"city":"Paris"}}</tool_call></a>\n'
    '<r name="get_weather">sunny</r>\n<a>'
)


def test_tools_and_tool_calls_read_as_ollamas_types() -> None:
    """.Tools and .Function.Arguments print as Go's JSON (struct fields in order, map keys sorted,
    <, > and & escaped), a tool result names its tool."""
    assert render(TOOLS_TEMPLATE, TOOL_CHAT, tools=[WEATHER]) == TOOL_PROMPT
    ranged = (
        "{{ range .Messages }}{{ range .ToolCalls }}{{ range $k, $v := .Function.Arguments }}"
        "{{ $k }}={{ $v }};{{ end }}{{ end }}{{ end }}"
        "{{ range .Tools }}{{ range $n, $p := .Function.Parameters.Properties }}"
        "{{ $n }}:{{ $p.Type }}:{{ toTypeScriptType $p }};{{ end }}"
        "{{ .Function.Parameters.Required }}{{ end }}"
    )
    assert (
        render(ranged, TOOL_CHAT, tools=[WEATHER])
        == "city=Paris;city:string:string;days:integer:number;[city]"
    )
    assert render("{{ range .Messages }}{{ end }}{{ json .Tools }}", TOOL_CHAT) == "null"  # no tools: nil


def test_thinking_reaches_the_template_as_ollamas_think_values() -> None:
    """.Think, .IsThinkSet and .ThinkLevel as Ollama sets them (think true is level "medium")."""
    probe = "{{ range .Messages }}{{ end }}{{ .Think }} {{ .IsThinkSet }} [{{ .ThinkLevel }}]"
    chat = [{"role": "user", "content": "hi"}]
    assert render(probe, chat, think=False, think_set=True, think_level="") == "false true []"
    assert render(probe, chat, think=True, think_set=True, think_level="medium") == "true true [medium]"
    assert render(probe, chat) == "false false []"


def test_tool_functions_print_as_json() -> None:
    """.Function and .Function.Parameters print as JSON (what Ollama's qwen templates write)."""
    tools = (
        "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ .Function }}|{{ .Function.Parameters }}{{ end }}"
    )
    function, parameters = render(tools, TOOL_CHAT, tools=[WEATHER]).split("|")
    assert json.loads(function)["name"] == "get_weather" and function.startswith('{"name":')
    assert json.loads(parameters)["required"] == ["city"]


def test_a_turn_template_ends_at_the_last_response_as_ollama_cuts_it() -> None:
    """Only an action printing .Response ends the last turn; a test of it sees the real (empty) reply."""
    chat = [{"role": "user", "content": "q"}]
    assert render("{{ .Prompt }}{{ if not .Response }}<a>{{ end }}{{ .Response }}<end>", chat) == "q<a>"
    assert render("{{ .Prompt }}{{ with .Response }}{{ . }}{{ else }}<gen>{{ end }}", chat) == "q<gen>"
    assert render("{{ if .Prompt }}[{{ .Prompt }}]{{ .Response }}|{{ else }}x{{ end }}tail", chat) == "[q]"


def test_go_is_told_from_jinja() -> None:
    chat = [{"role": "user", "content": "q"}]
    for template in ('[INST] {{ printf "%s" .Prompt }} [/INST]', "[INST] {{ (.Prompt) }} [/INST]"):
        assert render(template, chat) == "[INST] q [/INST]", template
    assert render("{{/* nothing but a comment */}}hi", chat) == "hi"  # (Go: .Response appended, empty)
    assert render("{{ messages[0]['content'] }} {{ '$' }}", chat) == "q $"  # Jinja


def test_numbers_print_as_go_prints_them() -> None:
    assert run("{{ 1e6 }} {{ 100000.0 }} {{ 0.5 }} {{ 1234567.5 }} {{ 0.00001 }} {{ -3 }}") == (
        "1e+06 100000 0.5 1.2345675e+06 1e-05 -3"
    )


def test_tool_calls_are_read_after_the_text_the_template_writes_before_them() -> None:
    """As Ollama finds it: the first text in the template's {{ if .ToolCalls }} (Command R's)."""
    command_r = LIBRARY["command-r"]["template"]
    assert call_markers(command_r) == [("Action: ```json", None)]
    parser = ReplyParser(tools={"get_weather": WEATHER["function"]}, markers=call_markers(command_r))
    reply = 'Action: ```json\n[\n    {\n        "tool_name": "get_weather",\n'
    reply += '        "parameters": {"city": "Paris"}\n    }\n]```'
    parts = parser.feed(reply)
    assert [c["function"] for c in parts.calls] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    mistral = "{{ range .Messages }}{{ if .ToolCalls }}[TOOL_CALLS] [{{ range .ToolCalls }}{{ end }}]"
    mistral += "{{ end }}{{ end }}"
    assert call_markers(mistral) == [("[TOOL_CALLS]", None)]
    assert call_markers(LIBRARY["llama3-instruct"]["template"]) == []  # (no calls written: none)


def run(source: str, data: object = None) -> str:
    return execute(parse(source), data)


def test_the_language() -> None:
    data = {"Items": ["a", "b", "c"], "M": {"z": 1, "a": 2}, "N": None, "S": "x<y"}
    cases = {
        "{{/* a comment */}}t": "t",
        "a  {{- /* trimmed */ -}}  b": "ab",
        "{{ range $i, $v := .Items }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ $v }}{{ end }}": "ac",
        '{{ range .Items }}{{ if eq . "b" }}{{ break }}{{ end }}{{ . }}{{ end }}': "a",
        "{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}": "a2z1",  # a map ranges in key order
        "{{ range .N }}x{{ else }}none{{ end }}": "none",
        "{{ with .S }}{{ . }}{{ else }}-{{ end }}|": "x<y|",
        "{{ with .N }}{{ . }}{{ else with .S }}{{ len . }}{{ end }}": "3",
        "{{ $x := 1 }}{{ range .Items }}{{ $x = 2 }}{{ end }}{{ $x }}": "2",  # = sets the outer variable
        "{{ if and .N (index .N 0) }}y{{ else }}n{{ end }}": "n",  # and stops at its first false
        '{{ or .N "fallback" }}|{{ not .N }}|{{ eq 2 1 2 }}': "fallback|true|true",
        "{{ ne 1 1 }}|{{ lt 1 2 }}": "false|true",
        "{{ index .Items 2 }}{{ slice .Items 1 }}{{ slice .S 0 1 }}{{ len .M }}": "c[b c]x2",
        '{{ printf "%s=%d %q %v" "k" 7 "q" .Items }}|{{ print 1 2 "s" 3 }}': 'k=7 "q" [a b c]|1 2s3',
        '{{ .Items | len | printf "%d items" }}': "3 items",
        "{{ (index .Items 0) }}{{ (.M).a }}{{ json .S }}": 'a2"x\\u003cy"',
        "{{ range 3 }}{{ . }}{{ end }}": "012",
        "{{ .M }} {{ 1.5 }} {{ 2.0 }} {{ true }} {{ `raw\\n` }}": "map[a:2 z:1] 1.5 2 true raw\\n",
    }
    for source, expected in cases.items():
        assert run(source, data) == expected, source


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("{{ .Prompt ", "unclosed action"),
        ('{{ range .X }}{{ end }}{{define "x"}}{{end}}{{template "x"}}', "named templates"),
        ("{{ if .X }}", "has no end"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ nosuch .X }}", 'function "nosuch" not defined'),
        ("{{ $y }}", 'undefined variable "$y"'),
        ("{{ if .X }}{{ else }}{{ break }}{{ end }}", "{{break}} outside {{range}}"),
        ("{{ " + "(" * 3000 + ".X" + ")" * 3000 + " }}", "nested too deeply"),
        (
            "{{ range $i := 254 }}{{ range $j := 254 }}{{ range $k := 254 }}{{ end }}{{ end }}{{ end }}",
            "too long",
        ),
        ("{{ printf `%0200000000d` .X }}", "over 1000"),
        ('{{ $s := "ab" }}{{ range $i := 40 }}{{ $s = printf "%s%s" $s $s }}{{ end }}', "longer than"),
        ("line\n{{ if }}", "line 2: missing value"),
        ("{{ range $i := 1000000 }}{{ end }}", "more than"),
        ("{{ range $i := 90000 }}{{ range $j := 90000 }}{{ printf `%0100d` 1 }}{{ end }}{{ end }}", "passed"),
        ('{{ lt .X "a" }}', "incompatible types"),
    ],
)
def test_a_template_that_cannot_run_is_a_clear_400(source: str, needle: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_template(source)
        render(source, [{"role": "user", "content": "hi"}])
    assert needle in str(caught.value), str(caught.value)
