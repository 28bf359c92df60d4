"""The ``ferrousforge`` command: serve, run, pull, list, show, ps, info, rm, cp, create, stop,
transcribe, say."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from ferrousforge.client import Client
from ferrousforge.errors import ForgeError
from ferrousforge.modelfile import Modelfile
from ferrousforge_host import cli_run

app = typer.Typer(
    help="FerrousForge: a local model server with an Ollama-compatible API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
err = Console(stderr=True)
out = Console()


def print_table(table: Table) -> None:
    """A table folded to the terminal's width; piped, at its own width, a row a line (as scripts read
    ``list`` and ``ps``)."""
    if out.is_terminal:
        out.print(table)
        return
    from rich.measure import Measurement

    width = Measurement.get(out, out.options.update_width(1 << 14), table).maximum
    Console(file=out.file, width=max(width, out.width)).print(table)  # (print's width stops at the console's)


def client(host: str | None = None) -> Client:
    from ferrousforge_host.config import load_settings

    return Client(host or load_settings().base_url)


HostOption = Annotated[str | None, typer.Option("--host", help="Server address (FERROUSFORGE_HOST).")]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind, HOST:PORT.")] = None,
    models: Annotated[Path | None, typer.Option(help="Model store folder (FERROUSFORGE_MODELS).")] = None,
    pull: Annotated[
        list[str] | None, typer.Option("--pull", help="Pull these models before serving.")
    ] = None,
    ray: Annotated[
        bool, typer.Option("--ray", help="Serve as a Ray Serve application (docs/cluster.md).")
    ] = False,
    address: Annotated[
        str | None, typer.Argument(help="With --ray: the Ray cluster's address; none starts a local Ray.")
    ] = None,
) -> None:
    """Start the server."""
    import uvicorn

    from ferrousforge.names import ModelName
    from ferrousforge_host.app import create_app
    from ferrousforge_host.config import load_settings
    from ferrousforge_host.logs import DEBUG_ENV, configure_logging
    from ferrousforge_host.models.pull import Puller

    settings = load_settings(host=host, models=models)
    configure_logging(bool(settings.debug))
    os.environ[DEBUG_ENV] = str(settings.debug)  # runner processes log as the server does
    app_ = create_app(settings)
    for name in pull or []:
        parsed = ModelName.parse(name)
        if not app_.state.store.exists(parsed):  # a puller of its own: its locks belong to this loop
            puller = Puller(app_.state.store, registry=app_.state.models.puller.registry)
            _show_progress(_drain(puller.pull(parsed)), name)
    bind_host, port = settings.bind
    if address and not ray:
        raise ForgeError(f"'{address}': a cluster address goes with --ray")
    if not ray or address is None:  # here: on a cluster, the proxies and the store are on its nodes
        _check_free(bind_host, port)  # first: a second server on a busy port must not prune its work
        if not os.environ.get("OLLAMA_NOPRUNE"):  # what a pull or create cut short left, as Ollama
            app_.state.store.prune()
    if ray:  # the ingress builds its own app over the same store
        from ferrousforge_host.cluster import serve_on_ray

        err.print(f"FerrousForge on Ray Serve at http://{bind_host}:{port} (models in {settings.models})")
        serve_on_ray(settings, address)
        return
    err.print(f"FerrousForge listening on http://{bind_host}:{port} (models in {settings.models})")
    uvicorn.run(app_, host=bind_host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def _check_free(host: str, port: int) -> None:
    """Say, before claiming to listen, that the address is taken (uvicorn would only log it)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ForgeError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server running there? "
                "FERROUSFORGE_HOST or OLLAMA_HOST sets the address)"
            ) from None


def _drain(start: Any) -> Iterator[dict[str, Any]]:
    """Run a coroutine returning an async event stream from synchronous code, yielding each event."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        events = loop.run_until_complete(start)
        while True:
            try:
                yield loop.run_until_complete(anext(events))
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def _show_progress(events: Iterator[dict[str, Any]], name: str, done: str = "pulled") -> None:
    """Each file's bar, and each step's line, in the order they happen (as ollama pull prints them):
    a step's line ends the bars above it."""
    bar: Progress | None = None
    tasks: dict[str, Any] = {}
    try:
        for event in events:
            digest = event.get("digest")
            if digest and "total" in event:
                if bar is None:
                    columns = (
                        TextColumn("{task.description}"),
                        BarColumn(),
                        DownloadColumn(),
                        TransferSpeedColumn(),
                    )
                    bar = Progress(*columns, console=err, transient=False)
                    bar.start()
                if digest not in tasks:
                    tasks[digest] = bar.add_task(event["status"], total=event["total"] or None)
                bar.update(tasks[digest], completed=event.get("completed", 0), total=event["total"] or None)
            elif event.get("status") and event["status"] != "success":
                if bar is not None:
                    bar.stop()
                    bar, tasks = None, {}
                err.print(event["status"])
    finally:
        if bar is not None:
            bar.stop()
    err.print(f"{done} {name}")


@app.command()
def pull(
    model: str,
    source: Annotated[
        str | None,
        typer.Option("--from", help="hf.co/owner/repo[:quant], a URL, or a GGUF file or model folder here."),
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain http to the registry.")] = False,
    host: HostOption = None,
) -> None:
    """Download a model into the store (resumes an interrupted pull).

    A name FerrousForge does not know (``llama3.2``, ``myhost:5000/ns/model:tag``) comes from an
    Ollama registry (FERROUSFORGE_REGISTRY, default registry.ollama.ai)."""
    if source and not source.startswith(("http://", "https://", "hf.co/", "huggingface.co/")):
        local = Path(os.path.expanduser(source))
        if local.exists() or not local.is_absolute():  # a path from here (the server reads it)
            source = str(local.resolve())
    _show_progress(client(host).pull(model, source, insecure=insecure), model)


@app.command()
def push(
    model: str,
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain http to the registry.")] = False,
    host: HostOption = None,
) -> None:
    """Upload a model to a registry of your own (``myhost:5000/team/model``; ``cp`` it to that name
    first), as ``ollama push`` does; ``ollama pull`` and ``ferrousforge pull`` read it back."""
    _show_progress(client(host).push(model, insecure=insecure), model, "pushed")


@app.command("list")
def list_(host: HostOption = None) -> None:
    """List the models in the store."""
    table = Table("NAME", "ID", "SIZE", "MODIFIED", box=None)
    for m in client(host).list()["models"]:
        name = m["name"] + (" (ollama, read-only)" if m.get("ollama_store") else "")
        table.add_row(name, m["digest"][:12], _size(m["size"]), ago(m["modified_at"]))
    print_table(table)


@app.command()
def ps(host: HostOption = None) -> None:
    """List loaded models."""
    table = Table("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", box=None)
    for m in client(host).ps()["models"]:
        table.add_row(
            m["name"],
            m["digest"][:12],
            _size(m["size"]),
            processor(m["size"], m.get("size_vram") or 0),
            str(m.get("context_length") or ""),
            until(m["expires_at"]),
        )
    print_table(table)


def until(expires_at: str, now: float | None = None) -> str:
    """When a loaded model is unloaded, as Ollama's ``ps`` words it: "4 minutes from now", "Forever"
    (kept or busy), "Stopping..." once past."""
    left = _seconds_from_now(expires_at, now)
    if left is None:
        return expires_at
    if expires_at.startswith("0001") or left > 20 * 365 * 86400:
        return "Forever"
    if left < 0:
        return "Stopping..."
    return human_duration(left) + " from now"


def ago(timestamp: str, now: float | None = None) -> str:
    """When a model was modified, as Ollama's ``list`` words it: "2 hours ago"."""
    left = _seconds_from_now(timestamp, now)
    return timestamp if left is None else human_duration(max(-left, 0.0)) + " ago"


def _seconds_from_now(timestamp: str, now: float | None) -> float | None:
    """Seconds from ``now`` (the clock's, if None) to an ISO timestamp; None if it is not one."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(timestamp).timestamp() - (time.time() if now is None else now)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """A duration as Ollama words one ("Less than a second", "About a minute", "3 days")."""
    whole, minutes, hours = int(seconds), int(seconds // 60), round(seconds / 3600)
    if whole < 1:
        return "Less than a second"
    if whole < 60:
        return "1 second" if whole == 1 else f"{whole} seconds"
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    for limit, unit, size in ((48, "hours", 1), (24 * 14, "days", 24), (24 * 60, "weeks", 24 * 7)):
        if hours < limit:
            return f"{hours // size} {unit}"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{int(seconds // (365 * 86400))} years"


def processor(size: int, size_vram: int) -> str:
    """Where a loaded model lives, as Ollama shows it: "100% CPU", "100% GPU", "48%/52% CPU/GPU"."""
    if size_vram <= 0 or size <= 0:
        return "100% CPU"
    if size_vram >= size:
        return "100% GPU"
    gpu = round(100 * size_vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


@app.command()
def info(host: HostOption = None) -> None:
    """Show the CPU, GPUs and engine builds, and what each loaded model runs on."""
    report = client(host).info()
    c = report["cpu"]
    out.print(f"CPU  {c['model']} ({c['arch']}, {c['cores']} cores): {' '.join(c['instruction_sets'])}")
    if not report["gpus"]:
        out.print("GPU  none found")
    for g in report["gpus"]:
        facts = [g["api"], *([f"driver {g['driver']}"] if g.get("driver") else [])]
        if g.get("total_memory"):
            free = g.get("free_memory")
            facts.append(_size(g["total_memory"]) + (f", {_size(free)} free" if free is not None else ""))
        if g.get("software"):
            facts.append("software: runs on the CPU")
        out.print(f"GPU  {g['name']} ({', '.join(facts)})")
    table = Table("ENGINE", "BUILD", "RUNS ON", "DETAILS", box=None)
    for e in report["engines"]:
        gpu_devices = [f"{d};" for d in e.get("devices", []) if not d.startswith("CPU:")]  # llama.cpp's
        adapter = [f"adapter: {e['adapter']}"] if e.get("adapter") else []  # the wgpu engine's
        details = " ".join(gpu_devices + adapter + (e.get("cpu_features") or e.get("providers") or []))
        table.add_row(e["package"], str(e.get("flavour") or ""), e["runs_on"], details)
    print_table(table)
    if report["models"]:
        loaded = Table("MODEL", "ENGINE", "ACCELERATOR", "KV CACHE", "RUNNER", box=None)
        for m in report["models"]:
            runner = str(m.get("runner_pid", "in server"))
            loaded.add_row(m["name"], m["engine"], m["accelerator"], m.get("kv_cache_type", ""), runner)
        print_table(loaded)


@app.command()
def show(
    model: str,
    modelfile: Annotated[bool, typer.Option("--modelfile", help="Show the model's Modelfile.")] = False,
    parameters: Annotated[bool, typer.Option("--parameters", help="Show its parameters.")] = False,
    template: Annotated[bool, typer.Option("--template", help="Show its prompt template.")] = False,
    system: Annotated[bool, typer.Option("--system", help="Show its system message.")] = False,
    license_: Annotated[bool, typer.Option("--license", help="Show its license.")] = False,
    host: HostOption = None,
) -> None:
    """Show a model's details, or one part of it."""
    info = client(host).show(model)
    for flag, key in (
        (modelfile, "modelfile"),
        (parameters, "parameters"),
        (template, "template"),
        (system, "system"),
        (license_, "license"),
    ):
        if flag:  # as written, unwrapped: `show --modelfile > Modelfile` makes a Modelfile `create` reads
            out.file.write(str(info.get(key, "")).rstrip("\n") + "\n")
            return
    table = Table(box=None, show_header=False)
    for label, value in cli_run.model_facts(info):
        table.add_row(label, value)
    print_table(table)
    if projector := cli_run.projector_facts(info):
        out.print("\nProjector", style="bold")
        table = Table(box=None, show_header=False)
        for label, value in projector:
            table.add_row(label, value)
        print_table(table)
    if info.get("parameters"):
        out.print("\nParameters", style="bold")
        out.print(info["parameters"], markup=False, highlight=False)
    if info.get("system"):
        out.print("\nSystem", style="bold")
        out.print(info["system"].strip(), markup=False, highlight=False)
    if license_text := str(info.get("license") or "").strip():  # its first lines, as ollama show
        out.print("\nLicense", style="bold")
        out.print("\n".join(license_text.splitlines()[:2]), markup=False, highlight=False)


@app.command()
def rm(models: list[str], host: HostOption = None) -> None:
    """Remove models."""
    for model in models:
        client(host).delete(model)
        out.print(f"deleted '{model}'")


@app.command()
def cp(source: str, destination: str, host: HostOption = None) -> None:
    """Copy a model under a new name."""
    client(host).copy(source, destination)
    out.print(f"copied '{source}' to '{destination}'")


@app.command()
def stop(model: str, host: HostOption = None) -> None:
    """Unload a running model."""
    client(host).generate(model, "", keep_alive=0)


def _gguf_name(path: Path) -> str:
    """A file's name for the server, ending .gguf when it is one: a store's blob (``FROM`` in what
    ``show --modelfile`` printed) has no extension."""
    with path.open("rb") as f:
        gguf = f.read(4) == b"GGUF"
    return path.name + ".gguf" if gguf and not path.name.lower().endswith(".gguf") else path.name


def _model_files(folder: Path) -> list[Path]:
    """A safetensors model folder's files that make the model (weights, config, tokenizer, template)."""
    from ferrousforge_host.models.safetensors_gguf import FILES

    files = [folder / name for name in FILES if (folder / name).is_file()]
    weights = sorted(folder.glob("*.safetensors"))
    if not weights or not (folder / "config.json").is_file():
        raise ForgeError(f"{folder} is not a model folder: it needs config.json and .safetensors weights")
    return files + weights


@app.command()
def create(
    model: str,
    file: Annotated[Path, typer.Option("-f", "--file", help="Modelfile to build from.")] = Path("Modelfile"),
    quantize: Annotated[
        str | None, typer.Option("-q", "--quantize", help="Quantize F32/F16/BF16 weights: q4_K_M, q8_0...")
    ] = None,
    host: HostOption = None,
) -> None:
    """Create a model from a Modelfile (FROM a GGUF file, a safetensors folder or an existing model;
    ADAPTER LoRA files)."""
    if not file.is_file():
        raise ForgeError(f"no Modelfile at {file}")
    spec = Modelfile.parse(file.read_text())
    api = client(host)
    fields: dict[str, Any] = {"parameters": spec.parameters}
    if quantize:
        fields["quantize"] = quantize
    if spec.template:
        fields["template"] = spec.template
    if spec.system is not None:
        fields["system"] = spec.system
    if spec.license:
        fields["license"] = spec.license
    if spec.messages:
        fields["messages"] = spec.messages
    path = (file.parent / os.path.expanduser(spec.source)).resolve()
    if path.is_file():
        name = _gguf_name(path)
        fields["files"] = {name: _upload(api, path)}
        if spec.projector:  # a vision model's second file
            projector = (file.parent / os.path.expanduser(spec.projector)).resolve()
            if not projector.is_file():
                raise ForgeError(f"no projector file at {projector}")
            key = _gguf_name(projector)
            fields["files"][key if key != name else f"projector-{key}"] = _upload(api, projector)
    elif path.is_dir():  # a safetensors model folder, converted by the server
        fields["files"] = {f.relative_to(path).as_posix(): _upload(api, f) for f in _model_files(path)}
    elif spec.projector:
        raise ForgeError("a projector (a second FROM) goes with a GGUF file, not a model name")
    elif spec.source.startswith(("./", "../", "/", "~")) or spec.source.lower().endswith(".gguf"):
        raise ForgeError(f"FROM {spec.source}: no such file or folder ({path})")  # a path, not a name
    else:
        fields["from"] = spec.source
    if spec.adapters:  # LoRA adapters: each file uploaded, as ollama create does
        fields["adapters"] = {}
        for given in spec.adapters:
            adapter = (file.parent / os.path.expanduser(given)).resolve()
            if adapter.is_dir():  # a PEFT folder: its config and weights, converted by the server
                parts = [adapter / "adapter_config.json", *sorted(adapter.glob("*.safetensors"))]
                if not parts[0].is_file() or len(parts) < 2:
                    raise ForgeError(
                        f"{adapter} is no LoRA adapter folder (adapter_config.json, .safetensors)"
                    )
                fields["adapters"].update({p.name: _upload(api, p) for p in parts})
            elif not adapter.is_file():
                raise ForgeError(f"no adapter file at {adapter}")
            else:
                fields["adapters"][adapter.name] = _upload(api, adapter)
    for event in api.create(model, **fields):
        err.print(event.get("status", ""))


@app.command()
def run(
    model: str,
    prompt: Annotated[list[str] | None, typer.Argument(help="Prompt; omit for an interactive chat.")] = None,
    format_: Annotated[
        str | None, typer.Option("--format", help="'json' to constrain output to JSON.")
    ] = None,
    keepalive: Annotated[
        str | None,
        typer.Option("--keepalive", help="How long the model stays loaded: 5m, 1h, 0, -1 (forever)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show timings after each answer.")] = False,
    think: Annotated[
        str | None,
        typer.Option(
            "--think",
            help="Thinking models: think first (--think, --think=true), not (--think=false), or how much "
            "(--think=low|medium|high).",
        ),
    ] = None,
    no_think: Annotated[
        bool, typer.Option("--no-think", help="Thinking models: answer without thinking.")
    ] = False,
    hidethinking: Annotated[bool, typer.Option("--hidethinking", help="Don't print the thinking.")] = False,
    nowordwrap: Annotated[
        bool, typer.Option("--nowordwrap", help="Don't wrap answers between words at the terminal's edge.")
    ] = False,
    dimensions: Annotated[
        int | None, typer.Option("--dimensions", help="Embedding models: truncate.")
    ] = None,
    host: HostOption = None,
) -> None:
    """Generate from a prompt, or chat interactively (/? for commands, Ctrl-D to exit); an
    embedding model prints the prompt's vector."""
    api, info = _ensure(model, host)
    extra: dict[str, Any] = {
        k: v
        for k, v in (
            ("format", format_),
            ("keep_alive", keepalive),
            ("think", False if no_think else thinking_level(think)),
            ("dimensions", dimensions),
        )
        if v is not None
    }
    text = " ".join(prompt or [])
    wrap = not nowordwrap
    if not sys.stdin.isatty():  # as ollama run: what is piped in, then the arguments after it
        piped = sys.stdin.read()
        text = f"{piped} {text}" if piped and text else piped or text
        wrap = False
    if text:
        cli_run.one_shot(api, model, info, text, extra, verbose, not hidethinking, wrap)
    else:
        cli_run.interactive(api, model, extra, verbose, not hidethinking, info, wrap)


def _ensure(model: str, host: str | None) -> tuple[Client, dict[str, Any]]:
    """A client of the server, once it has the model (pulled first if it has not), and the model's
    /api/show answer."""
    api = client(host)
    try:
        return api, api.show(model)
    except ForgeError as exc:
        if getattr(exc, "status", 0) != 404:
            raise
        _show_progress(api.pull(model), model)
    return api, api.show(model)


def _audio_call(api: Client, path: str, **request: Any) -> Any:
    """POST to an audio endpoint; an error answer (OpenAI's shape) becomes a ForgeError."""
    import httpx

    url = api.host + path
    try:
        response = httpx.post(url, timeout=None, headers=api.auth_headers(), **request)
    except httpx.HTTPError as exc:
        raise ForgeError(
            f"could not reach FerrousForge at {url} ({exc}); is 'ferrousforge serve' running?"
        ) from None
    if response.status_code >= 400:
        _raise_answer(response)
    return response


@app.command()
def transcribe(
    file: Path,
    model: Annotated[str, typer.Option("--model", help="A transcription model.")] = "whisper:tiny.en",
    format_: Annotated[str, typer.Option("--format", help="text, json, srt, vtt or verbose_json.")] = "text",
    language: Annotated[
        str | None, typer.Option("--language", help="ISO 639-1 code; none: detected.")
    ] = None,
    translate: Annotated[
        bool, typer.Option("--translate", help="Into English (multilingual models).")
    ] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here, not to stdout.")] = None,
    host: HostOption = None,
) -> None:
    """Transcribe an audio file (wav, mp3, ogg, webm, m4a, flac...)."""
    if not file.is_file():
        raise ForgeError(f"no audio file at {file}")
    api = _ensure(model, host)[0]
    fields = {"model": model, "response_format": format_, **({"language": language} if language else {})}
    path = "/v1/audio/translations" if translate else "/v1/audio/transcriptions"
    with file.open("rb") as f:
        response = _audio_call(api, path, data=fields, files={"file": (file.name, f)})
    text = response.text if response.text.endswith("\n") else response.text + "\n"
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def say(
    text: Annotated[list[str] | None, typer.Argument(help="What to say; none: read from stdin.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Audio file to write.")] = Path("speech.wav"),
    model: Annotated[str, typer.Option("--model", help="A speech model.")] = "piper:joe",
    voice: Annotated[str | None, typer.Option("--voice", help="One of the model's voices.")] = None,
    speed: Annotated[float, typer.Option("--speed", help="0.25 to 4.")] = 1.0,
    format_: Annotated[
        str | None, typer.Option("--format", help="wav, mp3, opus, aac, flac or pcm (default: from -o).")
    ] = None,
    host: HostOption = None,
) -> None:
    """Speak text into an audio file, written as it is synthesized."""
    words = " ".join(text or [])
    if not words and not sys.stdin.isatty():
        words = sys.stdin.read()
    suffix = output.suffix.lstrip(".").lower()
    chosen = format_ or {"ogg": "opus", "m4a": "aac"}.get(suffix, suffix or "wav")
    body = {"model": model, "input": words, "response_format": chosen, "speed": speed}
    if voice:
        body["voice"] = voice
    api = _ensure(model, host)[0]
    base = api.host
    import httpx

    try:
        with httpx.stream(
            "POST", base + "/v1/audio/speech", json=body, timeout=None, headers=api.auth_headers()
        ) as response:
            if response.status_code >= 400:
                response.read()
                _raise_answer(response)
            try:
                with output.open("w+b") as f:
                    for block in response.iter_bytes():
                        f.write(block)
                    if chosen == "wav":
                        _finish_wav(f)
            except OSError as exc:
                raise ForgeError(f"cannot write {output}: {exc.strerror or exc}") from None
    except httpx.HTTPError as exc:
        raise ForgeError(
            f"could not reach FerrousForge at {base} ({exc}); is 'ferrousforge serve' running?"
        ) from None
    err.print(f"wrote {output}")


def _finish_wav(f: Any) -> None:
    """A streamed WAV's header says "until the end" (0xFFFFFFFF sizes); a finished file says its sizes."""
    size = f.tell()
    f.seek(0)
    head = f.read(min(size, 4096))
    data = head.find(b"data", 12)
    if head[:4] != b"RIFF" or data < 0:
        return
    f.seek(4)
    f.write((size - 8).to_bytes(4, "little"))
    f.seek(data + 4)
    f.write((size - data - 8).to_bytes(4, "little"))


def _raise_answer(response: Any) -> None:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    raise ForgeError(str(message))


def _upload(api: Any, path: Path) -> str:
    """A file's blob digest, uploaded first unless the server has it."""
    digest = _sha256(path)
    if not api.has_blob(digest):
        with path.open("rb") as f:
            api.upload_blob(digest, f, path.stat().st_size)
    return digest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.1f} TB"


THINK_LEVELS: dict[str, bool | str] = {"true": True, "false": False} | {x: x for x in cli_run.THINK_LEVELS}


def thinking_level(given: str | None) -> bool | str | None:
    """``--think``'s value as the API takes it: true, false, or a level (as ollama run --think=high)."""
    if given is None:
        return None
    if given.lower() not in THINK_LEVELS:
        raise ForgeError(f"--think={given}: one of {', '.join(THINK_LEVELS)}")
    return THINK_LEVELS[given.lower()]


def main() -> None:
    # ``--think`` alone means --think=true, as ollama run reads it (its value only ever follows "=")
    sys.argv = ["--think=true" if arg == "--think" else arg for arg in sys.argv]
    try:
        app()
    except ForgeError as exc:
        err.print(f"Error: {exc.message}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
