"""Where a request runs: ``browser-webgpu``, ``browser-wasm`` or ``host``.

Pure logic, used in the browser (under Pyodide) and tested natively. Inputs are what the browser
measured (``Capabilities``: adapters, limits, threads, memory, the probe's GFLOP/s per accelerator)
and what the model needs (``Requirements``: bytes, memory, features, work per item, the slowest
speed still worth running locally). Browser-first by default: the fastest in-browser accelerator
that fits the model and meets its minimum speed, else the host. ``fastest`` also weighs the host,
by speeds measured on earlier requests; ``host`` always sends requests to the host.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

BROWSER_WEBGPU = "browser-webgpu"
BROWSER_WASM = "browser-wasm"
HOST = "host"
PREFERENCES = ("browser", "fastest", "host")
OVERRIDES = ("auto", "browser", "host", BROWSER_WEBGPU, BROWSER_WASM)

WASM32_LIMIT = 4 << 30  # one wasm32 memory
ARRAY_BUFFER_LIMIT = 2 << 30  # one ArrayBuffer: a bigger single file must be split
SINGLE_THREAD_GENERATE_BYTES = 64 << 20  # larger GGUFs generate too slowly on one wasm thread


@dataclass
class Accelerator:
    name: str  # BROWSER_WEBGPU | BROWSER_WASM
    gflops: float  # measured by the probe (0: not measured or failed)
    software: bool = False  # a software WebGPU adapter (SwiftShader): correct, very slow
    features: frozenset[str] = frozenset()
    max_buffer: int = 0  # WebGPU maxBufferSize / maxStorageBufferBindingSize (bytes)
    threads: int = 1
    error: str = ""


@dataclass
class Capabilities:
    accelerators: list[Accelerator] = field(default_factory=list)
    device_memory_gb: float = 4.0  # navigator.deviceMemory (Chromium caps it at 8; absent: assume 4)
    isolated: bool = False  # crossOriginIsolated: wasm threads possible
    cores: int = 1
    budget_bytes: int = 0  # memory the page lets in-browser models take; 0: derived from deviceMemory

    @property
    def memory_budget(self) -> int:
        if self.budget_bytes:
            return self.budget_bytes
        return min(int(self.device_memory_gb * (1 << 30) / 4), WASM32_LIMIT)

    def ranked(self) -> list[Accelerator]:
        """Usable accelerators, fastest first by measurement; software adapters always after the rest."""
        usable = [a for a in self.accelerators if a.gflops > 0 and not a.error]
        return sorted(usable, key=lambda a: (a.software, -a.gflops))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Capabilities:
        accelerators = [
            Accelerator(
                name=a["name"],
                gflops=float(a.get("gflops") or 0),
                software=bool(a.get("software")),
                features=frozenset(a.get("features") or ()),
                max_buffer=int(a.get("max_buffer") or 0),
                threads=int(a.get("threads") or 1),
                error=str(a.get("error") or ""),
            )
            for a in data.get("accelerators", [])
        ]
        return cls(
            accelerators=accelerators,
            device_memory_gb=float(data.get("device_memory_gb") or 4.0),
            isolated=bool(data.get("isolated")),
            cores=int(data.get("cores") or 1),
            budget_bytes=int(data.get("budget_bytes") or 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "accelerators": [
                {
                    "name": a.name,
                    "gflops": round(a.gflops, 3),
                    "software": a.software,
                    "features": sorted(a.features),
                    "max_buffer": a.max_buffer,
                    "threads": a.threads,
                    **({"error": a.error} if a.error else {}),
                }
                for a in self.accelerators
            ],
            "ranking": [a.name for a in self.ranked()],
            "device_memory_gb": self.device_memory_gb,
            "isolated": self.isolated,
            "cores": self.cores,
            "memory_budget": self.memory_budget,
        }


@dataclass
class Requirements:
    """What running a model in the browser takes (as WebLLM's vram_required_MB / required_features)."""

    bytes: int  # largest single file to load
    memory: int  # working memory once loaded
    gflop_per_item: float  # work for one typical item (an embedding, or one generated token)
    min_items_per_s: float  # slower than this locally, the host is the better place
    features: frozenset[str] = frozenset()  # needed WebGPU features, e.g. shader-f16
    needs_threads: bool = False  # too slow single-threaded: only with cross-origin isolation

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Requirements:
        return cls(
            bytes=int(data["bytes"]),
            memory=int(data["memory"]),
            gflop_per_item=float(data["gflop_per_item"]),
            min_items_per_s=float(data["min_items_per_s"]),
            features=frozenset(data.get("features") or ()),
            needs_threads=bool(data.get("needs_threads")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "memory": self.memory,
            "gflop_per_item": self.gflop_per_item,
            "min_items_per_s": self.min_items_per_s,
            "features": sorted(self.features),
            "needs_threads": self.needs_threads,
        }


def estimate_requirements(kind: str, size: int, params: int = 0) -> Requirements:
    """A model with no browser entry in the catalogue: sized from its file."""
    params = params or size // 4
    if kind == "generate":  # a token costs ~2 FLOP per parameter; past 64 MiB, one thread is too slow
        threads = size > SINGLE_THREAD_GENERATE_BYTES
        return Requirements(size, int(size * 1.3) + (64 << 20), 2 * params / 1e9, 4.0, needs_threads=threads)
    return Requirements(size, int(size * 2.5), 2 * params * 32 / 1e9, 5.0)  # ~32 tokens per item


@dataclass
class Decision:
    placement: str
    reason: str
    estimate: float = 0.0  # items/s expected where it runs (0: unknown)
    candidates: list[str] = field(default_factory=list)  # in-browser places to try, best first


def may_run(fmt: str, kind: str, files: Collection[str], accelerator: Accelerator, override: str) -> bool:
    """Whether ``accelerator`` may run a model of this format and kind at all (``files``: the model's
    named files). GGUF on WebGPU is FerrousForge's own decoder, with the tokenizer.json the host made from
    the vocabulary: never chosen on a software adapter unless forced (wllama's WebGPU path is not used:
    it needs shader-f16 and otherwise silently computes on the CPU). Piper's voices (kind "speech") run
    on onnxruntime-web's wasm EP (its WebGPU EP untried). Whisper's graphs run on either EP."""
    if accelerator.name == BROWSER_WASM:
        return True
    if kind == "speech":
        return False
    if fmt == "gguf":
        return "tokenizer.json" in files and (override == BROWSER_WEBGPU or not accelerator.software)
    return True


def why_not(acc: Accelerator, caps: Capabilities, req: Requirements) -> str:
    """Why a model can't run on an accelerator ('' if it can)."""
    if req.bytes > ARRAY_BUFFER_LIMIT:
        return f"its largest file ({req.bytes >> 20} MiB) is over one ArrayBuffer's 2 GiB limit"
    if req.memory > caps.memory_budget:
        return f"needs {req.memory >> 20} MiB, over the browser budget of {caps.memory_budget >> 20} MiB"
    missing = req.features - acc.features if acc.name == BROWSER_WEBGPU else frozenset()
    if missing:
        return f"{acc.name} lacks {', '.join(sorted(missing))}"
    if req.needs_threads and acc.name == BROWSER_WASM and not caps.isolated:
        return "no wasm threads (the page is not cross-origin isolated)"
    speed = acc.gflops / req.gflop_per_item if req.gflop_per_item else float("inf")
    if speed < req.min_items_per_s:
        return f"{acc.name} would run ~{speed:.1f}/s, under the {req.min_items_per_s:g}/s this model needs"
    return ""


def decide(
    caps: Capabilities,
    req: Requirements,
    prefer: str = "browser",
    override: str = "auto",
    measured: dict[str, float] | None = None,
) -> Decision:
    """Choose the place for one request.

    ``measured``: items/s seen on earlier requests of this model per placement (for ``fastest``).
    ``override="browser"`` runs in the browser on the best accelerator even when it is slow or
    over budget (a failure still falls back to the host); ``"host"`` skips the browser;
    ``"browser-webgpu"`` / ``"browser-wasm"`` run on that accelerator even when it is a software
    adapter (a page or a test forcing it), and on the host when the browser has none.
    """
    if override not in OVERRIDES:
        raise ValueError(f"placement must be one of {', '.join(OVERRIDES)}")
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {', '.join(PREFERENCES)}")
    if override == "host" or (override == "auto" and prefer == "host"):
        return Decision(HOST, "host placement requested")
    if override in (BROWSER_WEBGPU, BROWSER_WASM):
        named = next((a for a in caps.accelerators if a.name == override), None)
        if named is None or named.error:
            return Decision(
                HOST, f"{override} requested but unavailable: {named.error if named else 'absent'}"
            )
        speed = named.gflops / req.gflop_per_item if req.gflop_per_item and named.gflops else 0.0
        return Decision(override, f"{override} placement requested", speed, [override])
    ranked = caps.ranked()
    if not ranked:
        return Decision(HOST, "no in-browser accelerator works here")
    fitting: list[tuple[Accelerator, float]] = []
    reasons: list[str] = []
    for acc in ranked:
        reason = why_not(acc, caps, req)
        speed = acc.gflops / req.gflop_per_item if req.gflop_per_item else 0.0
        if measured and acc.name in measured:
            speed = measured[acc.name]
        if reason:
            reasons.append(reason)
        else:
            fitting.append((acc, speed))
    if override == "browser":
        order = fitting or [(a, 0.0) for a in ranked]
        return Decision(
            order[0][0].name, "browser placement requested", order[0][1], [a.name for a, _ in order]
        )
    if not fitting:
        return Decision(HOST, "; ".join(reasons))
    best, speed = fitting[0]
    if prefer == "fastest" and measured and HOST in measured and measured[HOST] > speed:
        return Decision(
            HOST, f"host measured faster ({measured[HOST]:.1f}/s vs {speed:.1f}/s)", measured[HOST]
        )
    return Decision(
        best.name,
        f"fastest in-browser accelerator that fits (~{speed:.1f}/s)",
        speed,
        [a.name for a, _ in fitting],
    )
