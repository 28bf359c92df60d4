"""The wgpu engine: BERT-family embedding and rerank models on the GPU compute layer
(``ferrousforge.gpu``), natively through wgpu-native (Vulkan, Metal, DX12).

It reads the weights of the ONNX file the host converted from safetensors (``bert_onnx.py`` names them)
and runs them with the same WGSL kernels the page uses; tokenization, truncation and normalisation are
the ONNX engine's. Chosen per request (``options.engine: "wgpu"``) or per server
(``FERROUSFORGE_ENGINE=wgpu``); ``auto`` keeps onnxruntime unless a hardware adapter measures at twice
the CPU's matmul speed.
"""

from __future__ import annotations

import asyncio
import functools
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ferrousforge.errors import ForgeError
from ferrousforge.gpu import onnx_weights
from ferrousforge.gpu.bert import BertEncoder, BertShape, bert_weights
from ferrousforge.gpu.device import GpuDevice
from ferrousforge.mold import Mold, register_mold
from ferrousforge_host.engines.native import ModelLoadError
from ferrousforge_host.engines.onnx import OnnxEmbeddingMold, OnnxRerankMold, OnnxSession

_device: GpuDevice | None = None
_device_lock = threading.Lock()


def hardware_gpu() -> bool:
    """A GPU beyond the CPU is visible (cheap: no adapter is opened): NVIDIA's driver, a DRM render node,
    or a Mac's. Software adapters (lavapipe) need none of these."""
    nvidia = Path("/proc/driver/nvidia/gpus")
    return (
        (nvidia.is_dir() and any(nvidia.iterdir()))
        or any(Path("/dev/dri").glob("renderD*"))
        or (sys.platform == "darwin" and platform.machine() == "arm64")
    )


def matmul_gflops(
    gpu: GpuDevice, m: int = 256, n: int = 1024, k: int = 1024, runs: int = 5
) -> tuple[float, float]:
    """GFLOP/s of the compute layer's matmul on ``gpu`` and of numpy's on this CPU, the same shape."""
    from ferrousforge.gpu import ops

    a, w = np.ones((m, k), np.float32), np.ones((n, k), np.float32)
    out = gpu.buffer(m * n * 4)
    rec = gpu.record()
    ops.matmul(rec, gpu.upload(a.tobytes()), gpu.upload(w.tobytes()), gpu.upload(bytes(n * 4)), out, m, n, k)

    def best(run: Callable[[], object]) -> float:
        run()  # warm-up (compiles the pipeline)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return 2.0 * m * n * k / min(times) / 1e9

    def on_gpu() -> object:
        gpu.submit(rec)
        return asyncio.run(gpu.read(out, 4))

    return best(on_gpu), best(lambda: a @ w.T)


@functools.cache
def wgpu_is_faster() -> bool:
    """``auto`` takes the wgpu engine only on a hardware adapter measured at twice the CPU's matmul
    speed (once per process); a software adapter never."""
    if not hardware_gpu():
        return False
    try:
        gpu = device()
        if gpu.software:
            return False
        on_gpu, on_cpu = matmul_gflops(gpu)
    except Exception:
        return False
    return on_gpu > 2 * on_cpu


def gpu_facts(gpu: GpuDevice | None) -> dict[str, Any]:
    """What a wgpu Mold says of where it runs (metadata, /api/ps, /api/info)."""
    if gpu is None:
        return {"accelerator": "wgpu"}
    return {"accelerator": "wgpu", "adapter": gpu.name, "software_adapter": gpu.software}


def device() -> GpuDevice:
    """This process's GPU device (a runner process has one model, so one device)."""
    global _device
    with _device_lock:
        if _device is None:
            from ferrousforge.gpu.native import NativeDevice

            try:
                _device = NativeDevice()
            except Exception as exc:
                raise ModelLoadError(f"no GPU adapter for the wgpu engine: {exc}") from exc
        return _device


class WgpuSession(OnnxSession):
    """The ONNX engine's tokenizer in front of the compute layer's encoder."""

    encoder: BertEncoder

    def open(self, model_path: str, tokenizer_path: str | None, config: dict[str, Any], threads: int) -> None:
        self.open_tokenizer(tokenizer_path, config)
        with open(model_path, "rb") as f:
            data = memoryview(f.read())
        try:
            weights, heads, eps = bert_weights(onnx_weights.read(data), data)
        except (ValueError, KeyError, IndexError) as exc:
            raise ModelLoadError(f"wgpu engine: {exc}") from exc
        shape = BertShape.from_weights({k: v[1] for k, v in weights.items()}, heads, eps)
        # f16 matrix weights where the adapter has shader-f16: cosine 0.9999998 to f32 on all-minilm
        self.encoder = BertEncoder(device(), weights, shape, config.get("pooling", "mean"), half=True)
        self.session = self.encoder
        self.input_names = {"input_ids", "attention_mask", "token_type_ids"}

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Pooled vectors (embedding models) or logits (cross-encoders), [batch, width]: the padded
        batch handed over as the GPU's buffers hold it (no per-token Python)."""
        b, s = ids.shape
        keep = mask != 0  # padding's ids and types are zero, as the encoder's own packing has them
        id_bytes, type_bytes = (np.where(keep, a, 0).astype("<u4").tobytes() for a in (ids, types))
        try:
            run = self.encoder.run_packed(b, s, id_bytes, type_bytes, keep.astype("<f4").tobytes())
            data, width = asyncio.run(run)
        except ValueError as exc:
            raise ForgeError(f"wgpu engine: {exc}") from exc
        return np.frombuffer(data, dtype=np.float32).reshape(b, width)


class WgpuMold:
    """What both wgpu Molds add to their ONNX twins: the session, and the adapter in metadata."""

    engine: ClassVar[str] = "wgpu"
    auto: ClassVar[bool] = False  # "auto" takes it only where it measures faster (wgpu_is_faster)
    session_class: type[OnnxSession] = WgpuSession

    @classmethod
    def preferred(cls) -> bool:
        return wgpu_is_faster()

    def metadata(self) -> dict[str, Any]:
        return {**Mold.metadata(self), **gpu_facts(_device)}  # type: ignore[arg-type]


@register_mold
class WgpuEmbeddingMold(WgpuMold, OnnxEmbeddingMold):
    def pooled(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        return self.session.run(ids, mask, types)  # pooled on the GPU


@register_mold
class WgpuRerankMold(WgpuMold, OnnxRerankMold):
    pass
