"""What this machine computes with: the CPU, its GPUs, and which engine build runs on which.

GPUs are found with the vendors' own tools when present (``nvidia-smi`` for CUDA, ``vulkaninfo`` for
Vulkan); macOS reports its Metal GPU. The llama.cpp build flavour is the record setup wrote beside the
environment (``scripts/llama_build.py``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

BUILD_RECORD = Path(sys.prefix) / "ferrousforge-llama-build.json"
# instruction sets worth naming (x86 and Arm names as /proc/cpuinfo gives them)
ISA = re.compile(r"^(sse4_2|avx.*|fma|f16c|bmi2|amx.*|asimd.*|sve\d?|sme\d?|i8mm|bf16|dotprod|fphp)$")


def _run(*cmd: str) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@cache
def cpu() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), list[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = sorted(f for f in value.split() if ISA.match(f))
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "arch": platform.machine(), "cores": cores, "instruction_sets": flags}


def nvidia_gpus() -> list[dict[str, Any]]:
    query = "index,name,driver_version,memory.total,memory.free"
    out = _run("nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits")
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5 and parts[3].isdigit():
            gpus.append(
                {
                    "api": "cuda",
                    "index": int(parts[0]),
                    "name": parts[1],
                    "driver": parts[2],
                    "total_memory": int(parts[3]) << 20,
                    "free_memory": int(parts[4]) << 20 if parts[4].isdigit() else None,
                }
            )
    return gpus


def vulkan_gpus() -> list[dict[str, Any]]:
    """Vulkan devices as ``vulkaninfo`` reports them; memory is the largest device-local heap, free
    memory its budget less its use where the driver reports them (VK_EXT_memory_budget)."""
    gpus: list[dict[str, Any]] = []
    for block in re.split(r"(?m)^GPU\d+:$", _run("vulkaninfo"))[1:]:
        name = re.search(r"deviceName\s*=\s*(.+)", block)
        kind = re.search(r"deviceType\s*=\s*(\S+)", block)
        driver = re.search(r"driverInfo\s*=\s*(.+)", block)
        if name:
            gpus.append(
                {
                    "api": "vulkan",
                    "name": name.group(1).strip(),
                    "driver": driver.group(1).strip() if driver else "",
                    **_device_memory(block),
                    "software": bool(kind and "CPU" in kind.group(1)),
                }
            )
    return gpus


def _device_memory(block: str) -> dict[str, int | None]:
    heaps = re.findall(r"memoryHeaps\[\d+\]:(.*?)(?=memoryHeaps\[|memoryTypes|\Z)", block, re.DOTALL)
    local = []
    for heap in heaps:
        size, budget, usage = (re.search(rf"{key}\s*=\s*(\d+)", heap) for key in ("size", "budget", "usage"))
        if size and "DEVICE_LOCAL" in heap:
            free = int(budget.group(1)) - int(usage.group(1)) if budget and usage else None
            local.append((int(size.group(1)), free))
    total, free = max(local, default=(None, None), key=lambda h: h[0] or 0)
    return {"total_memory": total, "free_memory": free}


def gpus() -> list[dict[str, Any]]:
    found = nvidia_gpus() + vulkan_gpus()
    if sys.platform == "darwin" and platform.machine() == "arm64":
        found.append({"api": "metal", "name": "Apple GPU", "unified_memory": True})
    return found


# ggml_backend_dev_type in the llama.cpp that llama-cpp-python 0.3.36 vendors
DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
GPU_KINDS = ("gpu", "igpu")  # the devices a model's layers are offloaded to


@cache
def _ggml() -> Any:
    """libggml from the folder llama-cpp-python loaded libllama from (its own, or LLAMA_CPP_LIB_PATH's),
    so the devices listed are the ones that llama.cpp build registered."""
    import ctypes

    from llama_cpp import llama_cpp
    from llama_cpp._ctypes_extensions import load_shared_library

    lib = load_shared_library("ggml", llama_cpp._base_path)
    size, device = ctypes.c_size_t, ctypes.c_void_p
    lib.ggml_backend_dev_count.restype = size
    lib.ggml_backend_dev_get.argtypes, lib.ggml_backend_dev_get.restype = [size], device
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [device], ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes, lib.ggml_backend_dev_type.restype = [device], ctypes.c_int
    lib.ggml_backend_dev_backend_reg.argtypes, lib.ggml_backend_dev_backend_reg.restype = [device], device
    lib.ggml_backend_reg_name.argtypes, lib.ggml_backend_reg_name.restype = [device], ctypes.c_char_p
    lib.ggml_backend_dev_memory.argtypes = [device, ctypes.POINTER(size), ctypes.POINTER(size)]
    return lib


def llama_devices(memory: bool = False) -> list[dict[str, Any]]:
    """The devices llama.cpp registered (``CPU``, ``CUDA0``, ``Vulkan0``...), with their free and total
    memory when asked: only where the model is loaded, since asking CUDA opens a context on the GPU."""
    import ctypes

    lib, devices = _ggml(), []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        found = {
            "name": lib.ggml_backend_dev_name(dev).decode(),
            "description": lib.ggml_backend_dev_description(dev).decode(errors="replace"),
            "kind": DEVICE_KINDS.get(lib.ggml_backend_dev_type(dev), "other"),
            "backend": lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)).decode(),
        }
        if memory:
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            found |= {"free_memory": free.value, "total_memory": total.value}
        devices.append(found)
    return devices


def free_gpu_memory() -> int | None:
    """Free memory of the GPU llama.cpp offloads to first, as its own backend measures it (CUDA,
    Vulkan, Metal), for deciding how many layers fit; None where it has no GPU."""
    gpus = [d for d in llama_devices(memory=True) if d["kind"] in GPU_KINDS]
    return int(gpus[0]["free_memory"]) if gpus else None


def llama_build() -> dict[str, Any]:
    """The llama.cpp build: flavour and flags from setup's record, features from llama.cpp itself."""
    import llama_cpp

    external = os.environ.get("LLAMA_CPP_LIB_PATH")  # llama-cpp-python loads the libraries there instead
    try:
        record = {"flavour": f"external ({external})"} if external else json.loads(BUILD_RECORD.read_text())
    except (OSError, ValueError):
        record = {"flavour": "unknown (not built by setup)"}
    devices = llama_devices()
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    gpus = [d["backend"] for d in devices if d["kind"] in GPU_KINDS]
    return {
        "engine": "llama.cpp",
        "package": f"llama-cpp-python {llama_cpp.__version__}",
        "flavour": record.get("flavour"),
        "cmake_args": record.get("cmake_args", []),
        "gpu_offload": offload,
        "backends": list(dict.fromkeys(["CPU", *(d["backend"] for d in devices)])),
        "devices": [f"{d['name']}: {d['description']}" for d in devices],
        "runs_on": gpus[0].lower() if gpus and offload else "cpu",
        "cpu_features": cpu_features(llama_cpp.llama_print_system_info().decode()),
    }


def cpu_features(system_info: str) -> list[str]:
    """The CPU features llama.cpp was built with, from its system info (``CPU : AVX2 = 1 | ...``, other
    backends' sections after it: ``CUDA : ARCHS = 900 | USE_GRAPHS = 1 | ...``)."""
    sections = re.split(r"(\w+) : ", system_info)
    cpu = dict(zip(sections[1::2], sections[2::2], strict=False)).get("CPU", "")
    return sorted(
        key.strip() for key, _, value in (p.partition("=") for p in cpu.split("|")) if value.strip() == "1"
    )


def onnx_build() -> dict[str, Any]:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    return {
        "engine": "onnxruntime",
        "package": f"onnxruntime {ort.__version__}",
        "providers": providers,
        "gpu_offload": "CUDAExecutionProvider" in providers,
    }


# The wgpu engine's adapter, asked for in a process of its own (a GPU driver is loaded for it: a fault
# there must not reach the server), as the engine's runner asks for it
_WGPU_PROBE = (
    "import json, wgpu\n"
    "from ferrousforge.gpu.native import SOFTWARE\n"
    "a = wgpu.gpu.request_adapter_sync(power_preference='high-performance')\n"
    "i = a.info\n"
    "name = f\"{i.get('device', '')} ({i.get('backend_type', '')})\".strip()\n"
    "soft = i.get('adapter_type') == 'CPU' or any(s in name.lower() for s in SOFTWARE)\n"
    "print(json.dumps({'name': name, 'backend': i.get('backend_type', ''), 'software': soft}))\n"
)


@cache
def wgpu_build() -> dict[str, Any]:
    """The wgpu engine (FerrousForge's own kernels): wgpu's version and the adapter it would run on."""
    try:
        import wgpu
    except ImportError:
        return {"engine": "wgpu", "package": "wgpu (not installed)", "runs_on": "-", "gpu_offload": False}
    entry: dict[str, Any] = {"engine": "wgpu", "package": f"wgpu {wgpu.__version__}", "gpu_offload": False}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WGPU_PROBE], capture_output=True, text=True, timeout=60, check=True
        )
        adapter = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return {**entry, "runs_on": "-", "adapter": None}
    software, backend = bool(adapter["software"]), str(adapter["backend"]).lower()
    return {
        **entry,
        "adapter": adapter["name"],
        "backend": backend,
        "software": software,
        "gpu_offload": not software,
        "runs_on": "cpu" if software else backend or "gpu",
    }


def report() -> dict[str, Any]:
    """Everything ``ferrousforge info`` and ``GET /api/info`` show."""
    found = gpus()
    llama, onnx, gpu = llama_build(), onnx_build(), wgpu_build()
    onnx["runs_on"] = "cuda" if onnx["gpu_offload"] and any(g["api"] == "cuda" for g in found) else "cpu"
    if gpu.get("adapter") and not any(g["name"] in gpu["adapter"] for g in found):  # (no vulkaninfo here)
        found.append(
            {
                "api": gpu["backend"],
                "name": gpu["adapter"],
                "software": gpu["software"],
            }
        )
    return {"cpu": cpu(), "gpus": found, "engines": [llama, onnx, gpu]}
