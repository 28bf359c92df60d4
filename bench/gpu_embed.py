"""Issue H's benchmark on this machine: all-minilm embeddings through the GPU compute layer (wgpu
engine) against onnxruntime on the CPU, and a recorded forward pass replayed against one recorded
anew for every batch.

    .venv/bin/python bench/gpu_embed.py --runs 5

Without a GPU, wgpu runs on lavapipe (Mesa's CPU Vulkan driver): correct and very slow, a correctness
vehicle, never a speed target. Both engines run in the same server, each on its own copy of the model
(an engine is a load option: one model switched between engines would reload every time), alternating,
1 thread for onnxruntime.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_speed import CLIENT, bench_store, start_forge, stop

TEXT = "Semantic search finds passages by meaning rather than by shared words, sentence number {}."


MODELS = {
    "onnx": "all-minilm",
    "wgpu": "all-minilm-wgpu",
}  # one loaded model each: an engine is a load option


def embeddings_per_s(url: str, batch: int, engine: str) -> float:
    texts = [TEXT.format(i) for i in range(batch)]
    body = {"model": MODELS[engine], "input": texts, "options": {"engine": engine}}
    started = time.perf_counter()
    r = CLIENT.post(url + "/api/embed", json=body)
    r.raise_for_status()
    return batch / (time.perf_counter() - started)


def record_vs_replay(runs: int) -> tuple[float, float, str]:
    """ms per batch of 8 with the forward pass replayed, and recorded anew each time (in process)."""
    import asyncio

    from ferrousforge.gpu import onnx_weights
    from ferrousforge.gpu.bert import BertEncoder, BertShape, bert_weights
    from ferrousforge.gpu.native import NativeDevice
    from ferrousforge.names import ModelName
    from ferrousforge_host.store import BlobStore

    store = BlobStore(bench_store())
    layer = store.get(ModelName.parse("all-minilm")).manifest.model_layer
    assert layer is not None
    data = memoryview(store.blob_path(layer.digest).read_bytes())
    weights, heads, eps = bert_weights(onnx_weights.read(data), data)
    device = NativeDevice()
    encoder = BertEncoder(
        device, weights, BertShape.from_weights({k: v[1] for k, v in weights.items()}, heads, eps), "mean"
    )
    rows = [[101, *range(2000, 2000 + 14), 102] for _ in range(8)]
    asyncio.run(encoder.run(rows))  # compiles the kernels

    def timed(fresh: bool) -> float:
        times = []
        for _ in range(runs):
            if fresh:
                encoder._passes.clear()
            t = time.perf_counter()
            asyncio.run(encoder.run(rows))
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    return timed(False), timed(True), device.name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    proc, url = start_forge(bench_store(), pull="all-minilm", num_thread=1)
    try:
        CLIENT.post(url + "/api/copy", json={"source": "all-minilm", "destination": MODELS["wgpu"]})
        for engine in ("onnx", "wgpu"):  # load both
            embeddings_per_s(url, 1, engine)
        print("| batch | onnxruntime (CPU, 1 thread) emb/s | wgpu emb/s | wgpu vs onnxruntime |")
        print("|---|---|---|---|")
        for batch in (1, 32):
            speeds: dict[str, list[float]] = {"onnx": [], "wgpu": []}
            for _ in range(args.runs):
                for engine in speeds:
                    speeds[engine].append(embeddings_per_s(url, batch, engine))
            onnx, wgpu = (statistics.median(speeds[e]) for e in ("onnx", "wgpu"))
            print(f"| {batch} | {onnx:.1f} | {wgpu:.2f} | {wgpu / onnx:.3f}x |")
    finally:
        stop(proc)
    replay, fresh, adapter = record_vs_replay(args.runs)
    print(f"\nforward pass, 8 × 16 tokens, {adapter}: replayed {replay:.1f} ms, recorded anew {fresh:.1f} ms")


if __name__ == "__main__":
    main()
