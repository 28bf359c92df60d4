"""Accelerators detected and reported: /api/info and ``ferrousforge info``, the accelerator named in
answers, Ollama's ``num_gpu`` and ``/api/ps`` fields, and the PROCESSOR column of ``ferrousforge ps``."""

from __future__ import annotations

import os
import platform

import ollama
import pytest

from ferrousforge_host.cli import processor
from ferrousforge_host.engines.llamacpp import gpu_layers

from conftest import Host
from test_cli import ff


def test_info_names_the_cpu_the_engine_builds_and_what_each_model_runs_on(host: Host) -> None:
    with host.client() as c:
        r = c.post("/api/generate", json={"model": "tiny", "prompt": "the", "stream": False})
        assert r.status_code == 200 and r.json()["accelerator"] == "cpu"
        info = c.get("/api/info").json()
    assert info["cpu"]["cores"] == len(os.sched_getaffinity(0))
    assert info["cpu"]["arch"] == platform.machine()
    if platform.machine() == "x86_64":
        assert "avx2" in info["cpu"]["instruction_sets"] and "smep" not in info["cpu"]["instruction_sets"]
    llama, onnx, gpu = info["engines"]
    assert llama["engine"] == "llama.cpp" and llama["package"].startswith("llama-cpp-python 0.3.")
    assert llama["flavour"] in ("native", "safe", "cuda", "vulkan", "metal")  # setup's record
    assert llama["runs_on"] == "cpu" and "AVX2" in llama["cpu_features"]
    assert [d.split(":")[0] for d in llama["devices"]] == ["CPU"]  # as llama.cpp registered them
    assert "CPUExecutionProvider" in onnx["providers"]
    # no GPU here: Vulkan's CPU device (lavapipe), the wgpu engine's adapter, is listed as software
    assert gpu["engine"] == "wgpu" and gpu["package"].startswith("wgpu 0.")
    assert gpu["software"] and gpu["runs_on"] == "cpu" and "llvmpipe" in gpu["adapter"]
    assert info["gpus"] and all(g["api"] == "vulkan" and g["software"] for g in info["gpus"])
    (model,) = info["models"]
    assert model["name"] == "tiny:latest" and model["engine"] == "llama.cpp" and model["accelerator"] == "cpu"


def test_num_gpu_0_keeps_the_model_on_the_cpu_and_ps_types_match_ollamas(host: Host) -> None:
    client = ollama.Client(host=host.url)
    reply = client.generate("tiny", "the", options={"num_gpu": 0, "num_predict": 4})
    assert reply.done
    (running,) = client.ps().models
    assert running.size_vram == 0 and isinstance(running.size, int) and running.size > 0
    assert running.context_length == 2048 and running.expires_at is not None
    assert gpu_layers(0, 30, 100 << 20, 1 << 20) == 0


def test_llama_cpp_reports_its_devices_and_their_memory() -> None:
    """The devices and memory llama.cpp's own backends see (what ``num_gpu``'s default fills): here
    the CPU alone, with this machine's memory, and so no GPU memory to fill."""
    from ferrousforge_host.accelerators import free_gpu_memory, llama_devices

    (cpu,) = llama_devices(memory=True)
    assert cpu["name"] == "CPU" and cpu["kind"] == "cpu"
    assert (
        0
        < cpu["free_memory"]
        <= cpu["total_memory"]
        == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    )
    assert free_gpu_memory() is None


def test_cli_info_and_ps_show_the_processor(host: Host) -> None:
    with host.client() as c:
        c.post("/api/generate", json={"model": "tiny", "prompt": "the", "stream": False})
    info = ff(host, "info")
    assert info.returncode == 0, info.stderr
    assert "llama-cpp-python" in info.stdout and "onnxruntime" in info.stdout and "tiny:latest" in info.stdout
    row = next(line.split() for line in info.stdout.splitlines() if line.strip().startswith("tiny:latest"))
    assert row[1:4] == ["llama.cpp", "cpu", "f16"] and row[4].isdigit()  # KV cache type, runner pid
    ps = ff(host, "ps")
    assert "PROCESSOR" in ps.stdout and "100% CPU" in ps.stdout


@pytest.mark.parametrize(
    ("size", "vram", "shown"),
    [(100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 52, "48%/52% CPU/GPU"), (0, 0, "100% CPU")],
)
def test_processor_split_reads_as_ollamas(size: int, vram: int, shown: str) -> None:
    assert processor(size, vram) == shown


def test_a_llama_cpp_build_loaded_from_elsewhere_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama-cpp-python loads the libraries LLAMA_CPP_LIB_PATH names (a build made apart, as on the GPU
    machine): info must not report setup's flavour for them."""
    from ferrousforge_host.accelerators import llama_build

    monkeypatch.setenv("LLAMA_CPP_LIB_PATH", "/opt/llama-cuda/lib")
    assert llama_build()["flavour"] == "external (/opt/llama-cuda/lib)"
    monkeypatch.delenv("LLAMA_CPP_LIB_PATH")
    assert not llama_build()["flavour"].startswith("external")


VULKANINFO = """\
Device Properties and Extensions:
=================================
GPU0:
VkPhysicalDeviceProperties:
	deviceType        = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
	deviceName        = NVIDIA H200
VkPhysicalDeviceDriverProperties:
	driverInfo      = 580.95.05
VkPhysicalDeviceMemoryProperties:
=================================
memoryHeaps: count = 2
	memoryHeaps[0]:
		size   = 150754820096 (0x2319000000) (140.40 GiB)
		budget = 149250506752 (0x22c0000000) (139.00 GiB)
		usage  = 524288000 (0x1f400000) (500.00 MiB)
		flags: count = 1
			MEMORY_HEAP_DEVICE_LOCAL_BIT
	memoryHeaps[1]:
		size   = 202000000000 (0x2f07b9bc00) (188.13 GiB)
		budget = 190000000000 (0x2c3d8a3c00) (176.95 GiB)
		usage  = 0 (0x00000000) (0.00 B)
		flags:
			None
memoryTypes: count = 1
	memoryTypes[0]:
		heapIndex     = 0
GPU1:
VkPhysicalDeviceProperties:
	deviceType        = PHYSICAL_DEVICE_TYPE_CPU
	deviceName        = llvmpipe (LLVM 15.0.6, 256 bits)
VkPhysicalDeviceMemoryProperties:
memoryHeaps: count = 1
	memoryHeaps[0]:
		size   = 2147483648 (0x80000000) (2.00 GiB)
		flags: count = 1
			MEMORY_HEAP_DEVICE_LOCAL_BIT
memoryTypes: count = 1
"""


def test_vulkan_gpus_report_the_device_heap_and_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU's memory is its device-local heap (not the host heap beside it); free memory is the
    heap's budget less its use, unknown where the driver has no budget extension."""
    from ferrousforge_host import accelerators

    monkeypatch.setattr(accelerators, "_run", lambda *cmd: VULKANINFO if cmd == ("vulkaninfo",) else "")
    h200, lavapipe = accelerators.vulkan_gpus()
    assert h200 == {
        "api": "vulkan",
        "name": "NVIDIA H200",
        "driver": "580.95.05",
        "total_memory": 150754820096,
        "free_memory": 149250506752 - 524288000,
        "software": False,
    }
    assert lavapipe["software"] and lavapipe["total_memory"] == 2 << 30 and lavapipe["free_memory"] is None


def test_cpu_features_come_from_the_cpu_section_of_llama_cpps_system_info() -> None:
    from ferrousforge_host.accelerators import cpu_features

    info = "CUDA : ARCHS = 900 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX = 1 | AMX = 0 | "
    assert cpu_features(info) == ["AVX", "SSE3"]
