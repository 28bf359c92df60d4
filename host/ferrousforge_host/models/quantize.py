"""Ollama's ``create --quantize``: a model's F32/F16/BF16 GGUF quantized by llama.cpp's
``llama_model_quantize`` into a new blob. It runs in a process of its own, so that a native fault ends
that process and the request with a clear error, never the server; the result enters the store only
once complete (``BlobStore.scratch`` and ``commit``).

    python -m ferrousforge_host.models.quantize SOURCE TARGET TYPE THREADS   (what the host runs)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge_host.runner import exit_cause
from ferrousforge_host.store import BlobStore

# What Ollama's create accepts, as llama.cpp names the file types
TYPES = (
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
    "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
)  # fmt: skip
SOURCES = ("F32", "F16", "BF16")  # the file types a model is quantized from
_FAILED = "failed to quantize: "  # how llama.cpp's log gives the reason


def quantize_type(name: str) -> str:
    """The llama.cpp file type ``name`` asks for ("q4_K_M" → "Q4_K_M"), or a 400 listing them."""
    kind = name.strip().upper()
    if kind not in TYPES:
        raise BadRequest(f"unsupported quantization type '{name}'; one of: {', '.join(TYPES)}")
    return kind


async def quantize(store: BlobStore, digest: str, kind: str, threads: int = 0) -> str:
    """Quantize the GGUF blob ``digest`` to ``kind`` (from ``quantize_type``); the new blob's digest."""
    with store.scratch("quantize") as target:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(store.blob_path(digest)),
            str(target),
            kind,
            str(threads),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await proc.communicate()
        finally:  # a request cancelled (its client left) stops the work
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if proc.returncode != 0:
            lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
            said = [line.split(_FAILED, 1)[1] for line in lines if _FAILED in line]  # llama.cpp's reason
            detail = f": {(said or lines)[-1]}" if lines else ""
            raise ForgeError(f"quantizing to {kind} failed ({exit_cause(proc.returncode)}){detail}")
        return await asyncio.to_thread(store.commit, target, None)


def main(source: str, target: str, kind: str, threads: str) -> int:
    import llama_cpp as L

    params = L.llama_model_quantize_default_params()
    params.ftype = getattr(L, f"LLAMA_FTYPE_MOSTLY_{kind}")
    params.nthread = int(threads)
    failed = L.llama_model_quantize(source.encode(), target.encode(), params)
    if failed:
        print(f"llama_model_quantize returned {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
