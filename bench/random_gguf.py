"""A GGUF with random weights in the original's layout: the same metadata, vocabulary, shapes and
weight types, every tensor filled with random blocks whose scales are small and finite. It runs as the
model does, at the model's speed, and its greedy tokens are varied words (a zeroed copy gives one
empty token forever, which a streaming benchmark cannot count). Written where it runs, so only the
zeroed copy (a few MB gzipped) needs carrying to another machine.

    python bench/random_gguf.py SOURCE.gguf[.gz] OUT.gguf
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

from ferrousforge.gguf import parse_tensors
from ferrousforge.gpu.ops import GGUF_BLOCKS

# where each type keeps its f16 scale (and min), as ggml lays the block out
SCALE_AT = {"Q4_0": 0, "Q5_0": 0, "Q8_0": 0, "Q4_1": 0, "Q5_1": 0, "Q4_K": 0, "Q6_K": 208}
MIN_AT = {"Q4_1": 2, "Q5_1": 2, "Q4_K": 2}
SCALE = {"Q4_K": 2e-4, "Q6_K": 1e-3}  # K-quants multiply by 6- or 8-bit sub-scales too


def random_tensor(rng: np.random.Generator, kind: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    count = int(np.prod(shape))
    if kind == "F32":
        values = rng.standard_normal(count).astype(np.float32) * 0.02
        return (values + 1 if len(shape) == 1 else values).tobytes()  # 1-D: norm weights near 1
    if kind == "F16":
        return (rng.standard_normal(count) * 0.02).astype(np.float16).tobytes()
    if kind not in SCALE_AT:
        raise ValueError(f"no random blocks for {kind}")
    per, size = GGUF_BLOCKS[kind]
    blocks = rng.integers(0, 256, size=(count // per, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(SCALE.get(kind, 2e-3)).tobytes(), np.uint8)
    at = SCALE_AT[kind]
    blocks[:, at : at + 2] = scale
    if kind in MIN_AT:
        blocks[:, MIN_AT[kind] : MIN_AT[kind] + 2] = np.frombuffer(np.float16(0.0).tobytes(), np.uint8)
    out = blocks.tobytes()
    assert len(out) == nbytes, (kind, len(out), nbytes)
    return out


def main(source: str, target: str) -> None:
    raw = Path(source).read_bytes()
    data = memoryview(gzip.decompress(raw) if source.endswith(".gz") else raw)
    _meta, tensors = parse_tensors(data, len(data))
    rng = np.random.default_rng(0)
    out = bytearray(data)
    for info in tensors.values():
        out[info.offset : info.offset + info.nbytes] = random_tensor(rng, info.kind, info.shape, info.nbytes)
    Path(target).write_bytes(out)
    print(f"{target}: {len(tensors)} tensors of random weights, {len(out) / 1e6:.0f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
