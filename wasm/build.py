"""Assemble the browser runtime bundle into ``build/runtime`` (served by the host at ``/ui/runtime/``).

- pinned npm packages (``package.json`` / ``package-lock.json``), only the files the page loads;
- the ``ferrousforge`` wheel of ``shared/`` (pure Python, ``py3-none-any``) that Pyodide installs;
- ``probe.onnx``: the small MatMul stack the capability probe times on each accelerator;
- ``assets.json``: every file with its package, version, size and sha256.

Run: ``python wasm/build.py`` (``make web`` does it after ``npm ci``). Nothing is fetched from a CDN.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "node_modules"
OUT = ROOT / "build" / "runtime"

# package → files the page loads (paths inside the package)
ASSETS: dict[str, list[str]] = {
    "pyodide": [
        "pyodide.mjs",
        "pyodide.asm.mjs",
        "pyodide.asm.wasm",
        "python_stdlib.zip",
        "pyodide-lock.json",
    ],
    "onnxruntime-web": [
        # wasm EP: the plain SIMD+threads build (the asyncify one in the WebGPU bundle is slower on CPU)
        "dist/ort.wasm.min.mjs",
        "dist/ort-wasm-simd-threaded.mjs",
        "dist/ort-wasm-simd-threaded.wasm",
        # webgpu EP
        "dist/ort.webgpu.min.mjs",
        "dist/ort-wasm-simd-threaded.asyncify.mjs",
        "dist/ort-wasm-simd-threaded.asyncify.wasm",
    ],
    "onnxruntime-common": ["dist/esm/index.js"],
    "@huggingface/tokenizers": ["dist/tokenizers.min.mjs"],
    "@huggingface/transformers": ["dist/transformers.web.min.js"],
    "@wllama/wllama": ["esm/index.js", "esm/wasm/wllama.wasm"],
    # espeak-ng (GPL-3.0-or-later) compiled to JavaScript with its English data inside, Apache-2.0
    # wrapper: Piper's phonemes in the page
    "phonemizer": ["dist/phonemizer.js", "LICENSE"],
}
PROBE_WIDTH = 256
PROBE_LAYERS = 4


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_packages(assets: dict[str, dict[str, object]]) -> None:
    for package, files in ASSETS.items():
        root = NODE_MODULES / package
        meta = json.loads((root / "package.json").read_text())
        if package == "onnxruntime-common":  # a dependency of onnxruntime-web: copy its whole ESM tree
            files = [str(p.relative_to(root)) for p in sorted((root / "dist" / "esm").rglob("*.js"))]
        for name in files:
            source = root / name
            if not source.exists():
                sys.exit(f"missing {source}: run 'npm ci' first")
            target = OUT / package / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            assets[f"{package}/{name}"] = {
                "package": package,
                "version": meta["version"],
                "size": target.stat().st_size,
                "sha256": sha256(target),
            }


def build_wheel() -> Path:
    """A standard pure-Python wheel of ``shared/ferrousforge`` (what pip would build, without pip)."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    dist_info = f"ferrousforge-{version}.dist-info"
    wheel = OUT / f"ferrousforge-{version}-py3-none-any.whl"
    source = ROOT / "shared"
    entries: list[tuple[str, bytes]] = [
        (str(p.relative_to(source)), p.read_bytes())
        for p in sorted([*source.rglob("*.py"), *source.rglob("*.wgsl")])  # code and GPU kernels
        if "__pycache__" not in p.parts
    ]
    entries.append(
        (f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: ferrousforge\nVersion: {version}\n".encode())
    )
    entries.append(
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: ferrousforge-wasm-build\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    for old in OUT.glob("ferrousforge-*.whl"):
        old.unlink()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return wheel


PYTHON_DEPS = (
    "jinja2",
    "markupsafe",
)  # chat templates; pure Python (markupsafe falls back without its C part)


def build_python_deps() -> tuple[Path, str]:
    """A zip of the pure-Python packages the shared code imports lazily that Pyodide's core lacks,
    taken from this environment (the versions the host runs), unpacked into site-packages."""
    from importlib import metadata

    out = OUT / "python-deps.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in PYTHON_DEPS:
            package = Path(__import__(name).__file__).parent
            for path in sorted(package.rglob("*")):
                if path.is_file() and path.suffix in (".py", ".typed") and "__pycache__" not in path.parts:
                    info = zipfile.ZipInfo(
                        str(path.relative_to(package.parent)), date_time=(2020, 1, 1, 0, 0, 0)
                    )
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, path.read_bytes())
    return out, ", ".join(f"{name} {metadata.version(name)}" for name in PYTHON_DEPS)


def build_probe(path: Path) -> None:
    """X[n, 256] through four 256×256 MatMul+Relu layers: 0.5 MFLOP per row, the same on every EP."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for i in range(PROBE_LAYERS):
        weight = (rng.standard_normal((PROBE_WIDTH, PROBE_WIDTH)) / 16).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
        out = "y" if i == PROBE_LAYERS - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", PROBE_WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", PROBE_WIDTH])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    assets: dict[str, dict[str, object]] = {}
    copy_packages(assets)
    wheel = build_wheel()
    deps, versions = build_python_deps()
    probe = OUT / "probe.onnx"
    build_probe(probe)
    for extra in (wheel, deps, probe):
        assets[extra.name] = {
            "package": versions if extra == deps else "ferrousforge",
            "size": extra.stat().st_size,
            "sha256": sha256(extra),
        }
    manifest = {
        "wheel": wheel.name,
        "python_deps": deps.name,
        "probe": {
            "file": probe.name,
            "width": PROBE_WIDTH,
            "flop_per_row": 2 * PROBE_LAYERS * PROBE_WIDTH**2,
        },
        "assets": assets,
    }
    (OUT / "assets.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    total = sum(int(str(a["size"])) for a in assets.values())
    print(f"runtime bundle: {len(assets)} files, {total >> 20} MiB → {OUT}")


if __name__ == "__main__":
    main()
