"""The official ``ollama`` Python client, unmodified, against the host."""

from __future__ import annotations

from pathlib import Path

import ollama
import pytest

from conftest import Host


@pytest.fixture
def client(host: Host) -> ollama.Client:
    return ollama.Client(host=host.url)


def test_list_show_ps(client: ollama.Client, host: Host) -> None:
    models = client.list().models
    assert [m.model for m in models] == ["tiny:latest"]
    assert models[0].details is not None and models[0].details.family == "llama"
    shown = client.show("tiny")
    assert shown.capabilities == ["completion", "tools"]
    assert shown.template and "<|im_start|>" in shown.template
    assert client.ps().models == []
    client.generate("tiny", "", keep_alive="1m")
    running = client.ps().models
    assert [m.model for m in running] == ["tiny:latest"]
    assert running[0].expires_at is not None


def test_generate_and_chat_stream_and_not(client: ollama.Client) -> None:
    options = {"temperature": 0, "num_predict": 10}
    whole = client.generate("tiny", "the", options=options)
    assert whole.done and whole.eval_count == 10 and whole.response
    parts = list(client.generate("tiny", "the", options=options, stream=True))
    assert "".join(p.response for p in parts) == whole.response
    assert parts[-1].done and parts[-1].done_reason == "length"

    messages = [{"role": "user", "content": "hello"}]
    reply = client.chat("tiny", messages=messages, options=options)
    assert reply.message.role == "assistant" and reply.message.content
    streamed = list(client.chat("tiny", messages=messages, options=options, stream=True))
    assert "".join(p.message.content or "" for p in streamed) == reply.message.content


def test_pull_copy_delete(client: ollama.Client, host: Host, tiny_gguf_plain: Path) -> None:
    # A name the catalogue lacks is an error the client raises as ResponseError (404).
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("no-such-model")
    assert info.value.status_code == 404
    # Pulling a model again re-fetches it from the source it was first pulled from.
    events = list(client.pull("tiny", stream=True))
    assert events[-1].status == "success"
    assert any(e.total for e in events)
    client.copy("tiny", "tiny-copy")
    assert {m.model for m in client.list().models} == {"tiny:latest", "tiny-copy:latest"}
    client.delete("tiny-copy")
    assert [m.model for m in client.list().models] == ["tiny:latest"]
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("tiny-copy")
    assert missing.value.status_code == 404
