"""Builds llama-cpp-python for this machine, proves it runs here, and installs it.

A build has a *flavour*: ``native`` (llama.cpp's default, ``-march=native``, AMX included), ``safe``
(``GGML_NATIVE=OFF`` with this CPU's instruction sets named one by one, AMX left out), ``cuda`` and
``vulkan`` (the safe CPU flags plus that GPU backend) and ``metal`` (what macOS gets by default).
Wheels are cached under ``WHEELS/<version>-<flavour>-<cpu key>/``, the key a hash of the CPU's feature
flags, so a wheel built for another CPU or flavour is never picked up. After installing, a short Q4_K
generation runs in a subprocess; a build that dies there by a signal is marked bad in its cache entry
and the safe flavour is built instead. A GPU build chosen because a GPU is present (not asked for) that
fails to build or to run falls back to the CPU flavour, and later setups skip it while
``<entry>.failed`` says why.

AMX: ggml's AMX kernels build their tile configuration on the stack and load it with
``_tile_loadconfig``; GCC 12's intrinsic declares only 8 bytes of that memory as read, so at -O3 the
stores of the row and column sizes are dropped and whatever the stack held is loaded. The first tile
instruction then faults (SIGILL at ``tilezero``, or SIGSEGV) on every AMX-capable Xeon, however AMX
permission was obtained. ``native`` builds force-include ``ggml_amx_loadconfig.h``, which defines the
intrinsic with all 64 bytes as its operand; ``safe`` leaves AMX out.

Usage: python scripts/llama_build.py --wheels DIR --version 0.3.36 [--flavour auto|native|safe|cuda|...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FLAVOURS = ("native", "safe", "cuda", "vulkan", "metal")
GPU_FLAVOURS = ("cuda", "vulkan", "metal")
# x86 feature flags (as /proc/cpuinfo names them) and the ggml CMake option each enables
X86_OPTIONS = {
    "sse4_2": "GGML_SSE42",
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "bmi2": "GGML_BMI2",
    "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
}
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")
SMOKE = Path(__file__).with_name("llama_smoke.py")
AMX_LOADCONFIG = Path(__file__).resolve().with_name("ggml_amx_loadconfig.h")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cpu_flags() -> list[str]:
    """The CPU's feature flags: x86 ``flags`` or Arm ``Features`` from /proc/cpuinfo (sorted)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return [platform.machine(), platform.processor()]
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return sorted(set(value.split()))
    return [platform.machine()]


def cpu_key(flags: list[str]) -> str:
    return hashlib.sha256(" ".join([platform.machine(), *flags]).encode()).hexdigest()[:12]


def has_cuda_gpu() -> bool:
    gpus = Path("/proc/driver/nvidia/gpus")
    return shutil.which("nvcc") is not None and (gpus.is_dir() and any(gpus.iterdir()))


GPU_FOUND = "an NVIDIA GPU and nvcc are present"


def choose_flavour(asked: str, flags: list[str]) -> tuple[str, str]:
    """(flavour, why) for ``auto`` or an explicit request."""
    gpu = os.environ.get("FERROUSFORGE_GPU", "").lower()
    if asked != "auto":
        return asked, "asked for"
    if gpu in ("cuda", "vulkan"):
        return gpu, f"FERROUSFORGE_GPU={gpu}"
    if sys.platform == "darwin":
        return "metal", "macOS"
    if gpu != "cpu" and has_cuda_gpu():
        return "cuda", GPU_FOUND
    return cpu_flavour(flags)


def cpu_flavour(flags: list[str]) -> tuple[str, str]:
    amx = ", AMX's tile configuration loaded whole" if any(f in flags for f in AMX_FLAGS) else ""
    return "native", f"llama.cpp's default{amx}"


def cmake_args(flavour: str, flags: list[str]) -> list[str]:
    x86 = platform.machine() in ("x86_64", "AMD64")
    if flavour == "native":  # GCC's AMX intrinsic fixed (ggml_amx_loadconfig.h); a no-op without AMX
        return [f"-DCMAKE_CXX_FLAGS=-include{AMX_LOADCONFIG}"] if x86 else []
    if flavour == "metal":
        return []
    args = ["-DGGML_NATIVE=OFF"]
    if x86:
        args += [f"-D{opt}={'ON' if flag in flags else 'OFF'}" for flag, opt in X86_OPTIONS.items()]
        args += [f"-DGGML_{f.upper()}=OFF" for f in AMX_FLAGS]
        args += ["-DCMAKE_C_FLAGS=-mtune=native", "-DCMAKE_CXX_FLAGS=-mtune=native"]
    if flavour == "cuda":
        args += ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=native"]
    elif flavour == "vulkan":
        args += ["-DGGML_VULKAN=ON"]
    return args


@dataclass
class Entry:
    """One cache entry: a folder holding the wheel and build.json (flavour, flags, smoke result)."""

    folder: Path

    @property
    def wheel(self) -> Path | None:
        return next(iter(sorted(self.folder.glob("llama_cpp_python-*.whl"))), None)

    @property
    def info(self) -> dict[str, object]:
        try:
            data = json.loads((self.folder / "build.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def failed_note(self) -> Path:
        """Beside the folder (which appears only whole): why a GPU build failed here, if one did."""
        return self.folder.with_name(self.folder.name + ".failed")

    def record(self, **changes: object) -> None:
        tmp = self.folder / "build.json.tmp"
        tmp.write_text(json.dumps({**self.info, **changes}, indent=1))
        tmp.replace(self.folder / "build.json")


def entry_for(wheels: Path, version: str, flavour: str, flags: list[str]) -> Entry:
    return Entry(wheels / f"{version}-{flavour}-{cpu_key(flags)}")


def usable(entry: Entry, version: str, flavour: str, flags: list[str]) -> bool:
    """A cached wheel is reused only when it was built here, for this flavour, and did not crash."""
    info = entry.info
    return (
        entry.wheel is not None
        and info.get("version") == version
        and info.get("flavour") == flavour
        and info.get("cpu_flags") == flags
        and info.get("smoke") != "crashed"
    )


# a GPU build's compiler, and what provides it and the rest it needs (Debian's names for Vulkan)
NEEDS = {
    "cuda": ("nvcc", "the CUDA toolkit (nvcc and cuBLAS)"),
    "vulkan": ("glslc", "glslc, libvulkan-dev and spirv-headers"),
}


def sdk_dirs(sub: str) -> list[Path]:
    """Where CMake finds the Vulkan SDK's ``sub`` folder: ``VULKAN_SDK`` first, then the system's."""
    sdk = os.environ.get("VULKAN_SDK")
    return [*([Path(sdk) / sub] if sdk else []), Path("/usr") / sub, Path("/usr/local") / sub]


def missing(flavour: str) -> str | None:
    """What this machine lacks for a GPU build, said before minutes of compiling fail on it."""
    tool, package = NEEDS.get(flavour, ("", ""))
    path = os.pathsep.join([*(str(d) for d in sdk_dirs("bin")[:1]), os.environ.get("PATH", "")])
    if tool and shutil.which(tool, path=path) is None:
        return f"a {flavour} build of llama.cpp needs {tool}: install {package}"
    if flavour != "vulkan":
        return None
    header = next((h for d in sdk_dirs("include") if (h := d / "vulkan" / "vulkan_core.h").exists()), None)
    if header is None:
        return f"a vulkan build of llama.cpp needs the Vulkan headers: install {package}"
    if "VK_EXT_layer_settings" not in header.read_text(errors="replace"):
        return (
            f"the Vulkan headers in {header.parent} are too old for llama.cpp's Vulkan backend (no "
            "VK_EXT_layer_settings; Debian bookworm's 1.3.239 lack it, trixie's 1.4.309 have it): "
            "install newer ones, or name an SDK that has them with VULKAN_SDK"
        )
    return None


def build(entry: Entry, pip: list[str], version: str, flavour: str, flags: list[str]) -> None:
    args = cmake_args(flavour, flags)
    if lack := missing(flavour):
        raise SystemExit(lack)
    say(f"Building llama-cpp-python {version} ({flavour}) once; cached in {entry.folder}")
    entry.folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.folder.parent, prefix=".build-"))
    try:
        jobs = str(os.cpu_count())
        env = {**os.environ, "CMAKE_ARGS": shlex.join(args), "CMAKE_BUILD_PARALLEL_LEVEL": jobs}
        # --no-cache-dir: pip caches wheels it built by the sdist alone, whatever CMAKE_ARGS said
        wheel = ["wheel", "--no-cache-dir", "--no-deps", "--no-binary", "llama-cpp-python", "-w", str(tmp)]
        subprocess.run([*pip, *wheel, f"llama-cpp-python=={version}"], check=True, env=env)
        info = {"version": version, "flavour": flavour, "cpu_flags": flags, "cmake_args": args}
        (tmp / "build.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(entry.folder, ignore_errors=True)
        tmp.replace(entry.folder)  # a cache entry appears whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def failure(flavour: str, exc: BaseException) -> str:
    """One line for a build that was asked for and failed (pip has printed the compiler's output)."""
    if isinstance(exc, SystemExit):
        return str(exc)
    needs = f"; it needs {NEEDS[flavour][1]}" if flavour in NEEDS else ""
    return f"llama.cpp {flavour} could not be built or installed (pip's output is above){needs}"


def smoke(python: str, flavour: str, command: list[str] | None = None) -> tuple[str, str]:
    """Runs a short Q4_K generation in a subprocess, on the GPU for a GPU flavour: ("ok" | "crashed" |
    "failed", detail)."""
    cmd = command or [python, str(SMOKE), *(["--gpu"] if flavour in GPU_FLAVOURS else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return "crashed", f"{name} ({signal.strsignal(-proc.returncode) or name})"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or f"exit status {proc.returncode}").strip().splitlines()
        return "failed", lines[-1]
    return "ok", proc.stdout.strip()


def pip_install(pip: list[str], wheel: Path) -> None:
    subprocess.run([*pip, "install", "-q", "--force-reinstall", "--no-deps", str(wheel)], check=True)
    subprocess.run([*pip, "install", "-q", str(wheel)], check=True)  # its dependencies


def install_proven(
    wheels: Path,
    version: str,
    asked: str,
    build_wheel: Callable[[Entry, str], None],
    install: Callable[[Path], None],
    prove: Callable[[str], tuple[str, str]],
) -> Entry:
    """Build (or reuse) the chosen flavour, install it and prove it; after a crash, the safe flavour."""
    flags = cpu_flags()
    flavour, why = choose_flavour(asked, flags)
    say(f"llama.cpp build: {flavour} ({why})")
    while True:
        entry = entry_for(wheels, version, flavour, flags)
        failed = entry.failed_note
        if why == GPU_FOUND and (failed.exists() or entry.info.get("smoke") in ("failed", "crashed")):
            say(f"llama.cpp {flavour} failed on this machine before ({failed} says why; delete it to retry)")
            flavour, why = cpu_flavour(flags)
            continue
        try:
            if not usable(entry, version, flavour, flags):
                build_wheel(entry, flavour)
            wheel = entry.wheel
            assert wheel is not None
            install(wheel)
            result, detail = prove(flavour)
        except (subprocess.CalledProcessError, SystemExit) as exc:
            if why != GPU_FOUND:
                raise SystemExit(failure(flavour, exc)) from None
            result, detail = "failed", f"could not be built ({exc})"
        else:
            entry.record(smoke=result, smoke_detail=detail)
        if result == "ok":
            say(f"llama.cpp {flavour} build runs here: {detail}")
            return entry
        if why == GPU_FOUND:  # chosen because a GPU is here, not asked for: the CPU serves instead
            failed.write_text(f"{result}: {detail}\n")
            say(
                f"llama.cpp {flavour} build {result}: {detail}; building for the CPU instead "
                f"(FERROUSFORGE_GPU={flavour} insists, FERROUSFORGE_GPU=cpu skips the GPU)"
            )
            flavour, why = cpu_flavour(flags)
            continue
        if result == "crashed" and flavour != "safe":
            say(f"llama.cpp {flavour} build died by {detail} in a Q4_K generation; building safe")
            flavour = "safe"
            continue
        raise SystemExit(f"llama.cpp {flavour} build does not run here: {result}: {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--flavour", default=os.environ.get("FERROUSFORGE_LLAMA_FLAVOUR", "auto"))
    args = parser.parse_args()
    if args.flavour not in ("auto", *FLAVOURS):
        parser.error(f"--flavour must be auto or one of {', '.join(FLAVOURS)}")
    pip = [sys.executable, "-m", "pip"]
    flags = cpu_flags()
    entry = install_proven(
        args.wheels,
        args.version,
        args.flavour,
        lambda entry, flavour: build(entry, pip, args.version, flavour, flags),
        lambda wheel: pip_install(pip, wheel),
        lambda flavour: smoke(sys.executable, flavour),
    )
    # what the host reports as its llama.cpp build (ferrousforge info)
    (Path(sys.prefix) / "ferrousforge-llama-build.json").write_text(json.dumps(entry.info, indent=1))


if __name__ == "__main__":
    main()
