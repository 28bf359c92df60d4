"""llama.cpp on a GPU: ``num_gpu`` layers offloaded, and what /api/ps, ``ferrousforge ps``, /api/info
and each answer say about it. Runs only with a llama.cpp build that has a GPU device: the GPU machine's
CUDA build, or here a Vulkan build on Mesa's CPU device
(``LLAMA_CPP_LIB_PATH=<build>/lib GGML_VK_VISIBLE_DEVICES=0 pytest tests/test_gpu_offload.py``)."""

from __future__ import annotations

from typing import Any

import llama_cpp
import pytest

from ferrousforge_host.accelerators import GPU_KINDS, free_gpu_memory, llama_devices
from ferrousforge_host.engines.llamacpp import gpu_backend

from conftest import Host
from test_cli import ff

pytestmark = pytest.mark.skipif(
    not llama_cpp.llama_supports_gpu_offload(), reason="this llama.cpp build offloads to no GPU"
)


def generate(host: Host, num_gpu: int | None) -> dict[str, Any]:
    options = {"num_predict": 8, "temperature": 0, **({"num_gpu": num_gpu} if num_gpu is not None else {})}
    with host.client(timeout=300) as c:
        r = c.post(
            "/api/generate", json={"model": "tiny", "prompt": "the", "stream": False, "options": options}
        )
        assert r.status_code == 200, r.text
        (running,) = c.get("/api/ps").json()["models"]
    return r.json() | {"size": running["size"], "size_vram": running["size_vram"]}


def test_the_build_lists_its_gpu_and_measures_its_free_memory() -> None:
    backend = gpu_backend()
    assert backend in ("cuda", "vulkan", "metal")
    gpus = [d for d in llama_devices(memory=True) if d["kind"] in GPU_KINDS]
    assert gpus and gpus[0]["name"].lower().startswith(backend)
    assert 0 < (free_gpu_memory() or 0) <= gpus[0]["total_memory"]


def test_num_gpu_places_layers_and_every_report_follows(host: Host) -> None:
    """Default (-1): every layer on the GPU; one layer: a split; 0: the CPU alone, each a reload."""
    backend = gpu_backend()
    whole = generate(host, None)
    assert whole["accelerator"] == backend and whole["eval_count"] == 8
    assert whole["size_vram"] == whole["size"] > 0
    assert "100% GPU" in ff(host, "ps").stdout
    split = generate(host, 1)  # the tiny model has 2 layers and its output layer
    assert split["accelerator"] == backend and 0 < split["size_vram"] < split["size"]
    assert "% CPU/GPU" in ff(host, "ps").stdout
    cpu = generate(host, 0)
    assert cpu["accelerator"] == "cpu" and cpu["size_vram"] == 0 and cpu["eval_count"] == 8
    with host.client() as c:
        info = c.get("/api/info").json()
    llama = info["engines"][0]
    assert llama["gpu_offload"] and llama["runs_on"] == backend
    assert any(d.lower().startswith(backend) for d in llama["devices"])
