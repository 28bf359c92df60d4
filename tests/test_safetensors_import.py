"""Ollama's ``create`` from a safetensors folder: a Hugging Face Llama, Mistral, Qwen, Phi-3, Mixtral or
Gemma becomes a GGUF that llama.cpp runs and computes what transformers computes; its tokenizer splits
text as the original does; a PEFT adapter gives what its weights merged give; made through
/api/create's ``files`` (the official client's way), ``--quantize``, ``ferrousforge create`` FROM a
folder and pull from a path; what cannot convert is a 400 that says why, leaving nothing."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import llama_cpp
import numpy as np
import ollama
import pytest
from tokenizers import Tokenizer

from ferrousforge.manifest import Manifest
from ferrousforge.names import ModelName
from ferrousforge_host.models.safetensors_gguf import convert, convert_adapter

from conftest import Host
from test_cli import ff
from tinymodel import HF_CORPUS, PRE_TOKENIZERS, write_tiny_hf, write_tiny_peft

TEXTS = [
    *HF_CORPUS[:3],
    "  two  spaces,\n\nnew lines\r\n and 1234567 digits 3.14159",
    "it's IT'S we'll they'VE — 😀 émigré naïve Ω≈ç√ CamelCase HTTPServer iPhone x/y\n/path",
    "<|im_start|> is text here",
]


def llama(path: Path, **kwargs: object) -> llama_cpp.Llama:
    return llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False, **kwargs)  # type: ignore[arg-type]


PROMPT, STEPS = "The capital of France", 12


def greedy(model: llama_cpp.Llama) -> list[bytes]:
    """The bytes of each greedy token llama.cpp itself gives after PROMPT."""
    tokens = []
    for token in model.generate(model.tokenize(PROMPT.encode()), temp=0):
        tokens.append(model.detokenize([token]))
        if len(tokens) == STEPS:
            return tokens
    return tokens


def greedy_on_host(host: Host, model: str) -> list[bytes]:
    """The same from the host's /api/generate (raw, each token's bytes from its logprobs)."""
    body = {"model": model, "prompt": PROMPT, "raw": True, "stream": False, "logprobs": True}
    with host.client() as c:
        got = c.post("/api/generate", json=body | {"options": {"temperature": 0, "num_predict": STEPS}})
    return [bytes(x["bytes"]) for x in got.json()["logprobs"]]


@pytest.mark.parametrize("pre", PRE_TOKENIZERS)
def test_the_tokenizer_splits_text_as_the_original_does(tmp_path: Path, pre: str) -> None:
    folder = write_tiny_hf(tmp_path / "model", pre=pre)
    made = convert(folder, tmp_path / "model.gguf")
    original = Tokenizer.from_file(str(folder / "tokenizer.json"))
    converted = llama(tmp_path / "model.gguf", vocab_only=True)
    adds_bos = llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(converted.model))
    assert adds_bos is (pre in ("llama3", "spm"))  # as the original's template says
    for text in TEXTS:
        want = original.encode(text).ids  # with a BOS first where the original's template puts one
        assert converted.tokenize(text.encode(), add_bos=adds_bos, special=True) == want, (pre, text)
    kinds = {
        "llama3": "llama-bpe",
        "qwen2": "qwen2",
        "gpt4o": "gpt-4o",
        "tekken": "tekken",
        "smollm": "smollm",
        "gpt2": "gpt-2",
        "spm": "sentencepiece",
    }
    assert made.tokenizer == kinds[pre]
    assert converted.token_eos() == (2 if pre == "spm" else 3)
    assert converted.metadata["tokenizer.chat_template"].startswith("{% for")


def test_a_sentencepiece_tokenizer_splits_text_as_sentencepiece_does(tmp_path: Path) -> None:
    """Llama 2's and Mistral's kind: the tokenizer.json transformers makes of a SentencePiece BPE model
    tokenizes as the model itself (the ground truth), and so does llama.cpp after the conversion."""
    import sentencepiece

    folder = write_tiny_hf(tmp_path / "model", pre="spm")
    convert(folder, tmp_path / "model.gguf")
    truth = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    original = Tokenizer.from_file(str(folder / "tokenizer.json"))
    converted = llama(tmp_path / "model.gguf", vocab_only=True)
    for text in TEXTS[:-1]:  # (SentencePiece knows no special tokens in text)
        want = truth.encode(text)
        assert original.encode(text, add_special_tokens=False).ids == want, text
        assert converted.tokenize(text.encode(), add_bos=False, special=False) == want, text
        # (llama.cpp's raw pieces keep the "▁" put before the text, as a space)
        assert converted.detokenize(want).decode().removeprefix(" ") == truth.decode(want)


CASES = {
    "llama f32": ("llama", "float32", {}),
    "llama bf16": ("llama", "bfloat16", {}),
    "mistral f16, tied, SentencePiece": ("mistral", "float16", {"tie_word_embeddings": True, "pre": "spm"}),
    "qwen2 bf16": ("qwen2", "bfloat16", {}),
    "qwen3 f32": ("qwen3", "float32", {"head_dim": 32}),
    "gemma3 bf16, sliding window": (
        "gemma3",
        "bfloat16",
        {
            "pre": "spm",
            "num_hidden_layers": 6,  # five layers that slide, then one that sees everything
            "sliding_window": 8,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "tie_word_embeddings": True,
            "final_logit_softcapping": 30.0,
        },
    ),
    "gemma2 f32, soft-capping, sliding window": (
        "gemma2",
        "float32",
        {
            "pre": "spm",
            "num_hidden_layers": 4,  # sliding, full, sliding, full
            "sliding_window": 8,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "attn_logit_softcapping": 2.0,  # (small, so that capping changes what a tiny model computes)
            "final_logit_softcapping": 3.0,
            "tie_word_embeddings": True,
        },
    ),
    "phi3 bf16, SentencePiece": ("phi3", "bfloat16", {"pre": "spm"}),
    "phi3 longrope": (
        "phi3",
        "float32",
        {
            "pre": "spm",
            "original_max_position_embeddings": 64,
            "rope_parameters": {
                "rope_type": "longrope",
                "rope_theta": 10000.0,
                "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0],
                "short_factor": [1.0, 1.0, 1.1, 1.2, 1.3, 1.5, 1.8, 2.0],
            },
        },
    ),
    "mixtral f32, 4 experts": ("mixtral", "float32", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen3 moe f32, 4 experts": (
        "qwen3moe",
        "float32",
        {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": True},
    ),
    "llama 3.1 rope": (
        "llama",
        "float32",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_converted_model_computes_what_transformers_computes(tmp_path: Path, case: str) -> None:
    import torch
    import transformers

    arch, dtype, config = CASES[case]
    config = dict(config)
    pre = str(config.pop("pre", "qwen2" if arch.startswith("qwen") else "llama3"))
    folder = write_tiny_hf(tmp_path / "model", arch=arch, dtype=dtype, pre=pre, **config)
    made = convert(folder, tmp_path / "model.gguf")
    assert made.file_type == ("BF16" if dtype == "bfloat16" else "F16")
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(" ".join(TEXTS)).ids[:200]
    assert len(ids) > 150  # past the 64 positions a Llama 3.1 scaling changes nothing under
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    converted = llama(tmp_path / "model.gguf", logits_all=True)
    converted.eval(ids)
    got = np.asarray(converted.scores[: len(ids)])
    scale = np.abs(want).max()
    assert scale > 1  # logits far enough apart to tell a wrong model from rounding
    off = np.abs(got - want).max(-1)
    if "experts" in case:  # where two experts nearly tie, rounding may pick the other: a few positions
        assert (off < 0.02 * scale).mean() > 0.95 and np.median(off) < 0.002 * scale, case
    else:
        assert off.max() < 0.02 * scale, case
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.95  # (rounding flips near-ties)


def test_a_multimodal_gemma3_converts_as_its_language_model(host: Host, tmp_path: Path) -> None:
    """Gemma3ForConditionalGeneration (Gemma 3 4B and up): its language model, text only, computes what
    transformers computes on text; the vision tower and projector are left out, and create says so."""
    import torch
    import transformers

    text = {"num_hidden_layers": 6, "sliding_window": 8, "head_dim": 16, "query_pre_attn_scalar": 16}
    folder = write_tiny_hf(tmp_path / "model", arch="gemma3", pre="spm", **text)  # (its tokenizer)
    config = json.loads((folder / "config.json").read_text())
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    both = transformers.Gemma3Config(
        text_config={k: v for k, v in config.items() if k not in ("architectures", "dtype")},
        vision_config={**vision, "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4,
    )
    torch.manual_seed(1)
    model = transformers.Gemma3ForConditionalGeneration(both)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder)
    made = convert(folder, tmp_path / "model.gguf")
    assert made.architecture == "gemma3" and made.left_out > 10
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(" ".join(TEXTS)).ids[:150]
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
    got = logits(tmp_path / "model.gguf", ids)
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
    client = ollama.Client(host=host.url)
    files = {p.name: client.create_blob(p) for p in sorted(folder.iterdir())}
    said = [e.status for e in client.create("gemma-mm", files=files, stream=True)]
    assert any(s and "left out the vision tower" in s for s in said) and said[-1] == "success"


def test_a_sharded_model_converts_as_one_file_does(tmp_path: Path) -> None:
    import gguf

    whole = write_tiny_hf(tmp_path / "whole", dtype="bfloat16")
    sharded = write_tiny_hf(tmp_path / "sharded", dtype="bfloat16", max_shard_size="100KB")
    assert (
        len(list(sharded.glob("*.safetensors"))) > 2 and (sharded / "model.safetensors.index.json").is_file()
    )
    convert(whole, tmp_path / "whole.gguf")
    convert(sharded, tmp_path / "sharded.gguf")
    a, b = gguf.GGUFReader(tmp_path / "whole.gguf"), gguf.GGUFReader(tmp_path / "sharded.gguf")
    assert {t.name: bytes(t.data) for t in a.tensors} == {t.name: bytes(t.data) for t in b.tensors}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf(tmp_path_factory.mktemp("hf") / "tiny-hf", dtype="bfloat16")


def test_create_from_uploaded_files_and_quantize(host: Host, hf_folder: Path, tmp_path: Path) -> None:
    client = ollama.Client(host=host.url)
    files = {p.name: client.create_blob(p) for p in sorted(hf_folder.iterdir())}
    events = [e.status for e in client.create("hf", files=files, stream=True)]
    assert events[0] == "converting model" and events[-1] == "success"
    blobs = set((host.store_root / "blobs").iterdir())
    client.create("hf-q8", files=files, quantize="q8_0")
    # the same files convert to the same bytes; the full-size conversion under the q8_0 goes
    assert len(set((host.store_root / "blobs").iterdir()) - blobs) == 2  # the q8_0 weights, its config
    shown = client.show("hf")
    assert shown.modelinfo is not None and "folder-" not in str(shown.modelinfo.get("general.name"))
    assert shown.details.format == "gguf" and shown.details.family == "llama"
    assert (
        shown.details.quantization_level == "BF16"
        and client.show("hf-q8").details.quantization_level == "Q8_0"
    )
    assert "<|im_start|>" in (shown.template or "")  # the tokenizer's chat template
    with host.client() as c:  # every tensor listed, in its type (BF16 matrices, F32 norms)
        verbose = c.post("/api/show", json={"model": "hf", "verbose": True}).json()
    assert {t["type"] for t in verbose["tensors"]} == {"BF16", "F32"} and len(verbose["tensors"]) == 21
    # a LoRA adapter over the BF16 model (checked against its tensors), from a PEFT folder
    shaped = write_tiny_hf(tmp_path / "same-shape", dtype="float32")
    write_tiny_peft(shaped, tmp_path / "adapter", tmp_path / "merged")
    adapters = {p.name: client.create_blob(p) for p in sorted((tmp_path / "adapter").iterdir())}
    client.create("hf-tuned", from_="hf", adapters=adapters)
    # the host's greedy tokens are llama.cpp's on the file converted here
    convert(hf_folder, tmp_path / "direct.gguf")
    assert greedy_on_host(host, "hf") == greedy(llama(tmp_path / "direct.gguf"))
    options = {"temperature": 0, "num_predict": 12}
    chat = client.chat("hf-q8", messages=[{"role": "user", "content": "hi"}], options=options)
    assert chat.message.role == "assistant" and chat.eval_count and chat.eval_count > 0
    assert not list((host.store_root / "partial").iterdir())
    # quantized with no model of the full size: the conversion it was quantized from is not kept
    manifest = host.store_root.joinpath("manifests", *ModelName.parse("hf").parts).read_bytes()
    layer = Manifest.from_bytes(manifest).model_layer
    assert layer is not None
    full_size = host.store_root / "blobs" / layer.digest.replace(":", "-")
    client.delete("hf-tuned")
    client.delete("hf")
    client.create("hf-q8-again", files=files, quantize="q8_0")
    assert not full_size.exists()


def test_pull_from_a_folder_on_the_server(host: Host, hf_folder: Path) -> None:
    """FerrousForge's pull of a local path (``pull NAME --from /abs/folder``) converts a folder too."""
    host.pull_file("pulled-hf", hf_folder)
    client = ollama.Client(host=host.url)
    assert client.show("pulled-hf").details.quantization_level == "BF16"
    reply = client.generate(
        "pulled-hf", "The capital", raw=True, options={"temperature": 0, "num_predict": 4}
    )
    assert reply.eval_count == 4


def test_create_from_a_folder_with_the_cli(host: Host, hf_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "Modelfile").write_text(f"FROM {hf_folder}\nPARAMETER temperature 0\nSYSTEM Be brief.\n")
    made = ff(host, "create", "from-folder", "-f", str(tmp_path / "Modelfile"), "-q", "Q4_K_M")
    assert made.returncode == 0, made.stderr
    assert "converting model" in made.stderr and "quantizing BF16 model to Q4_K_M" in made.stderr
    shown = ff(host, "show", "from-folder")
    assert "Q4_K_M" in shown.stdout and "Be brief." in ff(host, "show", "from-folder", "--system").stdout
    ran = ff(host, "run", "from-folder", "hello", "--nowordwrap")
    assert ran.returncode == 0 and ran.stdout.strip()
    (tmp_path / "empty").mkdir()
    (tmp_path / "Modelfile").write_text(f"FROM {tmp_path / 'empty'}\n")
    refused = ff(host, "create", "x", "-f", str(tmp_path / "Modelfile"))
    assert refused.returncode != 0 and "is not a model folder" in refused.stderr


def _without(folder: Path, tmp_path: Path, **changes: object) -> Path:
    """A copy of the folder with config.json keys changed, or files dropped (a change to None)."""
    copy = tmp_path / "changed"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    for key, value in changes.items():
        if key.endswith("_json") and value is None:
            (copy / key.replace("_json", ".json")).unlink()
        elif key.endswith("_json"):
            (copy / key.replace("_json", ".json")).write_text(str(value))
        else:
            config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"architectures": ["GPT2LMHeadModel"]}, "cannot convert a GPT2LMHeadModel model; safetensors"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "RoPE scaling 'dynamic'"),
        ({"num_hidden_layers": 1}, "has no place in llama.cpp's llama model"),
        (
            {"architectures": ["MixtralForCausalLM"], "num_local_experts": 4},
            "config.json has no 'num_experts_per_tok'",
        ),
        ({"rope_parameters": {"rope_type": "llama3"}}, "config.json has no 'factor'"),
        ({"tokenizer_json": '{"model": {"type": "WordPiece"}}'}, "only BPE tokenizers convert here"),
        ({"tokenizer_json": "{"}, "tokenizer.json:"),
        ({"tokenizer_json": None}, "the model folder has no tokenizer.json"),
    ],
)
def test_what_cannot_convert_is_a_400_that_says_why(
    host: Host, hf_folder: Path, tmp_path: Path, change: dict[str, object], said: str
) -> None:
    folder = _without(hf_folder, tmp_path, **change)
    with host.client() as c:
        files = {}
        for path in sorted(folder.iterdir()):
            digest = ollama.Client(host=host.url).create_blob(path)
            files[path.name] = digest
        r = c.post("/api/create", json={"model": "bad", "files": files, "stream": False})
        assert r.status_code == 400 and said in r.json()["error"], r.text
        assert c.post("/api/show", json={"model": "bad"}).status_code == 404
    assert not list((host.store_root / "partial").iterdir())  # nothing half-written left behind


def test_a_damaged_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    from ferrousforge.errors import BadRequest

    folder = write_tiny_hf(tmp_path / "model")
    weights = folder / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:-100])  # cut short
    with pytest.raises(BadRequest, match="do not match its shape, or lie past the end"):
        convert(folder, tmp_path / "out.gguf")
    for damaged in (b"\xff" * 64, struct.pack("<Q", 2) + b"[]", struct.pack("<Q", 14) + b'{"w": {"a": 1}}'):
        weights.write_bytes(damaged)  # not safetensors at all; a header of no object; no tensor
        with pytest.raises(BadRequest, match=r"is not a safetensors file|has no dtype"):
            convert(folder, tmp_path / "out.gguf")


def test_file_names_are_plain_and_blobs_uploaded(host: Host, hf_folder: Path) -> None:
    client = ollama.Client(host=host.url)
    files = {p.name: client.create_blob(p) for p in sorted(hf_folder.iterdir())}
    with host.client() as c:
        odd_names = {**files, "../x.json": files["config.json"]}
        odd = c.post("/api/create", json={"model": "x", "files": odd_names, "stream": False})
        assert odd.status_code == 400 and "file paths inside the model folder only" in odd.json()["error"]
        missing = {**files, "model.safetensors": "sha256:" + "0" * 64}
        gone = c.post("/api/create", json={"model": "x", "files": missing, "stream": False})
        assert gone.status_code == 400 and "not found: upload it" in gone.json()["error"]


def logits(path: Path, ids: list[int], **kwargs: object) -> np.ndarray:
    model = llama(path, logits_all=True, **kwargs)
    model.eval(ids)
    return np.asarray(model.scores[: len(ids)])


@pytest.mark.parametrize(
    ("arch", "rslora"),
    [("llama", False), ("llama", True), ("qwen2", False), ("gemma3", False), ("phi3", False)],
)
def test_a_peft_adapter_gives_what_its_weights_merged_give(tmp_path: Path, arch: str, rslora: bool) -> None:
    model = write_tiny_hf(tmp_path / "model", arch=arch, pre="qwen2" if arch == "qwen2" else "llama3")
    write_tiny_peft(model, tmp_path / "adapter", tmp_path / "merged", rslora=rslora)
    convert(model, tmp_path / "model.gguf")
    convert(tmp_path / "merged", tmp_path / "merged.gguf")
    pairs = 8 if arch == "phi3" else 14  # (Phi-3's q, k, v and its gate and up are one weight each)
    assert convert_adapter(tmp_path / "adapter", tmp_path / "model.gguf", tmp_path / "lora.gguf") == pairs
    ids = Tokenizer.from_file(str(model / "tokenizer.json")).encode(" ".join(TEXTS)).ids[:100]
    merged = logits(tmp_path / "merged.gguf", ids)
    adapted = logits(tmp_path / "model.gguf", ids, lora_path=str(tmp_path / "lora.gguf"))
    base = logits(tmp_path / "model.gguf", ids)
    scale = np.abs(merged).max()
    assert np.abs(adapted - merged).max() < 0.02 * scale
    assert np.abs(base - merged).max() > 0.2 * scale  # the adapter changes what the model computes


def test_create_with_a_peft_adapter_folder(host: Host, tmp_path: Path) -> None:
    model = write_tiny_hf(tmp_path / "model")
    write_tiny_peft(model, tmp_path / "adapter", tmp_path / "merged")
    client = ollama.Client(host=host.url)
    files = {p.name: client.create_blob(p) for p in sorted(model.iterdir())}
    adapters = {p.name: client.create_blob(p) for p in sorted((tmp_path / "adapter").iterdir())}
    client.create("tuned-hf", files=files, adapters=adapters)
    shown = client.show("tuned-hf")
    assert (shown.modelfile or "").count("\nADAPTER ") == 1
    # the host's greedy tokens are llama.cpp's with the adapter converted here
    convert(model, tmp_path / "model.gguf")
    convert_adapter(tmp_path / "adapter", tmp_path / "model.gguf", tmp_path / "lora.gguf")
    direct = llama(tmp_path / "model.gguf", lora_path=str(tmp_path / "lora.gguf"))
    assert greedy_on_host(host, "tuned-hf") == greedy(direct)
    # the CLI: FROM a folder, ADAPTER a folder
    (tmp_path / "Modelfile").write_text(f"FROM {model}\nADAPTER {tmp_path / 'adapter'}\n")
    made = ff(host, "create", "tuned-cli", "-f", str(tmp_path / "Modelfile"))
    assert made.returncode == 0, made.stderr
    assert "ADAPTER " in ff(host, "show", "tuned-cli", "--modelfile").stdout
    # what cannot convert: a DoRA adapter, a tensor of no LoRA pair
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config | {"use_dora": True}))
    dora = {
        **adapters,
        "adapter_config.json": client.create_blob(tmp_path / "adapter" / "adapter_config.json"),
    }
    without_rank = {k: v for k, v in config.items() if k != "r"}
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(without_rank))
    rankless = {
        **adapters,
        "adapter_config.json": client.create_blob(tmp_path / "adapter" / "adapter_config.json"),
    }
    with host.client() as c:
        r = c.post("/api/create", json={"model": "x", "files": files, "adapters": dora, "stream": False})
        assert r.status_code == 400 and "DoRA adapters do not convert" in r.json()["error"]
        r = c.post("/api/create", json={"model": "x", "files": files, "adapters": rankless, "stream": False})
        assert r.status_code == 400 and "adapter_config.json has no 'r'" in r.json()["error"]
    assert not list((host.store_root / "partial").iterdir())
