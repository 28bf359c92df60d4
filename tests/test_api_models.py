"""Model management over real HTTP: tags, show, copy, delete, create, blobs, pull and ps."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from ferrousforge.gguf import size_label

from conftest import Host, free_port, start_host
from fileserver import serve_files


def statuses(response) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(x) for x in response.text.splitlines() if x.strip()]


def test_version_root_and_head(host: Host) -> None:
    with host.client() as c:
        root = c.get("/")
        assert root.text == "Ollama is running"  # what Ollama's clients check
        assert root.headers["x-ferrousforge-version"]
        assert c.head("/").status_code == 200
        version = c.get("/api/version").json()
        assert tuple(int(p) for p in version["version"].split(".")) >= (0, 14, 0)  # the API spoken
        assert version["ferrousforge"]
        assert c.get("/api/nothing").status_code == 404


def test_tags_lists_pulled_model_with_details(host: Host, tiny_gguf: Path) -> None:
    with host.client() as c:
        models = c.get("/api/tags").json()["models"]
    assert [m["name"] for m in models] == ["tiny:latest"]
    m = models[0]
    assert m["details"]["family"] == "llama"
    assert m["details"]["format"] == "gguf"
    assert m["details"]["quantization_level"] == "F32"
    # Ollama's parameter_size: the tensors' values counted, written as Ollama writes them
    assert m["details"]["parameter_size"] == size_label(parameters(tiny_gguf))
    assert m["size"] > tiny_gguf.stat().st_size
    assert len(m["digest"]) == 64


def parameters(path: Path) -> int:
    import gguf

    return sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


def test_parameter_sizes_read_as_ollama_writes_them() -> None:
    assert [
        size_label(n) for n in (134_515_008, 268_098_176, 22_565_376, 7 * 10**9, 1_234_000_000, 512_300, 12)
    ] == [
        "134.52M",
        "268.10M",
        "22.57M",
        "7B",
        "1.2B",
        "512K",
        "12",
    ]


def test_show_reports_template_info_and_capabilities(host: Host, tiny_gguf: Path) -> None:
    with host.client() as c:
        show = c.post("/api/show", json={"model": "tiny"}).json()
        missing = c.post("/api/show", json={"model": "nope"})
    assert show["capabilities"] == ["completion", "tools"]
    assert show["model_info"]["general.architecture"] == "llama"
    assert show["model_info"]["llama.context_length"] == 2048
    assert show["model_info"]["general.parameter_count"] == parameters(tiny_gguf) > 0
    assert "FROM " in show["modelfile"]
    assert missing.status_code == 404 and "not found" in missing.json()["error"]


def test_copy_and_delete(host: Host) -> None:
    with host.client() as c:
        assert c.post("/api/copy", json={"source": "tiny", "destination": "me/tiny2:v1"}).status_code == 200
        names = {m["name"] for m in c.get("/api/tags").json()["models"]}
        assert names == {"tiny:latest", "me/tiny2:v1"}
        assert c.post("/api/copy", json={"source": "ghost", "destination": "x"}).status_code == 404
        assert c.post("/api/copy", json={"source": "tiny", "destination": "../x"}).status_code == 400
        assert c.request("DELETE", "/api/delete", json={"model": "tiny"}).status_code == 200
        assert c.request("DELETE", "/api/delete", json={"model": "tiny"}).status_code == 404
        # The copy still works: blobs it shares were not pruned.
        r = c.post(
            "/api/generate",
            json={"model": "me/tiny2:v1", "prompt": "a", "stream": False, "options": {"num_predict": 2}},
        )
        assert r.status_code == 200
        c.request("DELETE", "/api/delete", json={"model": "me/tiny2:v1"})
    assert list((host.store_root / "blobs").iterdir()) == []


def test_delete_unloads_a_loaded_model(host: Host) -> None:
    with host.client() as c:
        c.post("/api/generate", json={"model": "tiny"})
        assert c.get("/api/ps").json()["models"]
        c.request("DELETE", "/api/delete", json={"model": "tiny"})
        assert c.get("/api/ps").json()["models"] == []


def test_blob_upload_is_verified_and_create_uses_it(host: Host, tiny_gguf_plain: Path) -> None:
    data = tiny_gguf_plain.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with host.client() as c:
        assert c.head(f"/api/blobs/{digest}").status_code == 404
        wrong = "sha256:" + "0" * 64
        r = c.post(f"/api/blobs/{wrong}", content=data)
        assert r.status_code == 400 and "mismatch" in r.json()["error"]
        assert c.head(f"/api/blobs/{wrong}").status_code == 404
        assert c.post("/api/blobs/sha256:xyz", content=b"x").status_code == 400
        assert c.post(f"/api/blobs/{digest}", content=data).status_code == 201
        assert c.head(f"/api/blobs/{digest}").status_code == 200
        r = c.post(
            "/api/create",
            json={
                "model": "plain",
                "files": {"plain.gguf": digest},
                "system": "You are terse.",
                "parameters": {"temperature": 0.1, "stop": ["."]},
                "stream": False,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "success"
        show = c.post("/api/show", json={"model": "plain"}).json()
        assert show["system"] == "You are terse."
        assert "temperature" in show["parameters"] and '"."' in show["parameters"]
        gen = c.post(
            "/api/generate",
            json={"model": "plain", "prompt": "a", "stream": False, "options": {"num_predict": 3}},
        )
        assert gen.status_code == 200
    assert not list((host.store_root / "partial").iterdir())


def test_create_from_existing_model_overrides_template(host: Host) -> None:
    with host.client() as c:
        r = c.post("/api/create", json={"model": "tiny-raw", "from": "tiny", "template": "{{ .Prompt }}"})
        assert [s["status"] for s in statuses(r)][-1] == "success"
        assert c.post("/api/show", json={"model": "tiny-raw"}).json()["template"] == "{{ .Prompt }}"
        assert "<|im_start|>" in c.post("/api/show", json={"model": "tiny"}).json()["template"]
        r = c.post("/api/create", json={"model": "m2", "modelfile": "FROM tiny\nPARAMETER num_predict 4\n"})
        assert r.status_code == 200
        gen = c.post("/api/generate", json={"model": "m2", "prompt": "x", "stream": False}).json()
        assert gen["eval_count"] == 4


def test_templates_that_cannot_render_are_refused_at_create(host: Host) -> None:
    """As Ollama parses a template when the model is made: a 400 then, not at every chat after."""
    ranged = '{{- range .Messages }}{{ template "turn" . }}{{ end }}'
    with host.client() as c:
        for template in ("{% for %}", "{{ if }}", "{{ end }}", ranged, "{{ nosuch .Prompt }}"):
            r = c.post("/api/create", json={"model": "bad", "from": "tiny", "template": template})
            assert r.status_code == 400 and "template" in r.json()["error"], (template, r.text)
            made = c.post(
                "/api/create", json={"model": "bad", "modelfile": f'FROM tiny\nTEMPLATE """{template}"""'}
            )
            assert made.status_code == 400, template
        bogus = c.post("/api/create", json={"model": "bad", "modelfile": "FROM tiny\nPARAMETER bogus 1\n"})
        assert bogus.status_code == 400 and "unknown parameter 'bogus'" in bogus.json()["error"]
        asked = c.post("/api/generate", json={"model": "tiny", "prompt": "x", "template": "{{ if }}"})
        assert asked.status_code == 400
        assert "bad:latest" not in [m["name"] for m in c.get("/api/tags").json()["models"]]


def test_names_match_whatever_their_case(host: Host) -> None:
    """As Ollama's: "TINY:Latest" is the model "tiny:latest"."""
    with host.client() as c:
        assert c.post("/api/show", json={"model": "TINY:Latest"}).status_code == 200
        body = {"model": "Tiny", "prompt": "x", "stream": False, "options": {"num_predict": 1}}
        assert c.post("/api/generate", json=body).json()["eval_count"] == 1
        assert c.post("/api/show", json={"model": "tinyx"}).status_code == 404


def test_a_classic_template_sees_every_turn(host: Host) -> None:
    """A .System/.Prompt/.Response template renders each exchange: a longer chat is a longer prompt,
    and the model's MESSAGEs come first (as the same chat given them)."""
    from test_shared import CLASSIC_CHATML

    greedy = {"stream": False, "options": {"num_predict": 2, "temperature": 0}}
    turns = [
        {"role": "user", "content": "one two"},
        {"role": "assistant", "content": "three four"},
        {"role": "user", "content": "five"},
    ]
    with host.client() as c:
        body = {"model": "classic", "from": "tiny", "template": CLASSIC_CHATML, "messages": turns[:2]}
        assert c.post("/api/create", json=body).status_code == 200
        last = c.post("/api/chat", json={"model": "classic", "messages": turns[2:], **greedy}).json()
        plain = {"model": "classic", "prompt": "", "raw": True, **greedy}
        prompt = render_classic(turns)
        raw = c.post("/api/generate", json={**plain, "prompt": prompt}).json()
    assert (
        last["prompt_eval_count"] == raw["prompt_eval_count"]
        and last["message"]["content"] == raw["response"]
    )


def render_classic(turns: list[dict[str, str]]) -> str:
    parts = [f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns]
    return "".join(parts) + "<|im_start|>assistant\n"


def test_an_ollama_template_with_tools_renders_the_whole_chat(host: Host) -> None:
    """A Modelfile TEMPLATE as Ollama's library writes them (range .Messages, .Tools, .ToolCalls):
    the chat's prompt is what Ollama renders, token for token."""
    from test_gotemplate import TOOL_CHAT, TOOL_PROMPT, TOOLS_TEMPLATE, WEATHER

    greedy = {"stream": False, "options": {"num_predict": 2, "temperature": 0}}
    with host.client() as c:
        made = c.post("/api/create", json={"model": "ranged", "from": "tiny", "template": TOOLS_TEMPLATE})
        assert made.status_code == 200, made.text
        chat = c.post(
            "/api/chat", json={"model": "ranged", "messages": TOOL_CHAT, "tools": [WEATHER], **greedy}
        )
        raw = c.post("/api/generate", json={"model": "ranged", "prompt": TOOL_PROMPT, "raw": True, **greedy})
    assert chat.status_code == 200, chat.text
    assert chat.json()["prompt_eval_count"] == raw.json()["prompt_eval_count"]


def test_think_reaches_an_ollama_template(host: Host) -> None:
    """think false on a thinking model's Go template: .IsThinkSet and not .Think, as Ollama sets them."""
    template = (
        "{{ range .Messages }}{{ .Content }}{{ end }}"
        "{{ if and $.IsThinkSet (not $.Think) }} /no_think<think></think>{{ end }}"
    )
    greedy = {"stream": False, "options": {"num_predict": 1, "temperature": 0}}
    chat = {"model": "thinker", "messages": [{"role": "user", "content": "hi"}], **greedy}
    raw = {"model": "thinker", "raw": True, **greedy}
    with host.client() as c:
        assert (
            c.post("/api/create", json={"model": "thinker", "from": "tiny", "template": template}).status_code
            == 200
        )
        off = c.post("/api/chat", json={**chat, "think": False}).json()
        on = c.post("/api/chat", json=chat).json()
        expected_off = c.post("/api/generate", json={**raw, "prompt": "hi /no_think<think></think>"}).json()
        expected_on = c.post("/api/generate", json={**raw, "prompt": "hi"}).json()
    assert off["prompt_eval_count"] == expected_off["prompt_eval_count"] > expected_on["prompt_eval_count"]
    assert on["prompt_eval_count"] == expected_on["prompt_eval_count"]


def test_a_chat_model_gives_embeddings_beside_its_chats(host: Host) -> None:
    """As Ollama's /api/embed does for a chat model: unit vectors of its width, from a runner of its
    own that chats leave alone; unloading the model unloads both."""
    with host.client() as c:
        embedded = c.post("/api/embed", json={"model": "tiny", "input": ["one", "two three"]})
        assert embedded.status_code == 200, embedded.text
        vectors = embedded.json()["embeddings"]
        width = c.post("/api/show", json={"model": "tiny"}).json()["model_info"]["llama.embedding_length"]
        assert len(vectors) == 2 and all(len(v) == width for v in vectors) and vectors[0] != vectors[1]
        assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
        body = {"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 2}}
        chat = c.post("/api/generate", json=body)
        assert chat.status_code == 200 and chat.json()["eval_count"] == 2
        again = c.post("/v1/embeddings", json={"model": "tiny", "input": "one"}).json()["data"][0][
            "embedding"
        ]
        assert max(abs(a - b) for a, b in zip(again, vectors[0], strict=True)) < 1e-5
        loaded = sorted(m["name"] for m in c.get("/api/ps").json()["models"])
        assert loaded == ["tiny:latest", "tiny:latest#embed"]
        off = c.post("/api/generate", json={"model": "tiny", "keep_alive": 0})
        assert off.status_code == 200 and c.get("/api/ps").json()["models"] == []


def test_a_models_messages_start_every_conversation(host: Host) -> None:
    """Modelfile MESSAGEs (or create's ``messages``): a chat or a templated generate with the model
    is the same prompt as the plain model given those messages first; /api/show lists them."""
    shots = [{"role": "user", "content": "Is Toronto in Canada?"}, {"role": "assistant", "content": "yes"}]
    greedy = {"stream": False, "options": {"num_predict": 4, "temperature": 0}}
    ask = {"role": "user", "content": "Is Paris in France?"}
    modelfile = 'FROM tiny\nMESSAGE user Is Toronto in Canada?\nMESSAGE assistant """yes"""\n'
    with host.client() as c:
        assert c.post("/api/create", json={"model": "shots", "modelfile": modelfile}).status_code == 200
        assert (
            c.post("/api/create", json={"model": "shots2", "from": "tiny", "messages": shots}).status_code
            == 200
        )
        shown = c.post("/api/show", json={"model": "shots"}).json()
        assert shown["messages"] == shots and 'MESSAGE assistant """yes"""' in shown["modelfile"]
        plain = c.post("/api/chat", json={"model": "tiny", "messages": [*shots, ask], **greedy}).json()
        for name in ("shots", "shots2"):
            with_shots = c.post("/api/chat", json={"model": name, "messages": [ask], **greedy}).json()
            assert with_shots["prompt_eval_count"] == plain["prompt_eval_count"]
            assert with_shots["message"]["content"] == plain["message"]["content"]
        generated = c.post(
            "/api/generate", json={"model": "shots", "prompt": ask["content"], **greedy}
        ).json()
        assert generated["prompt_eval_count"] == plain["prompt_eval_count"]
        alone = c.post("/api/chat", json={"model": "tiny", "messages": [ask], **greedy}).json()
        assert alone["prompt_eval_count"] < plain["prompt_eval_count"]
        bad = c.post("/api/create", json={"model": "x", "from": "tiny", "messages": [{"role": "robot"}]})
        assert bad.status_code == 400 and "role must be one of" in bad.json()["error"]
        assert c.post("/api/show", json={"model": "x"}).status_code == 404  # nothing half-made


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "x"}, "needs 'from'"),
        ({"model": "x", "from": "ghost"}, "not found"),
        ({"model": "x", "files": {"a.gguf": "sha256:" + "1" * 64}}, "not found"),
        ({"model": "x", "files": {"a.bin": "sha256:" + "1" * 64}}, "one .gguf model"),
        ({"model": "x", "from": "tiny", "parameters": {"temperature": "hot"}}, "temperature"),
        (
            {"model": "x", "from": "tiny", "quantize": "q3"},
            "unsupported quantization type 'q3'; one of: Q4_0",
        ),
        ({"model": "x", "modelfile": "FROM tiny\nDRAFT foo"}, "not supported"),
        ({"model": "x/../y", "from": "tiny"}, "invalid model name"),
    ],
)
def test_bad_create_requests(host: Host, body: dict, needle: str) -> None:
    with host.client() as c:
        before = sorted(p.name for p in (host.store_root / "blobs").iterdir())
        r = c.post("/api/create", json=body)
        assert r.status_code in (400, 404), r.text
        assert needle in r.json()["error"]
        assert sorted(p.name for p in (host.store_root / "blobs").iterdir()) == before


def test_pull_from_url_streams_progress_and_resumes(tmp_path: Path, tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    with serve_files({"models/tiny.gguf": data}) as fs:
        for h in start_host(tmp_path / "store"):
            with h.client() as c:
                fs.cut_after = len(data) // 3
                body = {"model": "web", "source": f"{fs.url}/models/tiny.gguf"}
                first = statuses(c.post("/api/pull", json=body))
                assert "error" in first[-1] and "resume" in first[-1]["error"]
                assert c.post("/api/show", json={"model": "web"}).status_code == 404
                assert not list((h.store_root / "blobs").iterdir())
                partial = list((h.store_root / "partial").iterdir())
                assert len(partial) == 1
                kept = partial[0].stat().st_size
                assert 0 < kept < len(data)

                second = statuses(c.post("/api/pull", json=body))
                assert second[0]["status"] == "pulling manifest"
                assert second[-1]["status"] == "success"
                progress = [s for s in second if "completed" in s]
                assert progress[-1]["completed"] == progress[-1]["total"] == len(data)
                assert ("GET", "/models/tiny.gguf", f"bytes={kept}-") in fs.requests  # resumed, not restarted
                assert not list((h.store_root / "partial").iterdir())
                r = c.post(
                    "/api/generate",
                    json={"model": "web", "prompt": "a", "stream": False, "options": {"num_predict": 2}},
                )
                assert r.status_code == 200
                # nothing fetched: nothing to resume, and the error does not say there is
                dead = {"model": "gone", "source": f"http://127.0.0.1:{free_port()}/m.gguf", "stream": False}
                failed = c.post("/api/pull", json=dead)
                assert failed.status_code == 502 and "resume" not in failed.json()["error"], failed.text


def test_pull_from_hugging_face_hub(tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tiny_gguf.read_bytes()
    files = {
        "acme/tiny-GGUF/tiny-Q8_0.gguf": data[:100],
        "acme/tiny-GGUF/tiny-Q4_K_M.gguf": data,
        "acme/tiny-GGUF/README.md": b"hi",
    }
    with serve_files(files) as fs:
        monkeypatch.setenv("HF_ENDPOINT", fs.url)
        for h in start_host(tmp_path / "store"):
            with h.client() as c:
                r = c.post("/api/pull", json={"model": "hf.co/acme/tiny-GGUF:Q4_K_M", "stream": False})
                assert r.status_code == 200, r.text
                tags = c.get("/api/tags").json()["models"]
                assert tags[0]["name"] == "hf.co/acme/tiny-GGUF:Q4_K_M"
                digest = hashlib.sha256(data).hexdigest()
                assert (h.store_root / "blobs" / f"sha256-{digest}").exists()
                r = c.post("/api/pull", json={"model": "hf.co/acme/tiny-GGUF:Q2_K", "stream": False})
                assert r.status_code == 400 and "no GGUF file for 'Q2_K'" in r.json()["error"]
                # A truncated "GGUF" (here the Q8_0 file) is refused and leaves nothing behind.
                r = c.post("/api/pull", json={"model": "hf.co/acme/tiny-GGUF:Q8_0", "stream": False})
                assert r.status_code == 400 and "GGUF" in r.json()["error"]
                # model, template, config, and the vocabulary for the page (tokenizer.json, tokens.json)
                assert len(list((h.store_root / "blobs").iterdir())) == 5


def test_a_hub_out_of_reach_fails_at_once_and_says_why(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network (here: a hub address nothing listens on) is a 502 in a moment, not after the hub
    client's retries, and says what to do instead."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with host.client() as c:
        r = c.post("/api/pull", json={"model": "hf.co/nobody/nothing-GGUF", "stream": False})
    assert r.status_code == 502 and f"cannot reach Hugging Face at 127.0.0.1:{port}" in r.json()["error"]
    assert "--from" in r.json()["error"] and time.monotonic() - started < 5


def test_pull_rejects_content_with_the_wrong_digest(
    tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tiny_gguf.read_bytes()
    with serve_files({"acme/r/m.gguf": data}) as fs:
        monkeypatch.setenv("HF_ENDPOINT", fs.url)
        fs.files["acme/r/m.gguf"] = data  # HEAD announces this digest...
        for h in start_host(tmp_path / "store"):
            from ferrousforge_host.models import pull as pull_module

            real = pull_module._huggingface

            def lying(target: str, real=real):  # type: ignore[no-untyped-def]
                plan = real(target)
                plan.files[0].sha256 = "sha256:" + "ab" * 32  # ...but the source states another
                return plan

            monkeypatch.setattr(pull_module, "_huggingface", lying)
            with h.client() as c:
                r = c.post("/api/pull", json={"model": "m", "source": "hf.co/acme/r/m.gguf", "stream": False})
            assert r.status_code == 400 and "mismatch" in r.json()["error"]
            assert not list((h.store_root / "blobs").iterdir())
            assert not list((h.store_root / "partial").iterdir())


def test_pull_of_unknown_name_is_404_and_bad_source_400(host: Host) -> None:
    with host.client() as c:
        r = c.post("/api/pull", json={"model": "no-such-model"})
        assert r.status_code == 404
        r = c.post("/api/pull", json={"model": "x", "source": "relative/path.gguf"})
        assert r.status_code == 400


def test_create_quantizes_an_f32_model_as_ollama_create_q(host: Host, tiny_gguf_plain: Path) -> None:
    """``quantize`` from an existing model and from an uploaded GGUF: llama.cpp writes a new, smaller
    blob with the asked file type; the model generates, and the source stays as it was."""
    with host.client() as c:
        r = c.post("/api/create", json={"model": "tiny-q8", "from": "tiny", "quantize": "q8_0"})
        assert r.status_code == 200, r.text
        said = [s["status"] for s in statuses(r)]
        assert said[0] == "quantizing F32 model to Q8_0" and said[1].startswith("creating new layer sha256:")
        assert said[-1] == "success" and not any("digest" in x for x in statuses(r))
        tags = {m["name"]: m for m in c.get("/api/tags").json()["models"]}
        assert tags["tiny-q8:latest"]["details"]["quantization_level"] == "Q8_0"
        assert tags["tiny:latest"]["details"]["quantization_level"] == "F32"
        assert tags["tiny-q8:latest"]["size"] < tags["tiny:latest"]["size"] / 2
        shown = c.post("/api/show", json={"model": "tiny-q8"}).json()
        assert "<|im_start|>" in shown["template"]  # the rest of the model as it was
        gen = c.post(
            "/api/generate",
            json={"model": "tiny-q8", "prompt": "a", "stream": False, "options": {"num_predict": 3}},
        )
        assert gen.status_code == 200 and gen.json()["eval_count"] == 3

        data = tiny_gguf_plain.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert c.post(f"/api/blobs/{digest}", content=data).status_code == 201
        body = {"model": "plain-q4", "files": {"plain.gguf": digest}, "quantize": "Q4_K_M", "stream": False}
        r = c.post("/api/create", json=body)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        assert (
            c.post("/api/show", json={"model": "plain-q4"}).json()["details"]["quantization_level"]
            == "Q4_K_M"
        )

        r = c.post("/api/create", json={"model": "again", "from": "tiny-q8", "quantize": "q4_0"})
        assert r.status_code == 400
        assert (
            r.json()["error"] == "quantization is only supported for F32, F16, BF16 models; this one is Q8_0"
        )
    assert not list((host.store_root / "partial").iterdir())


def test_a_file_cut_short_is_refused_at_create_and_leaves_nothing(host: Host, tiny_gguf_plain: Path) -> None:
    """A GGUF whose header is whole but whose last tensor's data is cut short is refused when the model
    is made (with or without quantizing), not when a request first loads it."""
    data = tiny_gguf_plain.read_bytes()[:-4096]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with host.client() as c:
        assert c.post(f"/api/blobs/{digest}", content=data).status_code == 201
        before = sorted(p.name for p in (host.store_root / "blobs").iterdir())
        for extra in ({}, {"quantize": "q8_0"}):
            body = {"model": "cut", "files": {"cut.gguf": digest}, "stream": False, **extra}
            r = c.post("/api/create", json=body)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert "the file is cut short: tensor blk.1.ffn_down.weight runs past its end" in error, error
            assert c.post("/api/show", json={"model": "cut"}).status_code == 404
        assert c.get("/api/version").status_code == 200
    assert sorted(p.name for p in (host.store_root / "blobs").iterdir()) == before
    assert not list((host.store_root / "partial").iterdir())
