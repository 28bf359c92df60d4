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
    llama, onnx = info["engines"]
    assert llama["engine"] == "llama.cpp" and llama["package"].startswith("llama-cpp-python 0.3.")
    assert llama["flavour"] in ("native", "safe", "cuda", "vulkan", "metal")  # setup's record
    assert llama["runs_on"] == "cpu" and "AVX2" in llama["cpu_features"]
    assert "CPUExecutionProvider" in onnx["providers"]
    assert info["gpus"] == []  # this machine has none
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


def test_cli_info_and_ps_show_the_processor(host: Host) -> None:
    with host.client() as c:
        c.post("/api/generate", json={"model": "tiny", "prompt": "the", "stream": False})
    info = ff(host, "info")
    assert info.returncode == 0, info.stderr
    assert "llama-cpp-python" in info.stdout and "onnxruntime" in info.stdout and "tiny:latest" in info.stdout
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
