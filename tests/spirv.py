"""What naga makes of the kernels: the SPIR-V wgpu-native hands the Vulkan driver, caught by a driver
shim over lavapipe (``spirv_dump.c``, built with the system's C compiler), and read here.

Run as a script (``python spirv.py DIR GGUF...``, under the shim), it records the passes the GPU
decoder replays on a GPU (decode steps and a prompt, the tuned defaults of a hardware adapter) for each
GGUF, and the encoder's products in every tiling, and names each module the shim wrote in
``DIR/names.json``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent

# SPIR-V opcodes and storage classes read here
OP_CONSTANT, OP_CONSTANT_COMPOSITE, OP_TYPE_INT, OP_TYPE_VECTOR = 43, 44, 21, 23
OP_TYPE_ARRAY, OP_TYPE_POINTER, OP_VARIABLE = 28, 32, 59
OP_ACCESS_CHAIN, OP_IN_BOUNDS_ACCESS_CHAIN, OP_LOOP_MERGE = 65, 66, 246
PRIVATE, FUNCTION = 6, 7
ALL_ONES = 0xFFFFFFFF


@dataclass
class Module:
    loops: int  # structured loops
    loop_bounds: int  # naga's loop-bounding counters (a vec2<u32> from u32::MAX, one a loop)
    dynamic: int  # accesses into a thread's own array (function or private) by a non-constant index


def read(data: bytes) -> Module:
    words = struct.unpack(f"<{len(data) // 4}I", data[: len(data) // 4 * 4])
    constants: dict[int, tuple[int, ...]] = {}  # id → its words (composites: their parts' ids)
    types: dict[int, tuple[int, ...]] = {}  # id → (opcode, operands...)
    arrays: dict[int, bool] = {}  # pointer or variable id → whether it points into a thread's array
    loops = bounds = dynamic = 0
    at = 5
    while at < len(words):
        count, op = words[at] >> 16, words[at] & 0xFFFF
        args = words[at + 1 : at + count]
        if op in (OP_TYPE_INT, OP_TYPE_VECTOR, OP_TYPE_ARRAY, OP_TYPE_POINTER):
            types[args[0]] = (op, *args[1:])
        elif op in (OP_CONSTANT, OP_CONSTANT_COMPOSITE):
            constants[args[1]] = tuple(args[2:])
        elif op == OP_VARIABLE and args[2] in (FUNCTION, PRIVATE):
            pointee = types.get(types[args[0]][2], ())
            arrays[args[1]] = pointee[:1] == (OP_TYPE_ARRAY,)
            init = constants.get(args[3]) if len(args) > 3 else None
            if pointee[:1] == (OP_TYPE_VECTOR,) and pointee[2] == 2 and init and len(init) == 2:
                bounds += all(constants.get(part) == (ALL_ONES,) for part in init)
        elif op in (OP_ACCESS_CHAIN, OP_IN_BOUNDS_ACCESS_CHAIN) and args[2] in arrays:
            arrays[args[1]] = arrays[args[2]]
            dynamic += arrays[args[2]] and any(index not in constants for index in args[3:])
        elif op == OP_LOOP_MERGE:
            loops += 1
        at += count
    return Module(loops, bounds, dynamic)


def lavapipe() -> str | None:
    """The path of Mesa's lavapipe driver, from its ICD manifest; None where it is not installed."""
    for manifest in sorted(glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json")):
        return str(json.loads(Path(manifest).read_text())["ICD"]["library_path"])
    return None


def dump(folder: Path, models: list[Path]) -> dict[str, list[Module]]:
    """Each kernel's modules as the script below compiles them under the shim, by kernel name."""
    compiler, driver = shutil.which("cc") or shutil.which("gcc"), lavapipe()
    if compiler is None or driver is None:
        raise RuntimeError("reading the kernels' SPIR-V needs a C compiler and lavapipe")
    shim = folder / "libspirv_dump.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", shim, HERE / "spirv_dump.c", "-ldl"], check=True
    )
    manifest = folder / "spirv_dump.json"
    manifest.write_text(
        json.dumps(
            {"file_format_version": "1.0.0", "ICD": {"library_path": str(shim), "api_version": "1.1.0"}}
        )
    )
    out = folder / "modules"
    out.mkdir()
    env = {
        **os.environ,
        "VK_ICD_FILENAMES": str(manifest),
        "VK_DRIVER_FILES": str(manifest),
        "SPIRV_DUMP_DRIVER": driver,
        "SPIRV_DUMP_DIR": str(out),
    }
    run = [sys.executable, str(Path(__file__)), str(out), *map(str, models)]
    subprocess.run(run, env=env, check=True, timeout=600)
    names = json.loads((out / "names.json").read_text())
    found: dict[str, list[Module]] = {}
    for file, name in names.items():
        found.setdefault(name, []).append(read((out / file).read_bytes()))
    return found


# a kernel with what the checks look for: a thread's array indexed by a loop counter and by data
PROBE = """
@group(0) @binding(0) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(1)
fn main() {
  var a = array<f32, 4>();
  for (var i = 0u; i < 4u; i++) { a[i] = c[i]; }
  c[0] = a[u32(c[5]) % 4u];
}
"""


def _bert(d: int, layers: int) -> dict[str, tuple[bytes, tuple[int, ...]]]:
    """Zero weights of a BERT encoder's shape, named as bert.py takes them."""
    dims: dict[str, tuple[int, ...]] = {"word_emb": (100, d), "pos_emb": (32, d), "type_emb": (2, d)}
    dims |= {"embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name, shape in (
            ("attention.self.query", (d, d)),
            ("attention.self.key", (d, d)),
            ("attention.self.value", (d, d)),
            ("attention.output.dense", (d, d)),
            ("intermediate.dense", (d, 2 * d)),
            ("output.dense", (2 * d, d)),
        ):
            dims |= {p + name + ".weight": shape, p + name + ".bias": shape[1:]}
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            dims |= {p + norm + ".weight": (d,), p + norm + ".bias": (d,)}
    return {name: (bytes(4 * math.prod(shape)), shape) for name, shape in dims.items()}


def _record(out: Path, models: list[Path]) -> None:
    sys.path.insert(0, str(HERE.parent / "shared"))
    from ferrousforge.gguf import parse_tensors
    from ferrousforge.gpu import ops
    from ferrousforge.gpu.bert import BertEncoder, BertShape
    from ferrousforge.gpu.decoder import Decoder
    from ferrousforge.gpu.device import Binding
    from ferrousforge.gpu.native import NativeDevice

    names: dict[str, str] = {}
    compile_kernel = NativeDevice.compile

    def compile_named(self: NativeDevice, name: str, *args: object) -> object:
        before = set(os.listdir(out))
        handle = compile_kernel(self, name, *args)  # type: ignore[arg-type]
        names.update(dict.fromkeys(sorted(set(os.listdir(out)) - before), name))
        return handle

    NativeDevice.compile = compile_named  # type: ignore[method-assign]
    gpu = NativeDevice()
    # a hardware adapter's defaults (ops.linear_lanes, linear_unroll, attention_unroll, output shares)
    gpu.tuned.update(
        linear_lanes=ops.LINEAR_LANES, linear_unroll=ops.LINEAR_UNROLL, attention_unroll=ops.ATTENTION_UNROLL
    )
    gpu.tuned["attention_output"] = True
    for path in models:
        data = memoryview(path.read_bytes())
        meta, tensors = parse_tensors(data, len(data))
        decoder = Decoder(gpu, data, meta, tensors, n_ctx=64)
        decoder.submit([(1, 0, 0)])
        decoder.submit([(2, 1, 0), (3, 2, 0), (4, 3, 0)])
    encoder = BertEncoder(gpu, _bert(64, 2), BertShape(64, 4, 2, 128, 1e-12), "mean", normalize=True)
    encoder._record(2, 8)  # (recording a pass compiles its kernels; nothing runs)
    for tile in ops.MATMUL_TILES:
        for rows, w_kn, act in ((4, True, "gelu"), (64, True, "gelu"), (64, False, "tanh"), (64, True, "")):
            a, w, bias, c = (
                gpu.buffer(4 * rows * 64),
                gpu.buffer(4 * 64 * 64),
                gpu.buffer(256),
                gpu.buffer(4 * rows * 64),
            )
            rec = gpu.record()
            ops.matmul(rec, a, w, bias, c, rows, 64, 64, act=act, w_kn=w_kn, half=gpu.f16, tile=tile)
    gpu.compile("probe", PROBE, "main", (Binding(0, "read_write"),))
    bounded = NativeDevice(loop_bounding=True)
    bounded.compile("probe with wgpu's default checks", PROBE, "main", (Binding(0, "read_write"),))
    (out / "names.json").write_text(json.dumps(names))


if __name__ == "__main__":
    _record(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
