"""The llama.cpp build setup makes: flavour choice, cache keying, the Q4_K smoke check and the fall
back to the safe flavour when a build dies by a signal (scripts/llama_build.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from tinymodel import write_tiny_llama

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import llama_build as build

FLAGS = ["avx", "avx2", "avx512f", "avx512_vnni", "f16c", "fma", "sse4_2"]
XEON = sorted([*FLAGS, "amx_bf16", "amx_int8", "amx_tile", "avx512_fp16"])
DIES_BY_SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]


def install_nothing(wheel: Path) -> None:
    """Setup's install step, for tests whose wheels are fakes."""


def fake_build(entry: build.Entry, version: str, flavour: str, flags: list[str]) -> None:
    entry.folder.mkdir(parents=True)
    (entry.folder / f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl").write_bytes(b"wheel")
    info = {"version": version, "flavour": flavour, "cpu_flags": flags}
    (entry.folder / "build.json").write_text(json.dumps(info))


def test_the_smoke_model_has_q4_k_weights_in_the_shapes_amx_takes(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(write_tiny_llama(tmp_path / "q.gguf", q4k=True))
    q4k = [t for t in reader.tensors if t.tensor_type == gguf.GGMLQuantizationType.Q4_K]
    assert {t.name for t in q4k} >= {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"}
    assert all(t.shape[0] % 256 == 0 and t.shape[1] % 32 == 0 for t in q4k)


def test_the_installed_build_passes_the_smoke_check() -> None:
    result, detail = build.smoke(sys.executable, "native")
    assert result == "ok", detail
    assert "tokens from a Q4_K model" in detail and "CPU :" in detail


def test_a_build_that_dies_by_a_signal_is_reported_as_crashed() -> None:
    assert build.smoke(sys.executable, "native", DIES_BY_SIGILL) == (
        "crashed",
        "SIGILL (Illegal instruction)",
    )
    failed = build.smoke(
        sys.executable, "native", [sys.executable, "-c", "raise SystemExit('no llama here')"]
    )
    assert failed == ("failed", "no llama here")


def test_the_cache_is_keyed_by_flavour_and_cpu_flags(tmp_path: Path) -> None:
    native = build.entry_for(tmp_path, "0.3.36", "native", FLAGS)
    assert native.folder != build.entry_for(tmp_path, "0.3.36", "safe", FLAGS).folder
    assert native.folder != build.entry_for(tmp_path, "0.3.36", "native", XEON).folder
    fake_build(native, "0.3.36", "native", FLAGS)
    assert build.usable(native, "0.3.36", "native", FLAGS)
    # a folder copied from elsewhere or renamed is not trusted by its name: its record must agree
    assert not build.usable(native, "0.3.36", "native", XEON)
    assert not build.usable(native, "0.3.36", "safe", FLAGS)
    assert not build.usable(native, "0.3.37", "native", FLAGS)
    native.record(smoke="crashed")
    assert not build.usable(native, "0.3.36", "native", FLAGS)


def test_amx_cpus_get_the_native_flavour_with_its_tile_configuration_fixed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FERROUSFORGE_GPU", raising=False)
    monkeypatch.setattr(build, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(build.platform, "machine", lambda: "x86_64")
    flavour, why = build.choose_flavour("auto", XEON)
    assert flavour == "native" and "AMX" in why
    assert build.choose_flavour("auto", FLAGS) == ("native", "llama.cpp's default")
    # every native x86 build force-includes the fixed intrinsic (it does nothing where AMX is off)
    assert build.cmake_args("native", XEON) == [f"-DCMAKE_CXX_FLAGS=-include{build.AMX_LOADCONFIG}"]
    assert build.AMX_LOADCONFIG.is_file()
    # safe (the fallback) and the GPU flavours never ask for AMX
    args = build.cmake_args("safe", XEON)
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX512=ON" in args and "-DGGML_AVX512_VNNI=ON" in args
    assert not [a for a in args if "AMX" in a and a.endswith("=ON")]
    assert "-DGGML_AVX512=OFF" in build.cmake_args("safe", ["avx", "avx2", "fma", "f16c"])
    cuda = build.cmake_args("cuda", XEON)
    assert "-DGGML_CUDA=ON" in cuda and "-DGGML_AMX_INT8=OFF" in cuda
    monkeypatch.setenv("FERROUSFORGE_GPU", "cuda")
    assert build.choose_flavour("auto", FLAGS)[0] == "cuda"


# ggml's pattern (ggml-cpu/amx/mmq.cpp): the tile configuration built on the stack, loaded, used
AMX_PROGRAM = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
struct tile_config_t {
    uint8_t palette_id = 0; uint8_t start_row = 0; uint8_t reserved_0[14] = {0};
    uint16_t colsb[16] = {0}; uint8_t rows[16] = {0};
};
__attribute__((noinline)) void configure() {
    alignas(64) tile_config_t tc = {};
    tc.palette_id = 1;
    tc.rows[0] = 8;   tc.colsb[0] = 64;
    tc.rows[4] = 16;  tc.colsb[4] = 64;
    _tile_loadconfig(&tc);
}
int main() {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) return 3;
    configure();
    alignas(64) int32_t out[16 * 16] = {1};
    _tile_zero(4);
    _tile_stored(4, out, 64);
    _tile_release();
    printf("%d\n", out[0]);
}
"""


def test_the_fixed_intrinsic_loads_ggml_s_tile_configuration_on_an_amx_cpu(tmp_path: Path) -> None:
    """GCC 12 drops the stores of the configuration's sizes (its intrinsic says 8 bytes are read), and
    tilezero faults; with the force-included header the program runs. Needs a CPU with AMX."""
    if not {"amx_tile", "amx_int8"} <= set(build.cpu_flags()):
        pytest.skip("this CPU has no AMX")
    source = tmp_path / "amx.cpp"
    source.write_text(AMX_PROGRAM)
    program = tmp_path / "amx"
    include = f"-include{build.AMX_LOADCONFIG}"
    subprocess.run(["g++", "-O3", "-march=native", include, str(source), "-o", str(program)], check=True)
    proc = subprocess.run([str(program)], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "0\n")


def test_a_crashing_build_is_marked_and_the_safe_flavour_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = build.cpu_flags()
    built: list[str] = []

    def build_wheel(entry: build.Entry, flavour: str) -> None:
        built.append(flavour)
        fake_build(entry, "0.3.36", flavour, flags)

    def prove(flavour: str) -> tuple[str, str]:
        runs = [sys.executable, "-c", "print('ok')"]
        return build.smoke(sys.executable, flavour, DIES_BY_SIGILL if flavour == "native" else runs)

    entry = build.install_proven(tmp_path, "0.3.36", "native", build_wheel, install_nothing, prove)
    assert built == ["native", "safe"] and entry.info["flavour"] == "safe" and entry.info["smoke"] == "ok"
    native = build.entry_for(tmp_path, "0.3.36", "native", flags)
    assert native.info["smoke"] == "crashed"
    assert "native build died by SIGILL (Illegal instruction) in a Q4_K generation; building safe" in (
        capsys.readouterr().err
    )
    # the next setup reuses the proven safe wheel without building anything
    built.clear()
    again = build.install_proven(tmp_path, "0.3.36", "safe", build_wheel, install_nothing, prove)
    assert built == [] and again.folder == entry.folder


@pytest.fixture
def gpu_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """An NVIDIA GPU and nvcc as setup sees them, and no FERROUSFORGE_GPU asking for anything."""
    monkeypatch.delenv("FERROUSFORGE_GPU", raising=False)
    monkeypatch.setattr(build, "has_cuda_gpu", lambda: True)


@pytest.mark.usefixtures("gpu_here")
def test_a_gpu_build_that_fails_here_falls_back_to_the_cpu_and_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build, "cpu_flags", lambda: FLAGS)
    built: list[str] = []

    def build_wheel(entry: build.Entry, flavour: str) -> None:
        built.append(flavour)
        if flavour == "cuda":  # as where the toolkit has nvcc but no cuBLAS
            raise subprocess.CalledProcessError(1, ["pip", "wheel", "llama-cpp-python"])
        fake_build(entry, "0.3.36", flavour, FLAGS)

    def prove(flavour: str) -> tuple[str, str]:
        return "ok", "tokens from a Q4_K model"

    entry = build.install_proven(tmp_path, "0.3.36", "auto", build_wheel, install_nothing, prove)
    assert built == ["cuda", "native"] and entry.info["flavour"] == "native"
    assert "llama.cpp cuda build failed: could not be built" in capsys.readouterr().err
    assert build.entry_for(tmp_path, "0.3.36", "cuda", FLAGS).failed_note.exists()
    built.clear()  # the next setup does not spend minutes on the same failure
    build.install_proven(tmp_path, "0.3.36", "auto", build_wheel, install_nothing, prove)
    assert built == [] and "cuda failed on this machine before" in capsys.readouterr().err
    # asked for by name, a failing GPU build is an error in one line, not a quiet CPU build
    monkeypatch.setenv("FERROUSFORGE_GPU", "cuda")
    with pytest.raises(SystemExit, match=r"llama.cpp cuda could not be built .* needs the CUDA toolkit"):
        build.install_proven(tmp_path, "0.3.36", "auto", build_wheel, install_nothing, prove)


def test_a_vulkan_build_that_fails_names_what_it_needs(tmp_path: Path) -> None:
    """Vulkan needs Debian's glslc, libvulkan-dev and spirv-headers: a build missing any says so."""

    def build_wheel(entry: build.Entry, flavour: str) -> None:
        raise subprocess.CalledProcessError(1, ["pip", "wheel", "llama-cpp-python"])

    with pytest.raises(SystemExit) as failed:
        build.install_proven(
            tmp_path, "0.3.36", "vulkan", build_wheel, install_nothing, lambda flavour: ("ok", "")
        )
    assert str(failed.value) == (
        "llama.cpp vulkan could not be built or installed (pip's output is above); "
        "it needs glslc, libvulkan-dev and spirv-headers"
    )
    assert not list(tmp_path.iterdir())  # no cache entry, no note: the next setup tries again


@pytest.mark.usefixtures("gpu_here")
def test_a_gpu_build_that_does_not_run_here_falls_back_to_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build, "cpu_flags", lambda: XEON)

    def prove(flavour: str) -> tuple[str, str]:
        if flavour == "cuda":
            return "failed", "CUDA driver version is insufficient for CUDA runtime version"
        return "ok", "tokens from a Q4_K model"

    def build_wheel(entry: build.Entry, flavour: str) -> None:
        fake_build(entry, "0.3.36", flavour, XEON)

    entry = build.install_proven(tmp_path, "0.3.36", "auto", build_wheel, install_nothing, prove)
    assert entry.info["flavour"] == "native"  # this CPU's own choice
    assert build.entry_for(tmp_path, "0.3.36", "cuda", XEON).info["smoke"] == "failed"
    assert "cuda build failed: CUDA driver version is insufficient" in capsys.readouterr().err


def test_the_build_script_refuses_an_unknown_flavour(tmp_path: Path) -> None:
    script = Path(build.__file__)
    cmd = [sys.executable, str(script), "--wheels", str(tmp_path), "--version", "0", "--flavour", "turbo"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "--flavour must be auto or one of native, safe" in proc.stderr


def test_a_vulkan_build_checks_its_compiler_and_headers_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp's Vulkan backend uses VK_EXT_layer_settings, which Debian bookworm's headers lack:
    setup says so at once instead of failing ten minutes into the build."""
    sdk = tmp_path / "sdk"
    (sdk / "include" / "vulkan").mkdir(parents=True)
    (sdk / "bin").mkdir()
    (sdk / "bin" / "glslc").write_text("#!/bin/sh\n")
    (sdk / "bin" / "glslc").chmod(0o755)
    header = sdk / "include" / "vulkan" / "vulkan_core.h"
    header.write_text("#define VK_HEADER_VERSION 239\n")
    monkeypatch.setenv("VULKAN_SDK", str(sdk))
    monkeypatch.setenv("PATH", "")
    assert "too old for llama.cpp's Vulkan backend" in (build.missing("vulkan") or "")
    header.write_text("#define VK_HEADER_VERSION 309\n#define VK_EXT_layer_settings 1\n")
    assert build.missing("vulkan") is None
    (sdk / "bin" / "glslc").unlink()  # no compiler in the SDK or on PATH
    assert build.missing("vulkan") == (
        "a vulkan build of llama.cpp needs glslc: install glslc, libvulkan-dev and spirv-headers"
    )
    assert build.missing("safe") is None
