"""The capability probe: what this browser can really do, measured, cached per browser.

Presence is not enough: a software WebGPU adapter (SwiftShader) is present and ~100× slower than
wasm. So each candidate accelerator runs the same matrix product and reports GFLOP/s: wasm through
onnxruntime-web (the small MatMul model ``probe.onnx``), WebGPU through FerrousForge's own matmul
kernel (``ferrousforge.gpu``), the engine that runs there; placement ranks by that.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import js

from ferrousforge.browser.bridge import absent, helpers, jsobj, now_ms
from ferrousforge.placement import BROWSER_WASM, BROWSER_WEBGPU, Accelerator, Capabilities

STORAGE_KEY = "ferrousforge.probe.v2"  # v2: WebGPU measured with the compute layer's kernel
ROWS = 64
BUDGET_MS = 120.0  # timing runs per accelerator (after one warm-up run)
SOFTWARE_ADAPTERS = ("swiftshader", "llvmpipe", "lavapipe", "software", "basic render")


def _get(obj: Any, name: str, default: Any = None) -> Any:
    value = getattr(obj, name, default)
    return default if absent(value) else value


def wasm_threads() -> int:
    return int(helpers().wasmThreads())


async def _time_ep(ep: str, threads: int, probe: dict[str, Any], model: Any) -> float:
    """GFLOP/s of the probe model on one execution provider."""
    ort = await helpers().loadOrt(ep, threads)
    session = await ort.InferenceSession.create(model, jsobj({"executionProviders": [ep]}))
    try:
        width = int(probe["width"])
        x = ort.Tensor.new("float32", js.Float32Array.new(ROWS * width).fill(0.5), jsobj([ROWS, width]))
        feeds = jsobj({"x": x})
        await session.run(feeds)  # warm-up: compiles kernels / shaders
        # the fastest single run: the page may be busy (downloads, compiles) while it probes
        best, runs, start = float("inf"), 0, now_ms()
        while runs < 30 and (runs < 3 or now_ms() - start < BUDGET_MS):
            t = now_ms()
            await session.run(feeds)
            best = min(best, now_ms() - t)
            runs += 1
        seconds = max(best, 0.01) / 1000
        return float(probe["flop_per_row"]) * ROWS / seconds / 1e9
    finally:
        await session.release()


async def _time_gpu(width: int) -> float:
    """GFLOP/s of the compute layer's matmul kernel ([ROWS, width] · [width, width]) on the page's GPU."""
    from ferrousforge.gpu import ops
    from ferrousforge.gpu.webgpu import WebGpuDevice

    gpu = await WebGpuDevice.open()
    a, w = gpu.upload(bytes(ROWS * width * 4)), gpu.upload(bytes(width * width * 4))
    out = gpu.buffer(ROWS * width * 4)
    rec = gpu.record()
    ops.matmul(rec, a, w, gpu.upload(bytes(width * 4)), out, ROWS, width, width)
    gpu.submit(rec)
    await gpu.read(out, 4)  # warm-up: compiles the pipeline
    best, runs, start = float("inf"), 0, now_ms()
    while runs < 30 and (runs < 3 or now_ms() - start < BUDGET_MS):
        t = now_ms()
        gpu.submit(rec)
        await gpu.read(out, 4)
        best = min(best, now_ms() - t)
        runs += 1
    return 2.0 * ROWS * width * width / (max(best, 0.01) / 1000) / 1e9


async def _webgpu() -> tuple[Any, dict[str, Any]]:
    gpu = _get(js.navigator, "gpu")
    if gpu is None:
        return None, {"error": "WebGPU is not available"}
    adapter = await gpu.requestAdapter()
    if absent(adapter):
        return None, {"error": "no WebGPU adapter"}
    info = _get(adapter, "info")
    text = " ".join(
        str(_get(info, k, "")) for k in ("vendor", "architecture", "device", "description")
    ).lower()
    software = bool(_get(info, "isFallbackAdapter", False)) or any(s in text for s in SOFTWARE_ADAPTERS)
    limits = adapter.limits
    return adapter, {
        "adapter": text.strip(),
        "software": software,
        "features": sorted(str(f) for f in adapter.features),
        "max_buffer": min(int(limits.maxBufferSize), int(limits.maxStorageBufferBindingSize)),
    }


def _fingerprint() -> str:
    return json.dumps([str(js.navigator.userAgent), bool(_get(js, "crossOriginIsolated", False))])


async def measure(runtime_url: str, probe: dict[str, Any], refresh: bool = False) -> Capabilities:
    """Probe (or reuse this browser's cached probe) and return the capabilities.

    The cache is keyed by user agent and isolation; ``refresh`` re-measures (a GPU flag changed)."""
    key = _fingerprint()
    storage = _get(js, "localStorage")
    if not refresh and storage is not None:
        cached = storage.getItem(STORAGE_KEY)
        if not absent(cached):
            data = json.loads(str(cached))
            if data.get("fingerprint") == key:
                return Capabilities.from_json(data["capabilities"])
    _, webgpu = await _webgpu()
    threads = wasm_threads()
    model = js.Uint8Array.new(await (await js.fetch(runtime_url + probe["file"])).arrayBuffer())
    accelerators: list[Accelerator] = []
    for name, ep in ((BROWSER_WASM, "wasm"), (BROWSER_WEBGPU, "webgpu")):
        acc = Accelerator(name=name, gflops=0.0, threads=threads if ep == "wasm" else 1)
        if ep == "webgpu":
            acc.software = bool(webgpu.get("software"))
            acc.features = frozenset(webgpu.get("features", ()))
            acc.max_buffer = int(webgpu.get("max_buffer", 0))
            if "error" in webgpu:
                acc.error = webgpu["error"]
                accelerators.append(acc)
                continue
        try:
            if ep == "webgpu":
                acc.gflops = await _time_gpu(int(probe["width"]))
            else:
                acc.gflops = await _time_ep(ep, threads, probe, model.slice())
        except Exception as exc:
            acc.error = f"probe failed: {exc}"[:300]
        accelerators.append(acc)
    caps = Capabilities(
        accelerators=accelerators,
        device_memory_gb=float(_get(js.navigator, "deviceMemory", 4.0)),
        isolated=bool(_get(js, "crossOriginIsolated", False)),
        cores=int(_get(js.navigator, "hardwareConcurrency", 1)),
    )
    if storage is not None:
        with contextlib.suppress(Exception):
            storage.setItem(STORAGE_KEY, json.dumps({"fingerprint": key, "capabilities": caps.to_json()}))
    return caps
