"""The pure-Python shared layer: names, options, keep_alive, templates, Modelfiles, the GGUF reader."""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrousforge.chat_format import GEMMA_TEMPLATE, prefill_of, render
from ferrousforge.errors import BadRequest
from ferrousforge.gguf import GGUFError, adds_bos, read_file_metadata, read_metadata, summarize
from ferrousforge.modelfile import Modelfile
from ferrousforge.names import ModelName
from ferrousforge.options import Options, parse_keep_alive
from ferrousforge.reply import Parts, ReplyParser, call_markers


@pytest.mark.parametrize(
    ("text", "display", "parts"),
    [
        ("gemma3:270m", "gemma3:270m", ("local", "library", "gemma3", "270m")),
        ("gemma3", "gemma3:latest", ("local", "library", "gemma3", "latest")),
        ("me/model:v1.2", "me/model:v1.2", ("local", "me", "model", "v1.2")),
        (
            "hf.co/acme/Repo-GGUF:Q4_K_M",
            "hf.co/acme/Repo-GGUF:Q4_K_M",
            ("hf.co", "acme", "Repo-GGUF", "Q4_K_M"),
        ),
    ],
)
def test_model_names(text: str, display: str, parts: tuple[str, ...]) -> None:
    name = ModelName.parse(text)
    assert name.display == display and name.parts == parts


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "../x",
        "a/../b",
        "/etc/passwd",
        "a\\b",
        "a/b/c/d",
        "x:",
        "x:bad/tag",
        "-x",
        "a" * 300,
        "x:..",
        "a\x00b",
        "é",
        5,
        None,
    ],
)
def test_bad_model_names(bad: object) -> None:
    with pytest.raises(BadRequest):
        ModelName.parse(bad)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_name_parser_never_yields_a_path_escape(text: str) -> None:
    try:
        name = ModelName.parse(text)
    except BadRequest:
        return
    for part in name.parts:
        assert part not in ("", ".", "..") and "/" not in part and "\\" not in part


def test_options_parse_and_ranges() -> None:
    base = Options.parse({"temperature": 0.5, "stop": ["<end>"]})
    opts = Options.parse({"num_predict": 5, "top_k": 10.0, "stop": "x", "main_gpu": 1, "num_gpu": 0}, base)
    assert (opts.temperature, opts.num_predict, opts.top_k, opts.stop) == (0.5, 5, 10, ("x",))
    assert opts.num_gpu == 0
    assert Options().num_gpu == -1 and Options(num_gpu=0).load_key() != Options().load_key()  # reloads
    for bad in (
        {"temperature": True},
        {"top_k": 1.5},
        {"top_p": float("nan")},
        {"stop": [1]},
        {"stop": ["x"] * 17},
    ):
        with pytest.raises(BadRequest):
            Options.parse(bad)
    with pytest.raises(BadRequest):
        Options.parse([1, 2])
    # Ollama's leniency: a value out of range or an unknown option is ignored (and logged)
    assert Options.parse({"num_ctx": 1, "nope": 1, "top_p": 2, "top_k": 3}) == Options(top_k=3)


def _split(parser: ReplyParser, pieces: list[str]) -> Parts:
    out = Parts()
    for piece in pieces:
        got = parser.feed(piece)
        out.thinking, out.content, out.calls = (
            out.thinking + got.thinking,
            out.content + got.content,
            out.calls + got.calls,
        )
    rest = parser.finish()
    out.thinking, out.content, out.calls = (
        out.thinking + rest.thinking,
        out.content + rest.content,
        out.calls + rest.calls,
    )
    return out


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


TOOL = {"get": {"name": "get", "parameters": {}}}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_reply_parser_splits_thinking_content_and_calls_however_the_text_streams(size: int) -> None:
    thought = _split(ReplyParser(thinking=True), _pieces("  <think>a < b</think>\n\nSo: yes </thi", size))
    assert (thought.thinking, thought.content) == ("a < b", "So: yes </thi")
    opened = _split(ReplyParser(thinking=True, in_thinking=True), _pieces("hmm</think>done", size))
    assert (opened.thinking, opened.content) == ("hmm", "done")
    unfinished = _split(ReplyParser(thinking=True, in_thinking=True), _pieces("still thinking <", size))
    assert (unfinished.thinking, unfinished.content) == ("still thinking <", "")
    not_asked = _split(ReplyParser(), _pieces("<think>x</think>y", size))
    assert not_asked.content == "<think>x</think>y"
    text = (
        'Sure.<tool_call>\n{"name": "get", "arguments": {"q": 1}}\n</tool_call>\n'
        '<tool_call>{"name": "get", "arguments": "{}"}</tool_call>'
    )
    marked = _split(ReplyParser(tools=TOOL, markers=call_markers("<tool_call>")), _pieces(text, size))
    assert marked.content.strip() == "Sure."
    assert [c["function"]["arguments"] for c in marked.calls] == [{"q": 1}, {}]
    mistral = _split(
        ReplyParser(tools=TOOL, markers=call_markers("[TOOL_CALLS]")),
        _pieces(
            '[TOOL_CALLS][{"name": "get", "arguments": {}}, {"name": "get", "arguments": {"x": 2}}]', size
        ),
    )
    assert len(mistral.calls) == 2 and mistral.content == ""
    granite = _split(
        ReplyParser(tools=TOOL, markers=call_markers("{{ if .ToolCalls }}<|tool_call|>{{ end }}")),
        _pieces('<|tool_call|>[{"name": "get", "arguments": {"x": 1}}]', size),
    )
    assert [c["function"]["arguments"] for c in granite.calls] == [{"x": 1}] and granite.content == ""
    plain = _split(
        ReplyParser(tools=TOOL),
        _pieces('{"name": "get", "arguments": {}}\n{"name": "get", "arguments": {"a": [1]}}', size),
    )
    assert len(plain.calls) == 2 and plain.content.strip() == ""
    answer = _split(ReplyParser(tools=TOOL), _pieces('{"name": "other", "arguments": {}} is JSON', size))
    assert answer.calls == [] and answer.content == '{"name": "other", "arguments": {}} is JSON'
    wrong = _split(
        ReplyParser(tools=TOOL, markers=call_markers("<tool_call>")),
        _pieces("<tool_call>oops</tool_call>!", size),
    )
    assert wrong.calls == [] and wrong.content == "<tool_call>oops</tool_call>!"
    assert len({c["id"] for c in marked.calls}) == 2


def test_reply_parser_gives_out_a_call_before_the_reply_ends() -> None:
    parser = ReplyParser(tools=TOOL)
    first = parser.feed('{"name": "get", "arguments": {}}\n{"name": "ge')
    assert len(first.calls) == 1
    assert len(parser.feed('t", "arguments": {}}').calls) == 1
    prose = ReplyParser(tools=TOOL, markers=call_markers("<tool_call>")).feed("Hello <tool")
    assert prose.content == "Hello "  # only what could begin the markup is held back
    # with nothing to recognise at the start, whitespace streams as it comes (a reply may be all newlines)
    assert ReplyParser().feed("\n\n").content == "\n\n"
    assert ReplyParser(thinking=True).feed("\n\n").content == ""  # it may still open <think>


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("10s", 10.0),
        ("0", 0.0),
        (0, 0.0),
        (12, 12.0),
        ("-1", None),
        (-1, None),
        ("-5m", None),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("99999999h", None),  # past Go's longest duration (~292 years): forever
        (1e20, None),
    ],
)
def test_keep_alive(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value, 300.0) == seconds


@pytest.mark.parametrize("bad", ["soon", "5x", "m5", True, [1], float("inf")])
def test_bad_keep_alive(bad: object) -> None:
    with pytest.raises(BadRequest):
        parse_keep_alive(bad)


def test_gemma_template_renders_gemma_turns() -> None:
    text = render(
        GEMMA_TEMPLATE,
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ],
        bos_token="<bos>",
    )
    assert text == (
        "<start_of_turn>user\nBe kind.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_a_leading_bos_stays_where_the_tokenizer_adds_none() -> None:
    """SmolLM2's BOS is <|im_start|>, which opens every turn, and its GGUF says add_bos_token false:
    the template's first token must stay (llama.cpp adds no BOS of its own there)."""
    chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    smollm2 = {"bos_token": "<|im_start|>", "model_info": {"tokenizer.ggml.add_bos_token": False}}
    gemma = {"bos_token": "<bos>", "model_info": {"tokenizer.ggml.add_bos_token": True}}
    assert not adds_bos(smollm2) and adds_bos(gemma) and adds_bos({}) and adds_bos({"model_info": {}})
    turn = [{"role": "user", "content": "Hi"}]
    kept = render(chatml, turn, bos_token="<|im_start|>", strip_bos=adds_bos(smollm2))
    assert kept == "<|im_start|>user\nHi<|im_end|>\n"
    assert render(chatml, turn, bos_token="<|im_start|>") == "user\nHi<|im_end|>\n"


def test_the_results_of_one_round_of_calls_are_one_turn() -> None:
    """Parallel calls' results are one user turn, so roles still alternate (Gemma's and Mistral's
    official templates refuse two user turns in a row)."""
    from ferrousforge.tools import as_plain_turns

    call = {"function": {"name": "get", "arguments": {}}}
    chat = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [call, call]},
        {"role": "tool", "content": "1", "name": "get"},
        {"role": "tool", "content": "2", "name": "get"},
    ]
    turns = as_plain_turns(chat, TOOL)
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[-1]["content"] == "Tool result from get: 1\n\nTool result from get: 2"


def test_go_templates_render_and_bad_ones_are_refused() -> None:
    tpl = "{{ if .System }}[{{ .System }}]{{ end }}{{ .Prompt }}"
    assert render(tpl, [{"role": "system", "content": "S"}, {"role": "user", "content": "P"}]) == "[S]P"
    assert render(tpl, [{"role": "user", "content": "P"}]) == "P"
    assert render("{{ range .Messages }}{{ .Role }}{{ end }}", [{"role": "user", "content": "P"}]) == "user"
    for bad in ("{% for %}", "{{ if }}", "{{ end }}", "x {{- range $i := .Messages }}"):
        with pytest.raises(BadRequest):
            render(bad, [{"role": "user", "content": "P"}])


CLASSIC_CHATML = (  # an Ollama template of the .System/.Prompt/.Response kind
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)


def test_classic_go_templates_render_a_turn_at_a_time_as_ollama() -> None:
    """Ollama executes such a template once for each exchange and, for the last, only up to its
    .Response: every turn is in the prompt, it ends where the reply goes, whitespace as written."""
    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]
    head = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu1<|im_end|>\n"
    head += "<|im_start|>assistant\na1<|im_end|>\n"
    tail = "<|im_start|>user\nu2<|im_end|>\n<|im_start|>assistant\n"
    assert render(CLASSIC_CHATML, chat) == head + tail
    prefilled = [*chat, {"role": "assistant", "content": "The"}]  # the reply goes on from "The"
    assert render(CLASSIC_CHATML, prefilled, prefill=prefill_of(prefilled)) == head + tail + "The"
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]  # joined, as collated
    assert render(CLASSIC_CHATML, two_users) == "<|im_start|>user\na\n\nb<|im_end|>\n<|im_start|>assistant\n"
    assert render("{{ .Prompt }}", [{"role": "user", "content": "hi"}]) == "hi"  # no .Response: all of it
    with pytest.raises(BadRequest):
        render("{{ raise_exception('no system role') }}", [])


def test_modelfile_parse() -> None:
    mf = Modelfile.parse(
        '# c\nFROM ./m.gguf\nPARAMETER temperature 0.2\nPARAMETER stop "<e>"\nPARAMETER stop x\n'
        'TEMPLATE """{{ .Prompt }}\nline2"""\nSYSTEM hello\n'
    )
    assert mf.source == "./m.gguf"
    assert mf.parameters == {"temperature": 0.2, "stop": ["<e>", "x"]}
    assert mf.template == "{{ .Prompt }}\nline2" and mf.system == "hello"
    assert Modelfile.parse("FROM a\nADAPTER ./one.gguf\nADAPTER two.gguf").adapters == [
        "./one.gguf",
        "two.gguf",
    ]
    for bad in ("PARAMETER x 1", "FROM a\nDRAFT b", 'FROM a\nSYSTEM """never closed', "FROM"):
        with pytest.raises(BadRequest):
            Modelfile.parse(bad)
    chat = Modelfile.parse(
        'FROM a\nMESSAGE user Is Toronto in Canada?\nMESSAGE assistant "yes"\nMESSAGE user """two\nlines"""\n'
    )
    assert chat.messages == [
        {"role": "user", "content": "Is Toronto in Canada?"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "two\nlines"},
    ]
    with pytest.raises(BadRequest, match="MESSAGE role must be one of system, user, assistant"):
        Modelfile.parse("FROM a\nMESSAGE robot hi\n")


def test_gguf_reader_reads_the_tiny_model(tiny_gguf: Path) -> None:
    meta = read_file_metadata(str(tiny_gguf), frozenset({"tokenizer.ggml.tokens"}))
    summary = summarize(meta)
    assert summary["model_family"] == "llama"
    assert summary["context_length"] == 2048
    assert summary["bos_token"] == "<s>" and summary["eos_token"] == "</s>"
    assert "<|im_start|>" in summary["chat_template"]
    assert "tokenizer.ggml.tokens" not in summary["model_info"]


def test_gguf_reader_knows_every_tensor_type(tmp_path: Path) -> None:
    """Sizes as ggml's for every type a file may hold (BF16 from a safetensors import, Q5_K and Q3_K
    in Q5_K_M and Q3_K_M models, IQ types...), so that show's tensors and adapter checks read them."""
    import gguf
    import numpy as np

    from ferrousforge.gguf import FILE_TYPES, TENSOR_TYPES, read_file_tensors

    for kind, (name, per, block) in TENSOR_TYPES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)] == (per, block), name
    named = {t.value for t in gguf.LlamaFileType if t.value < 39 and t.name != "GUESSED"}
    assert named <= set(FILE_TYPES)  # every file type llama.cpp writes has its name in show
    writer = gguf.GGUFWriter(tmp_path / "types.gguf", "llama")
    for kind, (name, per, block) in TENSOR_TYPES.items():
        raw = np.zeros((2, 512 // per * block), dtype=np.uint8)  # two rows of 512 values
        writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType(kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _, tensors = read_file_tensors(str(tmp_path / "types.gguf"))
    assert {t.kind for t in tensors.values()} == {name for name, _, _ in TENSOR_TYPES.values()}
    sizes = {name: (per, block) for name, per, block in TENSOR_TYPES.values()}
    for t in tensors.values():
        per, block = sizes[t.kind]
        assert t.shape == (512, 2) and t.nbytes == 2 * 512 // per * block, t.name


def test_gguf_reader_rejects_truncated_and_foreign_files(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    header_end = 4000
    for cut in (0, 3, 10, 30, 200, header_end):
        with pytest.raises(GGUFError):
            read_metadata(io.BytesIO(data[:cut]), cut)
    with pytest.raises(GGUFError):
        read_metadata(io.BytesIO(b"PK\x03\x04" + data[4:]), len(data))
    huge_count = b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40)
    with pytest.raises(GGUFError):
        read_metadata(io.BytesIO(huge_count), len(huge_count))


@given(st.binary(max_size=512), st.integers(min_value=0, max_value=600))
@settings(max_examples=400, deadline=None)
def test_gguf_reader_fuzz_only_raises_gguf_errors(tail: bytes, flip: int) -> None:
    data = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 1, 3) + tail)
    if flip < len(data):
        data[flip] ^= 0xFF
    with contextlib.suppress(GGUFError):
        read_metadata(io.BytesIO(bytes(data)), len(data))


def test_catalogue_names_match_whatever_their_case() -> None:
    from ferrousforge.catalogue import lookup

    assert lookup("SmolLM2:135M") is lookup("smollm2:135m") is not None
    assert lookup("nothing:here") is None


def test_an_empty_engine_is_auto_and_names_read_in_any_case() -> None:
    assert Options.parse({"engine": ""}).engine == "auto"
    assert Options.parse({"engine": "WGPU"}).engine == "wgpu"
    assert Options.parse({"engine": "ONNX"}).engine == "onnxruntime"
    with pytest.raises(BadRequest, match="must be one of"):
        Options.parse({"engine": "tpu"})
