"""The ``ferrousforge`` command, run as a real subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from ferrousforge_host.config import load_settings

from conftest import Host

CLI = [sys.executable, "-m", "ferrousforge_host.cli"]


def ff(host: Host, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FERROUSFORGE_HOST": host.url.removeprefix("http://"), "COLUMNS": "120"}
    given: dict[str, object] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120, **given)  # type: ignore[call-overload]


def test_list_show_ps_cp_rm(host: Host) -> None:
    out = ff(host, "list")
    assert out.returncode == 0 and "tiny:latest" in out.stdout
    show = ff(host, "show", "tiny")
    assert "llama" in show.stdout and "completion" in show.stdout
    assert "<|im_start|>" in ff(host, "show", "tiny", "--template").stdout
    assert ff(host, "cp", "tiny", "copy").returncode == 0
    assert "copy:latest" in ff(host, "list").stdout
    assert ff(host, "cp", "tiny", "Copy:V1").returncode == 0
    rows = [line.split()[0] for line in ff(host, "list").stdout.splitlines()[1:]]
    assert rows[:2] == ["Copy:V1", "copy:latest"]  # newest first, as Ollama lists
    assert ff(host, "cp", "tiny", "copy:v1").returncode == 0  # the same name in another case: renamed
    listed = ff(host, "list").stdout
    assert "copy:v1" in listed and "Copy:V1" not in listed
    for name in ("copy", "copy:v1"):
        assert ff(host, "rm", name).returncode == 0
    assert "copy:" not in ff(host, "list").stdout
    assert "NAME" in ff(host, "ps").stdout


def test_piped_tables_keep_a_row_a_line(host: Host) -> None:
    env = {**os.environ, "FERROUSFORGE_HOST": host.url.removeprefix("http://"), "COLUMNS": "30"}
    assert ff(host, "run", "tiny", "hi").returncode == 0
    for command in ("list", "ps"):
        out = subprocess.run([*CLI, command], capture_output=True, text=True, env=env, timeout=60)
        row = next(line for line in out.stdout.splitlines() if "tiny:latest" in line)
        assert len(row.split()) >= 5  # the name whole, and the row not folded under it
    ps = subprocess.run([*CLI, "ps"], capture_output=True, text=True, env=env, timeout=60).stdout
    assert "minutes from now" in ps


def test_show_modelfile_makes_a_modelfile_as_it_is(host: Host, tmp_path: Path) -> None:
    """``show --modelfile > Modelfile`` is how a new Modelfile starts: long lines stay whole, however
    narrow the terminal, and ``create`` takes the result."""
    long = "Answer as a pirate would, in a long and winding sentence that goes well past eighty columns."
    first = tmp_path / "Modelfile"
    first.write_text(f"FROM tiny\nSYSTEM {long}\n")
    assert ff(host, "create", "pirate", "-f", str(first)).returncode == 0
    env = {**os.environ, "FERROUSFORGE_HOST": host.url.removeprefix("http://"), "COLUMNS": "40"}
    shown = subprocess.run([*CLI, "show", "pirate", "--modelfile"], capture_output=True, text=True, env=env)
    assert long in shown.stdout
    again = tmp_path / "Modelfile.again"
    again.write_text(shown.stdout)
    made = ff(host, "create", "pirate2", "-f", str(again))
    assert made.returncode == 0, made.stderr
    assert ff(host, "show", "pirate2", "--system").stdout.strip() == long


def test_ps_and_list_word_time_as_ollama() -> None:
    from datetime import UTC, datetime

    from ferrousforge_host.cli import ago, until

    now = 1_800_000_000.0

    def at(seconds: float) -> str:
        return datetime.fromtimestamp(now + seconds, UTC).isoformat().replace("+00:00", "Z")

    assert until(at(299.4), now) == "4 minutes from now"
    assert until(at(75), now) == "About a minute from now"
    assert until(at(30), now) == "30 seconds from now"
    assert until(at(0.5), now) == "Less than a second from now"
    assert until(at(3 * 3600), now) == "3 hours from now"
    assert until(at(-2), now) == "Stopping..."
    assert until(at(300 * 365 * 86400), now) == "Forever"  # kept loaded (keep_alive -1) or busy
    assert until("0001-01-01T00:00:00Z", now) == "Forever"
    assert ago(at(-2 * 3600 - 5), now) == "2 hours ago"  # list's MODIFIED
    assert ago(at(-3 * 86400), now) == "3 days ago"


def test_help_reads_as_prose() -> None:
    """Every command's help: its docstring's code spans rendered, not shown as ``marks``; each option
    says what it does."""
    import typer
    from typer.testing import CliRunner

    from ferrousforge_host.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert top.exit_code == 0 and "``" not in top.output
    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert "``" not in text, name
        options = [line.strip("│ ") for line in text.splitlines() if line.startswith("│ --")]
        assert options, name
        undocumented = [line.split()[0] for line in options if line.endswith(">")]  # "--x  <type>" alone
        assert not undocumented, (name, undocumented)
    assert "myhost:5000/team/model" in runner.invoke(app, ["push", "--help"], env={"COLUMNS": "200"}).output


def test_run_streams_a_completion_then_stop_unloads(host: Host) -> None:
    out = ff(host, "run", "tiny", "the", "cat")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) > 0 and out.stderr == ""  # timings only with --verbose
    assert "tiny:latest" in ff(host, "ps").stdout
    assert ff(host, "stop", "tiny").returncode == 0
    assert "tiny:latest" not in ff(host, "ps").stdout


def test_run_reads_a_piped_prompt(host: Host) -> None:
    out = ff(host, "run", "tiny", stdin="hello from a pipe")
    assert out.returncode == 0 and out.stdout.strip()

    def prompt_tokens(*args: str, stdin: str | None = None) -> int:
        out = ff(host, "run", "tiny", *args, "--verbose", stdin=stdin)
        assert out.returncode == 0, out.stderr
        lines = dict(line.split(":", 1) for line in out.stderr.splitlines() if ":" in line)
        return int(lines["prompt eval count"].split()[0])

    # as ollama run: the piped text, then the arguments (cat notes.txt | ollama run m "summarize this")
    piped, argued = prompt_tokens(stdin="the cat sat"), prompt_tokens("one", "of", "the")
    assert prompt_tokens("one", "of", "the", stdin="the cat sat") > max(piped, argued)


def test_errors_are_one_line_and_exit_non_zero(host: Host, tmp_path: Path) -> None:
    out = ff(host, "show", "ghost")
    assert out.returncode == 1
    assert out.stderr.strip() == "Error: model 'ghost:latest' not found"
    out = ff(host, "rm", "../etc")
    assert out.returncode == 1 and "invalid model name" in out.stderr
    env = {**os.environ, "FERROUSFORGE_HOST": "127.0.0.1:1"}
    out = subprocess.run([*CLI, "list"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "could not connect" in out.stderr and "Traceback" not in out.stderr
    out = ff(host, "create", "x", "-f", str(tmp_path / "missing"))
    assert out.returncode == 1 and "no Modelfile" in out.stderr


def test_pull_shows_progress_and_create_uploads_a_local_gguf(
    host: Host, tiny_gguf_plain: Path, tmp_path: Path
) -> None:
    out = ff(host, "pull", "fromfile", "--from", str(tiny_gguf_plain))
    assert out.returncode == 0, out.stderr
    assert "pulling" in out.stderr and "success" not in out.stdout
    steps = [line.split()[0:2] for line in out.stderr.splitlines() if line.strip()]
    at = {" ".join(step): i for i, step in reversed(list(enumerate(steps)))}
    bar = next(i for i, step in enumerate(steps) if step[0] == "pulling" and step[1] != "manifest")
    assert at["pulling manifest"] < bar < at["verifying sha256"] < at["writing manifest"], (
        out.stderr
    )  # in order
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(
        f'FROM {tiny_gguf_plain}\nPARAMETER num_predict 3\nSYSTEM """Be\nterse."""\n'
        'LICENSE MIT\nLICENSE "Apache-2.0"\n'
    )
    out = ff(host, "create", "made", "-f", str(modelfile))
    assert out.returncode == 0, out.stderr
    assert "success" in out.stderr
    assert "Be\nterse." in ff(host, "show", "made", "--system").stdout
    assert "System\nBe\nterse." in ff(host, "show", "made").stdout  # among the details, as ollama show
    assert "num_predict" in ff(host, "show", "made", "--parameters").stdout
    assert ff(host, "show", "made", "--license").stdout == "MIT\n\nApache-2.0\n"  # each LICENSE kept
    (tmp_path / "Shown").write_text(ff(host, "show", "made", "--modelfile").stdout)  # round trip
    assert ff(host, "create", "made-again", "-f", str(tmp_path / "Shown")).returncode == 0
    assert ff(host, "show", "made-again", "--license").stdout == "MIT\n\nApache-2.0\n"
    out = ff(host, "create", "made-q8", "-f", str(modelfile), "-q", "q8_0")
    assert out.returncode == 0 and "quantizing F32 model to Q8_0" in out.stderr, out.stderr
    assert "Q8_0" in ff(host, "show", "made-q8").stdout


def chat_cli(host: Host, model: str, **env_vars: str) -> pexpect.spawn:
    """``run MODEL`` in a terminal of its own: an interactive chat."""
    env = {**os.environ, "FERROUSFORGE_HOST": host.url.removeprefix("http://"), **env_vars}
    return pexpect.spawn(CLI[0], [*CLI[1:], "run", model], env=env, encoding="utf-8", timeout=60)


def converse(child: pexpect.spawn, steps: list[tuple[str, str | None]]) -> None:
    """At each prompt, send a line and wait for what it must print (None: nothing in particular)."""
    for line, answer in steps:
        child.expect(">>> ")
        child.sendline(line)
        if answer:
            child.expect_exact(answer)


def test_the_chat_prompt_edits_lines_and_remembers_messages_across_chats(host: Host, tmp_path: Path) -> None:
    """As ollama run: the up arrow brings back the last message, of this chat or an earlier one
    (~/.ferrousforge/history), and OLLAMA_NOHISTORY keeps none."""
    history = tmp_path / ".ferrousforge" / "history"
    child = chat_cli(host, "tiny", HOME=str(tmp_path))
    converse(child, [("the first message", None), ("/bye", None)])
    child.expect(pexpect.EOF)
    assert "the first message" in history.read_text()
    child = chat_cli(host, "tiny", HOME=str(tmp_path))
    child.expect(">>> ")
    child.send("\x1b[A\x1b[A")  # up, up: past its /bye, the earlier chat's message, to send again
    child.expect_exact("the first message")
    child.sendline(" again")
    child.expect(">>> ")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    assert "the first message again" in history.read_text()
    child = chat_cli(host, "tiny", HOME=str(tmp_path), OLLAMA_NOHISTORY="1")
    converse(child, [("not kept", None), ("/bye", None)])
    child.expect(pexpect.EOF)
    assert "not kept" not in history.read_text()


def test_interactive_chat_until_ctrl_d(host: Host) -> None:
    child = chat_cli(host, "tiny")
    child.expect(">>> ")
    child.sendline("hello there")
    child.expect(">>> ")
    assert len(child.before.strip()) > len("hello there")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_run_verbose_prints_ollamas_timings(host: Host) -> None:
    out = ff(host, "run", "tiny", "the", "cat", "--verbose")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(":", 1) for line in out.stderr.splitlines() if ":" in line)
    assert list(lines)[:2] == ["total duration", "load duration"]
    assert int(lines["eval count"].split()[0]) > 0 and lines["eval rate"].strip().endswith("tokens/s")
    assert int(lines["prompt eval count"].split()[0]) > 0


def test_run_an_embedding_model_prints_its_vector(host: Host, tmp_path: Path) -> None:
    from tinymodel import write_tiny_bert

    bert = write_tiny_bert(tmp_path / "bert.gguf")
    assert ff(host, "pull", "tiny-bert", "--from", str(bert)).returncode == 0
    out = ff(host, "run", "tiny-bert", "hello world")
    assert out.returncode == 0, out.stderr
    vector = json.loads(out.stdout)
    assert len(vector) == 32 and abs(sum(v * v for v in vector) - 1) < 1e-4  # tiny-bert: 32 wide, normalised
    assert len(json.loads(ff(host, "run", "tiny-bert", "hello", "--dimensions", "8").stdout)) == 8


def test_run_shows_thinking_apart_or_hides_it(host: Host, tmp_path: Path) -> None:
    from tinymodel import THINKING_CHATML, write_tiny_llama

    gguf = write_tiny_llama(tmp_path / "thinker.gguf", chat_template=THINKING_CHATML)
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {gguf}\nPARAMETER num_predict 6\nPARAMETER temperature 0\n")
    assert ff(host, "create", "thinker", "-f", str(modelfile)).returncode == 0
    shown = ff(host, "run", "thinker", "hi", "--think")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Thinking...\n") and len(shown.stdout.strip()) > len("Thinking...")
    hidden = ff(host, "run", "thinker", "hi", "--think", "--hidethinking")
    assert hidden.returncode == 0 and hidden.stdout.strip() == ""  # the tiny thinker only thinks
    plain = ff(host, "run", "thinker", "hi", "--no-think")
    assert "Thinking..." not in plain.stdout and plain.stdout.strip()
    # as ollama run reads --think: alone (before the prompt too), =false, or a level
    assert ff(host, "run", "thinker", "--think", "hi").stdout == shown.stdout
    assert ff(host, "run", "thinker", "hi", "--think=false").stdout == plain.stdout
    assert ff(host, "run", "thinker", "hi", "--think=high").stdout.startswith("Thinking...\n")
    wrong = ff(host, "run", "thinker", "hi", "--think=lots")
    assert wrong.returncode == 1 and "--think=lots: one of true, false, low, medium, high" in wrong.stderr


def test_interactive_slash_commands(host: Host) -> None:
    """Ollama's commands in the chat: help, /set parameter (checked as a request option would be),
    /set system, /show, /set verbose, a triple-quoted multi-line message and /clear."""
    child = chat_cli(host, "tiny")
    converse(
        child,
        [
            ("/?", "/set parameter NAME VALUE"),
            ("/set parameter num_predict 3", "Set parameter 'num_predict' to '3'"),
            ("/set parameter warmth 1", "unknown parameter 'warmth'"),
            ("/set parameter num_ctx many", "Couldn't set parameter"),
            ("/set system Be brief.", "Set system message."),
            ("/show system", "Be brief."),
            ("/show parameters", "num_predict"),
            ("/show info", "architecture"),
            ("/set verbose", "Set 'verbose' mode."),
            ("/nonsense", "Unknown command '/nonsense'"),
        ],
    )
    child.expect(">>> ")
    child.sendline('"""the')
    child.expect_exact("... ")
    child.sendline('cat"""')
    child.expect_exact("eval count:           3 token(s)")  # num_predict held, verbose on
    child.expect(">>> ")
    child.sendline("/clear")
    child.expect_exact("Cleared session context")
    child.expect(">>> ")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_interactive_save_and_load(host: Host) -> None:
    """/save makes a model of the session (system, parameters, messages); /load switches to a model,
    and a model that isn't there is an error line, not the end of the chat."""
    child = chat_cli(host, "tiny")
    converse(
        child,
        [
            ("/set system Be brief.", "Set system message."),
            ("/set parameter num_predict 3", "Set parameter 'num_predict' to '3'"),
            ("/set format json", "Set format to 'json' mode."),
            ("/set noformat", "Disabled format."),
            ("/set think high", "Set 'think' mode to 'high'."),
            ("/set think lots", "Usage: /set think [low|medium|high]"),
            ("/set nothink", "Set 'nothink' mode."),
            ("/set nowordwrap", "Set 'nowordwrap' mode."),
            ("hello there", None),
            ("/save session", "Created new model 'session'"),
            ("/load ghost", "error: model 'ghost:latest' not found"),
            ("/load session", "Loading model 'session'"),
            ("/show system", "Be brief."),
        ],
    )
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    modelfile = ff(host, "show", "session", "--modelfile").stdout
    assert 'MESSAGE user """hello there"""' in modelfile and "MESSAGE assistant" in modelfile
    assert 'SYSTEM """Be brief."""' in modelfile and "num_predict" in modelfile
    again = chat_cli(host, "session")
    again.expect_exact(">>> hello there")  # the saved conversation, shown as Ollama's run shows it
    again.expect(">>> ")
    again.sendline("/bye")
    again.expect(pexpect.EOF)


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('host = "127.0.0.1:1111"\nkeep_alive = "10m"\nnum_thread = 3\n')
    monkeypatch.setenv("FERROUSFORGE_CONFIG", str(config))
    for var in ("FERROUSFORGE_HOST", "FERROUSFORGE_KEEP_ALIVE", "FERROUSFORGE_NUM_THREAD"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert (s.host, s.keep_alive, s.num_thread) == ("127.0.0.1:1111", "10m", 3)
    monkeypatch.setenv("FERROUSFORGE_KEEP_ALIVE", "1h")
    monkeypatch.setenv("FERROUSFORGE_HOST", "127.0.0.1:2222")
    s = load_settings(host="127.0.0.1:3333")
    assert (s.host, s.keep_alive, s.num_thread) == ("127.0.0.1:3333", "1h", 3)
    config.write_text("bogus = 1\n")
    with pytest.raises(Exception, match="unknown setting"):
        load_settings()


def test_every_setting_is_documented_with_its_default_and_ollamas_variable() -> None:
    """docs/configuration.md has a row for each setting: its name, Ollama's variable where one sets
    it, and its default as the code has it."""
    import dataclasses
    import re

    from ferrousforge_host.config import OLLAMA_VARIABLES, Settings

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    rows = {m[0]: m for m in re.findall(r"^\| `(\w+)` \|\s*([^|]*?)\s*\| `([^`]*)` \|", doc, re.M)}
    for f in dataclasses.fields(Settings):
        assert f.name in rows, f"docs/configuration.md has no row for {f.name}"
        default = "~/.ferrousforge/models" if f.name == "models" else str(f.default) or '""'
        assert rows[f.name][2] == default, f.name
    for variable, name in OLLAMA_VARIABLES.items():
        assert variable in rows[name][1], f"{variable} is not named beside {name}"


def test_ollamas_variables_are_read_below_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine set up for Ollama (OLLAMA_HOST, OLLAMA_KEEP_ALIVE...) serves the same way; our own
    variables win."""
    monkeypatch.setenv("FERROUSFORGE_CONFIG", "")  # no config file
    for var in ("HOST", "KEEP_ALIVE", "NUM_CTX", "NUM_PARALLEL", "MAX_LOADED_MODELS", "ORIGINS"):
        monkeypatch.delenv(f"FERROUSFORGE_{var}", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "24h")
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "8192")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")
    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "5")
    monkeypatch.setenv("OLLAMA_ORIGINS", "https://app.example.com")
    s = load_settings()
    assert s.bind == ("0.0.0.0", 11434) and s.base_url == "http://127.0.0.1:11434"
    assert (s.keep_alive, s.num_ctx, s.num_parallel, s.max_loaded_models) == ("24h", 8192, 2, 5)
    assert s.origins == "https://app.example.com"
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:11500")
    assert load_settings().bind == ("127.0.0.1", 11500)
    monkeypatch.setenv("FERROUSFORGE_HOST", "127.0.0.1:2222")
    monkeypatch.setenv("FERROUSFORGE_KEEP_ALIVE", "1m")
    s = load_settings()
    assert (s.host, s.keep_alive) == ("127.0.0.1:2222", "1m")
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "lots")
    with pytest.raises(Exception, match="OLLAMA_CONTEXT_LENGTH="):
        load_settings()


def test_ollamas_zero_means_auto_and_bad_counts_fail_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OLLAMA_NUM_PARALLEL=0 and friends are Ollama's "auto": the default here, not a server that
    answers every request with an error; a negative count or an unreadable duration is refused at
    start, naming the variable."""
    monkeypatch.setenv("FERROUSFORGE_CONFIG", "")  # no config file
    for var in ("NUM_PARALLEL", "MAX_LOADED_MODELS", "MAX_QUEUE", "NUM_CTX", "KEEP_ALIVE", "LOAD_TIMEOUT"):
        monkeypatch.delenv(f"FERROUSFORGE_{var}", raising=False)
    for var in (
        "OLLAMA_NUM_PARALLEL",
        "OLLAMA_MAX_LOADED_MODELS",
        "OLLAMA_MAX_QUEUE",
        "OLLAMA_CONTEXT_LENGTH",
    ):
        monkeypatch.setenv(var, "0")
    s = load_settings()
    assert (s.num_parallel, s.max_loaded_models, s.max_queue, s.num_ctx) == (4, 3, 512, 4096)
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "-2")
    with pytest.raises(Exception, match="OLLAMA_NUM_PARALLEL='-2': it cannot be negative"):
        load_settings()
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "abc")
    with pytest.raises(Exception, match="invalid setting OLLAMA_KEEP_ALIVE='abc'"):
        load_settings()
    monkeypatch.delenv("OLLAMA_KEEP_ALIVE")
    monkeypatch.setenv("FERROUSFORGE_ENGINE", "gguf=bogus")
    with pytest.raises(Exception, match="invalid setting FERROUSFORGE_ENGINE='gguf=bogus'"):
        load_settings()
    monkeypatch.delenv("FERROUSFORGE_ENGINE")
    # each says what it wants, of the setting it names
    for var, value, why in (
        ("OLLAMA_NUM_PARALLEL", "abc", "not a whole number"),
        ("FERROUSFORGE_LOAD_TIMEOUT", "abc", r"not a duration \(30s, 5m, 1h"),
        ("OLLAMA_FLASH_ATTENTION", "yes", r"one of auto, on, off \(or 1, 0, true, false\)"),
    ):
        monkeypatch.setenv(var, value)
        with pytest.raises(Exception, match=f"invalid setting {var}='{value}': {why}"):
            load_settings()
        monkeypatch.delenv(var)
    # a config file named and missing is an error (a typo would drop every setting in it); empty: none
    monkeypatch.setenv("FERROUSFORGE_CONFIG", str(tmp_path / "typo.toml"))
    with pytest.raises(Exception, match=r"no config file at .*typo\.toml"):
        load_settings()
    (tmp_path / "typo.toml").write_text("num_parallel = 3\n")
    assert load_settings().num_parallel == 3


def test_the_cli_sends_its_api_key(tmp_path: Path, tiny_gguf: Path) -> None:
    from conftest import start_host

    for locked in start_host(tmp_path / "store", api_keys="k1"):
        env = {"FERROUSFORGE_HOST": locked.url}
        refused = subprocess.run([*CLI, "list"], capture_output=True, text=True, env={**os.environ, **env})
        assert refused.returncode != 0 and "missing or invalid API key" in refused.stderr
        assert "FERROUSFORGE_API_KEY" in refused.stderr  # what to set
        env["FERROUSFORGE_API_KEY"] = "k1"
        made = subprocess.run(
            [*CLI, "pull", "tiny", "--from", str(tiny_gguf)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        assert made.returncode == 0, made.stderr
        listed = subprocess.run([*CLI, "list"], capture_output=True, text=True, env={**os.environ, **env})
        assert listed.returncode == 0 and "tiny:latest" in listed.stdout


def test_answers_wrap_between_words_at_the_terminals_edge() -> None:
    import io
    import re

    from ferrousforge_host.cli_run import Wrapped

    text = "the quick brown fox jumps over the lazy dog, and keeps running far far away\nnew line here\n"
    out = io.StringIO()
    wrapped = Wrapped(out, 20)
    for piece in re.findall(r".{1,3}", text, re.S):  # streamed in pieces that cut words
        wrapped.write(piece)
    wrapped.end()
    lines = out.getvalue().split("\n")
    assert max(len(line.rstrip()) for line in lines) <= 20 and len(lines) > 4
    assert out.getvalue().split() == text.split()  # no word cut or lost
    assert "new line here" in lines  # the answer's own line breaks stay


def test_run_wraps_on_a_terminal_unless_told_not_to(host: Host, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM tiny\nPARAMETER num_predict 80\nPARAMETER temperature 0\n")
    assert ff(host, "create", "talker", "-f", str(modelfile)).returncode == 0
    env = {**os.environ, "FERROUSFORGE_HOST": host.url.removeprefix("http://")}

    def widest(*flags: str) -> int:
        child = pexpect.spawn(
            CLI[0],
            [*CLI[1:], "run", "talker", "the cat", *flags],
            env=env,
            encoding="utf-8",
            dimensions=(24, 40),
        )
        child.expect(pexpect.EOF, timeout=60)
        lines = [line for line in (child.before or "").replace("\r", "").split("\n") if line.strip()]
        assert sum(len(line.split()) for line in lines) > 40  # the answer came
        return max(len(line.rstrip()) for line in lines)

    assert widest() <= 35  # ollama run's margin: five columns short of the edge
    assert widest("--nowordwrap") > 40  # one long line, broken by the terminal only


def test_serve_says_why_it_cannot_start(tmp_path: Path) -> None:
    """A taken port or an unusable store is one clear line and a non-zero exit, before any claim to
    be listening."""
    import socket

    env = {**os.environ, "FERROUSFORGE_CONFIG": "", "FERROUSFORGE_REGISTRY": ""}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env.update(FERROUSFORGE_HOST=f"127.0.0.1:{port}", FERROUSFORGE_MODELS=str(tmp_path / "store"))
        out = subprocess.run([*CLI, "serve"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in out.stderr, out.stderr
    assert "listening" not in out.stderr and "Traceback" not in out.stderr
    env["FERROUSFORGE_MODELS"] = "/proc/none/store"
    out = subprocess.run([*CLI, "serve"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0 and "cannot use /proc/none/store as the model store" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
