"""Packs what ``bench/gpu_machine.sh`` needs on the GPU machine into ``.gpu/`` (ignored by git; ~27 MB,
under the 64 MiB a device call carries), from this machine's package registries and model packages:

- ``llama-src.tgz``: llama.cpp's source as the llama-cpp-python release FerrousForge runs vendors it,
  without models, docs, media, benches, CI files and the ggml backends no machine here uses (~9 MB);
- ``gemma3.gguf.gz``, ``smollm2.gguf.gz``: the default chat models with their tensor data zeroed: same
  metadata, shapes and types, so they load and time as the models do, and gzip to a few MB;
- ``all-minilm.onnx.gz``: the ONNX file the host converts all-minilm into, its tensors zeroed (the
  encoder's benchmark against torch; ~0.2 MB), and ``all-minilm-tokenizer.json.gz`` (from texts);
- ``wheels/``: wgpu and what it needs, for the machine's Python 3.12 (its image has no wgpu), and
  gguf (the kernels' tests);
- ``host-wheels/`` and ``llama_cpp_py/``: what the host server needs that the image lacks, and
  llama-cpp-python's Python package from its sdist (its library is the one built there, found through
  ``LLAMA_CPP_LIB_PATH``);
- ``gl/``: the Vulkan loader and glvnd's Debian packages (NVIDIA's Vulkan driver lives in its GLX
  library, which needs glvnd's dispatch library: without them wgpu finds no adapter there).

    .venv/bin/python bench/gpu_machine_prepare.py
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_dispatches import models

from ferrousforge.gguf import parse_tensors

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".gpu"
LLAMA_CPP_PYTHON = "0.3.36"
UNUSED_BACKENDS = (
    "sycl",
    "opencl",
    "hexagon",
    "cann",
    "openvino",
    "et",
    "metal",
    "virtgpu",
    "webgpu",
    "musa",
)
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
PLATFORM_ARGS = [arg for p in PLATFORMS for arg in ("--platform", p)]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


# What `ferrousforge serve` imports that an image with only torch, sentence-transformers and onnxruntime
# may lack (checked in a Python 3.12 venv holding just numpy, jinja2, tokenizers and onnxruntime).
HOST_WHEELS = [
    "starlette", "uvicorn", "httptools", "uvloop", "orjson", "python-multipart", "diskcache",
    "httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi", "prometheus-client",
    "typer", "click", "shellingham", "rich", "markdown-it-py", "mdurl", "pygments", "annotated-doc",
    "typing-extensions", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
]  # fmt: skip


def llama_source() -> None:
    target = OUT / "llama-src.tgz"
    if target.exists() and (OUT / "llama_cpp_py").exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
            "-d",
            tmp,
        )
        with tarfile.open(next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))) as sdist:
            sdist.extractall(tmp, filter="data")
        package = next(Path(tmp).glob("llama_cpp_python-*"))
        shutil.rmtree(OUT / "llama_cpp_py", ignore_errors=True)
        shutil.copytree(package / "llama_cpp", OUT / "llama_cpp_py" / "llama_cpp")
        src = package / "vendor" / "llama.cpp"
        for name in ("models", "docs", "media", "benches", ".github", ".devops"):
            shutil.rmtree(src / name, ignore_errors=True)
        for backend in UNUSED_BACKENDS:
            shutil.rmtree(src / "ggml" / "src" / f"ggml-{backend}", ignore_errors=True)
        with tarfile.open(target, "w:gz") as out:
            out.add(src, arcname="llama.cpp")


def zeroed(source: Path, target: Path) -> None:
    """The GGUF with every tensor's bytes zero (the header and tensor table as they are)."""
    if target.exists():
        return
    data = memoryview(source.read_bytes())
    _meta, tensors = parse_tensors(data, len(data))
    start = min(info.offset for info in tensors.values())
    with gzip.open(target, "wb", compresslevel=6) as out:
        out.write(data[:start])
        left, zeros = len(data) - start, bytes(1 << 20)
        while left > 0:
            out.write(zeros[: min(left, len(zeros))])
            left -= len(zeros)


def minilm_blob(media_type: str | None = None) -> Path:
    """A layer of all-minilm in the bench store (pulled there, from its PyPI package, if absent): the
    layer of ``media_type``, or the model's."""
    from generate_speed import bench_store, start_forge

    from ferrousforge.errors import ModelNotFound
    from ferrousforge.names import ModelName
    from ferrousforge_host.store import BlobStore

    store = BlobStore(bench_store())
    try:
        manifest = store.get(ModelName.parse("all-minilm")).manifest
    except ModelNotFound:
        server, _url = start_forge(bench_store(), pull="all-minilm")  # serves once pulled
        server.terminate()
        server.wait()
        manifest = store.get(ModelName.parse("all-minilm")).manifest
    layer = manifest.layer(media_type) if media_type else manifest.model_layer
    assert layer is not None, f"all-minilm in {bench_store()} has no {media_type or 'model'} layer"
    return store.blob_path(layer.digest)


def zeroed_onnx(target: Path) -> None:
    """all-minilm's ONNX file as the bench store holds it, tensors zeroed."""
    if target.exists():
        return
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(minilm_blob()))
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.size > 1024:  # weights; small constants (shapes, axes) stay
            tensor.CopyFrom(numpy_helper.from_array(np.zeros_like(array), tensor.name))
    with gzip.open(target, "wb", compresslevel=6) as out:
        out.write(model.SerializeToString())


def tokenizer_json(target: Path) -> None:
    """all-minilm's tokenizer.json as the bench store holds it (the encoder benchmark from texts)."""
    if target.exists():
        return
    with gzip.open(target, "wb", compresslevel=9) as out:
        out.write(minilm_blob("application/vnd.ferrousforge.tokenizer").read_bytes())


def wheels() -> None:
    folder = OUT / "wheels"
    if any(folder.glob("wgpu-*.whl")) and any(folder.glob("gguf-*.whl")):
        return
    pip("download", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
        *PLATFORM_ARGS, "-d", str(folder), "wgpu==0.32.0")  # fmt: skip
    # the kernels' tests read GGUF blocks with it (its other needs are in the image)
    pip("download", "--no-deps", "--only-binary=:all:", "-d", str(folder), f"gguf=={version('gguf')}")
    for wheel in folder.glob("numpy-*.whl"):  # the machine's image has numpy
        wheel.unlink()


def host_wheels() -> None:
    folder = OUT / "host-wheels"
    have = {wheel.name.split("-")[0].lower() for wheel in folder.glob("*.whl")}
    if all(name.replace("-", "_").lower() in have for name in HOST_WHEELS):
        return
    pip(
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        *PLATFORM_ARGS,
        "-d",
        str(folder),
        *(f"{name}=={version(name)}" for name in HOST_WHEELS),
    )  # fmt: skip  (the versions tested here)


GL_PACKAGES = ["libvulkan1", "libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2"]


def vulkan_loader() -> None:
    folder = OUT / "gl"
    if any(folder.glob("libglvnd0_*.deb")):
        return
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as lists:
        (Path(lists) / "partial").mkdir()
        options = ["-oAPT::Architecture=amd64", "-oAPT::Architectures=amd64", f"-oDir::State::Lists={lists}"]
        subprocess.run(["apt-get", *options, "-qq", "update"], check=True)
        subprocess.run(["apt-get", *options, "-qq", "download", *GL_PACKAGES], check=True, cwd=folder)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    llama_source()
    for name, path in models().items():
        zeroed(path, OUT / f"{name.split(':')[0]}.gguf.gz")
    zeroed_onnx(OUT / "all-minilm.onnx.gz")
    tokenizer_json(OUT / "all-minilm-tokenizer.json.gz")
    wheels()
    host_wheels()
    vulkan_loader()
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    for entry in sorted(OUT.iterdir()):
        size = sum(f.stat().st_size for f in [entry, *entry.rglob("*")] if f.is_file())
        print(f"{entry.relative_to(ROOT)}: {size / 1e6:.1f} MB")
    print(f"{total / 2**20:.1f} MiB in {OUT.relative_to(ROOT)}/ (a device call carries at most 64 MiB)")


if __name__ == "__main__":
    main()
