"""Issue H: the BERT encoder on the GPU compute layer in process, embeddings/s at batch 1, 32 and 256
of 16-token sequences; with ``--torch``, the same shape as transformers' BertModel on torch (CUDA where
there is one, f32 and f16) with mean pooling, which is what sentence-transformers runs.

    .venv/bin/python bench/gpu_encoder.py MODEL.onnx [--torch] [--batches 1,32,256]
    .venv/bin/python bench/gpu_encoder.py --matmul 4096x1536x384[,MxNxK...] [--torch]

``--matmul MxNxK``: the encoder's matrix product (matmul.wgsl, weights stored [K, N] as ONNX keeps
them, f16 where the adapter has shader-f16) on its own in each tiling the device may choose
(ops.MATMUL_TILES; the encoder measures them at its first batch: tune.py), in TFLOP/s by the wall
clock (gpu_decode.py's timer) and by the GPU's own (timestamps, where the adapter has them); with
``--torch``, torch's f32 and f16 products of that shape beside it. At batch 256 of 16 tokens
all-minilm's products are 4096 rows × 1152, 384 or 1536: these say how far the kernel is from the
card and from cuBLAS. With ``--loop-bounding`` the kernel is compiled with wgpu's default run-time
checks (a counter and an exit in every loop), as it was before it kept bounds checks alone.

The encoder's pass at the largest batch is then timed whole and kernel by kernel (replayed without
readback; by the wall clock and the GPU's), as ``gpu_decode.py`` does a decode step.

``--texts TOKENIZER.json``: from texts to normalised embeddings, as a user's request goes: the wgpu
engine (``WgpuEmbeddingMold.embed_sync``: tokenization, the encoder, pooling) and the ONNX engine on
all the CPU's cores, both as the host runs them; with ``--torch``, sentence-transformers' ``encode`` on
torch (CUDA where there is one) over the same model shape (random weights) and tokenizer: the peer
issue H names. Needs the host package on the path (``host/``).

MODEL.onnx: a BERT ONNX file FerrousForge converted (all-minilm's, from the store; a copy with zeroed
tensors times the same: ``bench/gpu_machine_prepare.py``). The torch model takes the encoder's shape
with random weights: a forward pass costs the same whatever the weights hold.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from gpu_decode import by_kernel, clock, gpu_time

from ferrousforge.gpu import onnx_weights, ops, tune
from ferrousforge.gpu.bert import BertEncoder, BertShape, Weights, bert_weights
from ferrousforge.gpu.native import NativeDevice

TOKENS = 16


def timed(run, repeats: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of ``run()`` after one untimed call."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_model(path: Path) -> tuple[Weights, BertShape, int]:
    """The ONNX file's encoder weights, shape and vocabulary size."""
    data = memoryview(path.read_bytes())
    weights, heads, eps = bert_weights(onnx_weights.read(data), data)
    shape = BertShape.from_weights({k: v[1] for k, v in weights.items()}, heads, eps)
    return weights, shape, weights["word_emb"][1][0]


def bert_config(shape: BertShape, vocab: int) -> Any:
    """transformers' BertConfig of the encoder's shape (the torch side's model, random weights)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
    )


def ours(path: Path, batches: list[int]) -> tuple[BertShape, int]:
    """The encoder's speed; its shape and vocabulary size for the torch side."""
    weights, shape, vocab = read_model(path)
    device = NativeDevice()
    encoder = BertEncoder(device, weights, shape, "mean")
    for batch in batches:
        rows = [[101, *range(2000 + i, 2000 + i + TOKENS - 2), 102] for i in range(batch)]
        seconds = timed(lambda rows=rows: asyncio.run(encoder.run(rows)))
        tile, own = device.tuned.get("matmul"), device.tuned.get("matmul_shapes", {})
        tiling = f", tile {tune.tile_name(tile)}" if tile else ""
        tiling += "".join(f"; {n}×{k} {tune.tile_name(t)}" for (n, k), t in own.items())
        print(f"| wgpu ({device.name}{tiling}) | {batch} | {batch / seconds:.1f} |")
    (b, s), largest = max(encoder._passes.items())  # the largest batch's recorded pass
    by_kernel(device, largest.recording.dispatches, f"the encoder's pass at batch {b} of {s} tokens")
    return shape, vocab


def torch_targets() -> tuple[str, list[Any]]:
    """Where torch's side runs (CUDA where there is one) and the types it is timed in (f16 on CUDA too)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, [torch.float32, torch.float16] if device == "cuda" else [torch.float32]


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def torch_side(shape: BertShape, vocab: int, batches: list[int]) -> None:
    import torch
    from transformers import BertModel

    device, dtypes = torch_targets()
    config = bert_config(shape, vocab)
    for dtype in dtypes:
        model = BertModel(config).to(device, dtype).eval()
        for batch in batches:
            ids = torch.randint(1000, vocab, (batch, TOKENS), device=device)
            mask = torch.ones_like(ids)

            def run(ids: torch.Tensor = ids, mask: torch.Tensor = mask, model: BertModel = model) -> None:
                with torch.inference_mode():
                    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
                    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                    torch.nn.functional.normalize(pooled, dim=-1).cpu()

            seconds = timed(run)
            print(f"| torch {device} {dtype_name(dtype)} | {batch} | {batch / seconds:.1f} |")


def sentences(n: int) -> list[str]:
    """Texts of TOKENS tokens each with all-minilm's tokenizer ([CLS] and [SEP] included)."""
    return [f"Sentence {i} tells how the quick brown fox jumped over it again today." for i in range(n)]


def from_texts(model: Path, tokenizer: Path, batches: list[int], with_torch: bool) -> None:
    import os

    from ferrousforge.embedding import EmbedItem
    from ferrousforge.mold import ModelSpec
    from ferrousforge.options import Options
    from ferrousforge_host.engines.onnx import OnnxEmbeddingMold
    from ferrousforge_host.engines.wgpu import WgpuEmbeddingMold

    config = {"pooling": "mean", "normalize": True, "max_length": 256}
    files = {"tokenizer.json": str(tokenizer)}
    spec = ModelSpec(name="all-minilm", format="onnx", path=str(model), config=config, files=files)
    texts = sentences(max(batches))
    cpus = os.cpu_count() or 1
    engines = [
        ("wgpu engine", WgpuEmbeddingMold, 1),
        (f"ONNX engine, {cpus} CPU threads", OnnxEmbeddingMold, cpus),
    ]
    for label, cls, threads in engines:
        mold = cls(spec, Options.parse({"num_thread": threads}))
        mold.load_sync()
        tokens = mold.embed_sync([EmbedItem(texts[0])])[0].tokens
        for batch in batches:
            items = [EmbedItem(t) for t in texts[:batch]]
            seconds = timed(lambda mold=mold, items=items: mold.embed_sync(items))
            print(f"| FerrousForge {label} ({tokens} tokens) | {batch} | {batch / seconds:.1f} |")
        mold.unload_sync()
    if with_torch:
        sentence_transformers_side(model, tokenizer, batches, texts)


def sentence_transformers_side(model: Path, tokenizer: Path, batches: list[int], texts: list[str]) -> None:
    import tempfile

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel, PreTrainedTokenizerFast

    _, shape, vocab = read_model(model)
    config = bert_config(shape, vocab)
    device, dtypes = torch_targets()
    with tempfile.TemporaryDirectory() as folder:  # a model folder as the hub ships one: BERT, tokenizer
        BertModel(config).save_pretrained(folder)
        special = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
        fast = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer), model_max_length=256, **special)
        fast.save_pretrained(folder)
        st = SentenceTransformer(folder, device=device)  # a plain BERT folder: mean pooling
        for dtype in dtypes:
            if dtype is torch.float16:
                st.half()
            for batch in batches:
                chunk = texts[:batch]

                def run(chunk: list[str] = chunk, batch: int = batch) -> None:
                    st.encode(chunk, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

                seconds = timed(run)
                name = f"sentence-transformers, torch {device} {dtype_name(dtype)}"
                print(f"| {name} | {batch} | {batch / seconds:.1f} |")


def matmul(gpu: NativeDevice, shape: str, with_torch: bool) -> None:
    m, n, k = (int(v) for v in shape.split("x"))
    size = 2 if gpu.f16 else 4
    a, w, bias, c = gpu.buffer(4 * m * k), gpu.buffer(size * k * n), gpu.buffer(4 * n), gpu.buffer(4 * m * n)
    flops = 2 * m * n * k
    print(f"matmul.wgsl {m} × {k} · {k} × {n}, {'f16' if gpu.f16 else 'f32'} weights on {gpu.name}:")
    for tile in ops.MATMUL_TILES:
        rec = gpu.record()
        ops.matmul(rec, a, w, bias, c, m, n, k, w_kn=True, half=gpu.f16, tile=tile)
        seconds, on_gpu = gpu_time(gpu, rec.dispatches), clock(gpu, rec.dispatches)
        name = f"{tile.bm}×{tile.bn} tile, {tile.tm}×{tile.tn} a thread, k {tile.bk} at a time"
        name += ", the next k's tiles prefetched" if tile.prefetch else ""
        measured = (
            f"; GPU clock {sum(on_gpu) * 1e6:.1f} µs, {flops / sum(on_gpu) / 1e12:.3g}" if on_gpu else ""
        )
        print(f"- {name}: {seconds * 1e6:.1f} µs, {flops / seconds / 1e12:.3g} TFLOP/s{measured}")
    if not with_torch:
        return
    import torch

    device, dtypes = torch_targets()
    for dtype in dtypes:
        x, y = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        reps = 50 if device == "cuda" else 3

        def run(x: torch.Tensor = x, y: torch.Tensor = y, reps: int = reps) -> None:
            for _ in range(reps):
                torch.matmul(x, y)
            if device == "cuda":
                torch.cuda.synchronize()

        seconds = timed(run) / reps
        print(
            f"- torch {device} {dtype_name(dtype)}: {seconds * 1e6:.1f} µs, "
            f"{flops / seconds / 1e12:.3g} TFLOP/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--batches", default="1,32,256")
    parser.add_argument("--matmul", metavar="MxNxK[,MxNxK...]")
    parser.add_argument("--texts", type=Path, metavar="TOKENIZER.json")
    parser.add_argument(
        "--loop-bounding",
        action="store_true",
        help="--matmul with wgpu's default checks on the kernel (a counter in every loop), as before",
    )
    args = parser.parse_args()
    if args.matmul:
        gpu = NativeDevice(loop_bounding=args.loop_bounding)
        for shape in args.matmul.split(","):
            matmul(gpu, shape, args.torch)
    if args.model is None:
        return
    batches = [int(b) for b in args.batches.split(",")]
    print(f"{'texts of ' if args.texts else ''}{TOKENS}-token sequences, mean pooling")
    print("| engine | batch | embeddings/s |")
    print("|---|---|---|")
    if args.texts:
        from_texts(args.model, args.texts, batches, args.torch)
        return
    shape, vocab = ours(args.model, batches)
    if args.torch:
        torch_side(shape, vocab, batches)


if __name__ == "__main__":
    main()
