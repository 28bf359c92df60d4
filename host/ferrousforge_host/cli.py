"""The ``ferrousforge`` command: serve, run, pull, list, show, ps, info, rm, cp, create, stop."""

from __future__ import annotations

import hashlib
import os
import sys
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

app = typer.Typer(
    help="FerrousForge: a local model server with an Ollama-compatible API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


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
) -> None:
    """Start the server."""
    import uvicorn

    from ferrousforge.names import ModelName
    from ferrousforge_host.app import create_app
    from ferrousforge_host.config import load_settings
    from ferrousforge_host.models.pull import Puller

    settings = load_settings(host=host, models=models)
    app_ = create_app(settings)
    for name in pull or []:
        parsed = ModelName.parse(name)
        if not app_.state.store.exists(parsed):  # a puller of its own: its locks belong to this loop
            _show_progress(_drain(Puller(app_.state.store).pull(parsed)), name)
    bind_host, port = settings.bind
    err.print(f"FerrousForge listening on http://{bind_host}:{port} (models in {settings.models})")
    uvicorn.run(app_, host=bind_host, port=port, log_level="warning", timeout_graceful_shutdown=5)


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


def _show_progress(events: Iterator[dict[str, Any]], name: str) -> None:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}
        for event in events:
            digest = event.get("digest")
            if digest and "total" in event:
                if digest not in tasks:
                    tasks[digest] = bar.add_task(event["status"], total=event["total"] or None)
                bar.update(tasks[digest], completed=event.get("completed", 0), total=event["total"] or None)
            elif event.get("status") and event["status"] != "success":
                bar.console.print(event["status"])
    err.print(f"pulled {name}")


@app.command()
def pull(
    model: str,
    source: Annotated[
        str | None, typer.Option("--from", help="hf.co/owner/repo[:quant], a URL or a file.")
    ] = None,
    host: HostOption = None,
) -> None:
    """Download a model into the store (resumes an interrupted pull)."""
    _show_progress(client(host).pull(model, source), model)


@app.command("list")
def list_(host: HostOption = None) -> None:
    """List the models in the store."""
    table = Table("NAME", "ID", "SIZE", "MODIFIED", box=None)
    for m in client(host).list()["models"]:
        table.add_row(m["name"], m["digest"][:12], _size(m["size"]), m["modified_at"][:19].replace("T", " "))
    out.print(table)


@app.command()
def ps(host: HostOption = None) -> None:
    """List loaded models."""
    table = Table("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", box=None)
    for m in client(host).ps()["models"]:
        until = "forever" if m["expires_at"].startswith("0001") else m["expires_at"][:19].replace("T", " ")
        table.add_row(
            m["name"],
            m["digest"][:12],
            _size(m["size"]),
            processor(m["size"], m.get("size_vram") or 0),
            str(m.get("context_length") or ""),
            until,
        )
    out.print(table)


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
    for g in report["gpus"] or [{"api": "-", "name": "no GPU found"}]:
        facts = [g["api"], *([f"driver {g['driver']}"] if g.get("driver") else [])]
        if g.get("total_memory"):
            facts.append(f"{_size(g['free_memory'] or 0)} free of {_size(g['total_memory'])}")
        out.print(f"GPU  {g['name']} ({', '.join(facts)})")
    table = Table("ENGINE", "BUILD", "RUNS ON", "DETAILS", box=None)
    for e in report["engines"]:
        details = " ".join(e.get("cpu_features") or e.get("providers") or [])
        table.add_row(e["package"], str(e.get("flavour") or ""), e["runs_on"], details)
    out.print(table)
    if report["models"]:
        loaded = Table("MODEL", "ENGINE", "ACCELERATOR", box=None)
        for m in report["models"]:
            loaded.add_row(m["name"], m["engine"], m["accelerator"])
        out.print(loaded)


@app.command()
def show(
    model: str,
    modelfile: Annotated[bool, typer.Option("--modelfile")] = False,
    parameters: Annotated[bool, typer.Option("--parameters")] = False,
    template: Annotated[bool, typer.Option("--template")] = False,
    system: Annotated[bool, typer.Option("--system")] = False,
    license_: Annotated[bool, typer.Option("--license")] = False,
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
        if flag:
            out.print(info.get(key, ""), markup=False, highlight=False)
            return
    d = info["details"]
    table = Table(box=None, show_header=False)
    for label, value in (
        ("architecture", d.get("family")),
        ("parameters", d.get("parameter_size")),
        ("quantization", d.get("quantization_level")),
        ("format", d.get("format")),
        ("context length", info["model_info"].get(f"{d.get('family')}.context_length")),
        ("capabilities", ", ".join(info.get("capabilities", []))),
    ):
        table.add_row(label, str(value or ""))
    out.print(table)
    if info.get("parameters"):
        out.print("\nParameters", style="bold")
        out.print(info["parameters"], markup=False, highlight=False)


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


@app.command()
def create(
    model: str,
    file: Annotated[Path, typer.Option("-f", "--file", help="Modelfile to build from.")] = Path("Modelfile"),
    host: HostOption = None,
) -> None:
    """Create a model from a Modelfile (FROM a GGUF file or an existing model)."""
    if not file.is_file():
        raise ForgeError(f"no Modelfile at {file}")
    spec = Modelfile.parse(file.read_text())
    api = client(host)
    fields: dict[str, Any] = {"parameters": spec.parameters}
    if spec.template:
        fields["template"] = spec.template
    if spec.system is not None:
        fields["system"] = spec.system
    if spec.license:
        fields["license"] = spec.license
    path = (file.parent / os.path.expanduser(spec.source)).resolve()
    if path.is_file():
        digest = _sha256(path)
        if not api.has_blob(digest):
            with path.open("rb") as f:
                api.upload_blob(digest, f, path.stat().st_size)
        fields["files"] = {path.name: digest}
    else:
        fields["from"] = spec.source
    for event in api.create(model, **fields):
        err.print(event.get("status", ""))


@app.command()
def run(
    model: str,
    prompt: Annotated[list[str] | None, typer.Argument(help="Prompt; omit for an interactive chat.")] = None,
    format_: Annotated[
        str | None, typer.Option("--format", help="'json' to constrain output to JSON.")
    ] = None,
    keepalive: Annotated[str | None, typer.Option("--keepalive")] = None,
    host: HostOption = None,
) -> None:
    """Generate from a prompt, or chat interactively (Ctrl-D to exit)."""
    api = client(host)
    try:
        api.show(model)
    except ForgeError as exc:
        if getattr(exc, "status", 0) != 404:
            raise
        _show_progress(api.pull(model), model)
    extra: dict[str, Any] = {k: v for k, v in (("format", format_), ("keep_alive", keepalive)) if v}
    text = " ".join(prompt or [])
    if not text and not sys.stdin.isatty():
        text = sys.stdin.read()
    if text:
        for chunk in api.generate(model, text, stream=True, **extra):
            sys.stdout.write(chunk.get("response", ""))
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    messages: list[dict[str, str]] = []
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            sys.stdout.write("\n")
            return
        if line.strip() in ("/bye", "/exit"):
            return
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        for chunk in api.chat(model, messages, stream=True, **extra):
            piece = chunk.get("message", {}).get("content", "")
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n\n")
        messages.append({"role": "assistant", "content": "".join(reply)})


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


def main() -> None:
    try:
        app()
    except ForgeError as exc:
        err.print(f"Error: {exc.message}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
