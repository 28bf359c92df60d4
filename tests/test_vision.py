"""Images in prompts: a vision model made of a GGUF and its projector (a tiny random LLaVA mmproj,
run by llama.cpp's libmtmd), over Ollama's, OpenAI's and Anthropic's APIs."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import ollama
import pytest
from oci_registry import digest, serve_registry
from test_registry import GO_TEMPLATE, OLLAMA_CONFIG

from ferrousforge.errors import BadRequest
from ferrousforge.manifest import MODEL, PROJECTOR, TEMPLATE
from ferrousforge.modelfile import Modelfile

from conftest import Host, start_host
from tinymodel import png, write_projector, write_tiny_projector

DARK = png(np.zeros((28, 28, 3), np.uint8))
NOISE = png(np.random.default_rng(3).integers(0, 256, (40, 52, 3), dtype=np.uint8))
GREEDY = {"temperature": 0, "num_predict": 8, "seed": 1}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_projector(tmp_path_factory.mktemp("vision") / "mmproj.gguf")


def upload(c: httpx.Client, path: Path) -> str:
    data = path.read_bytes()
    assert c.post(f"/api/blobs/{digest(data)}", content=data).status_code in (200, 201)
    return digest(data)


@pytest.fixture
def vision(host: Host, tiny_gguf: Path, projector: Path) -> Host:
    """The host with ``eyes``: the tiny model and its projector."""
    with host.client() as c:
        files = {"tiny.gguf": upload(c, tiny_gguf), "mmproj.gguf": upload(c, projector)}
        r = c.post("/api/create", json={"model": "eyes", "files": files, "stream": False})
        assert r.status_code == 200, r.text
    return host


def generate(
    c: httpx.Client, images: list[str], prompt: str = "what is this?", **extra: object
) -> httpx.Response:
    body = {"model": "eyes", "prompt": prompt, "images": images, "stream": False, "options": GREEDY, **extra}
    return c.post("/api/generate", json=body)


def test_a_model_and_its_projector_make_a_vision_model(vision: Host) -> None:
    with vision.client() as c:
        shown = c.post("/api/show", json={"model": "eyes"}).json()
        assert "vision" in shown["capabilities"] and "completion" in shown["capabilities"]
        assert shown["projector_info"]["general.architecture"] == "clip"
        assert shown["projector_info"]["clip.vision.projection_dim"] == 64  # the text model's width
        assert shown["modelfile"].count("\nFROM ") == 2
        assert "vision" not in c.post("/api/show", json={"model": "tiny"}).json()["capabilities"]
        r = c.post("/api/generate", json={"model": "tiny", "prompt": "hi", "images": [b64(DARK)]})
        assert r.status_code == 400 and "does not support images" in r.json()["error"]


def test_the_image_is_part_of_the_prompt(vision: Host) -> None:
    with vision.client() as c:
        dark, again, noise = (generate(c, [b64(x)]) for x in (DARK, DARK, NOISE))
        plain = generate(c, [])
    for r in (dark, again, noise, plain):
        assert r.status_code == 200, r.text
    assert dark.json()["response"] == again.json()["response"]  # the same image, the same reply
    assert dark.json()["response"] != noise.json()["response"]  # another image, another reply
    # each image takes its 4 embeddings' positions in the prompt (2×2 patches of the tiny encoder)
    assert dark.json()["prompt_eval_count"] >= plain.json()["prompt_eval_count"] + 4
    assert all(t >= 0 for t in dark.json()["context"])  # the context holds tokens only


def test_chat_openai_anthropic_and_responses_see_the_same_image(vision: Host) -> None:
    with vision.client() as c:
        ollama = c.post(
            "/api/chat",
            json={
                "model": "eyes",
                "messages": [{"role": "user", "content": "what is this?", "images": [b64(NOISE)]}],
                "stream": False,
                "options": GREEDY,
            },
        )
        assert ollama.status_code == 200, ollama.text
        openai = c.post(
            "/v1/chat/completions",
            json={
                "model": "eyes",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64," + b64(NOISE)},
                            },
                        ],
                    }
                ],
                "temperature": 0,
                "max_tokens": 8,
                "seed": 1,
            },
        )
        assert openai.status_code == 200, openai.text
        anthropic = c.post(
            "/v1/messages",
            json={
                "model": "eyes",
                "max_tokens": 8,
                "temperature": 0,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": b64(NOISE)},
                            },
                            {"type": "text", "text": "what is this?"},
                        ],
                    }
                ],
            },
        )
        assert anthropic.status_code == 200, anthropic.text
    reply = ollama.json()["message"]["content"]
    assert openai.json()["choices"][0]["message"]["content"] == reply
    assert anthropic.json()["content"][0]["text"] == reply
    with vision.client() as c:
        responses = c.post(
            "/v1/responses",
            json={
                "model": "eyes",
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "what is this?"},
                            {"type": "input_image", "image_url": "data:image/png;base64," + b64(NOISE)},
                        ],
                    }
                ],
                "max_output_tokens": 8,
                "temperature": 0,
            },
        )
        assert responses.status_code == 200, responses.text
    said = [
        p["text"] for item in responses.json()["output"] if item["type"] == "message" for p in item["content"]
    ]
    assert said == [reply]


def test_a_chat_cut_to_its_window_keeps_the_images_of_the_turns_it_keeps(vision: Host) -> None:
    long_turn = " ".join(["the river runs past the old mill"] * 40)
    with vision.client() as c:
        r = c.post(
            "/api/chat",
            json={
                "model": "eyes",
                "messages": [
                    {"role": "user", "content": long_turn, "images": [b64(DARK)]},
                    {"role": "assistant", "content": "a dark square"},
                    {"role": "user", "content": "and this one?", "images": [b64(NOISE)]},
                ],
                "stream": False,
                "options": {**GREEDY, "num_ctx": 128},
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["prompt_eval_count"] < 128  # the first turn (and its image) went


def test_bad_images_are_clear_400s_and_the_model_keeps_serving(vision: Host) -> None:
    with vision.client() as c:
        cases = [
            (generate(c, ["not base64!"]), "images[0] is not base64"),
            (generate(c, [b64(b"hello, not an image")]), "image 1 is not a PNG, JPEG, GIF, BMP or PNM"),
            (generate(c, [b64(DARK[:60])]), "image 1 could not be decoded"),
            (generate(c, [b64(DARK)], prompt="two? <__media__>"), "marks 2 image(s) but 1 were given"),
            (
                generate(c, [b64(DARK)], prompt="the mill " * 400, options={**GREEDY, "num_ctx": 256}),
                "does not fit the context window",
            ),
            (generate(c, [b64(DARK)], suffix=" end"), "can't have a suffix"),
            (
                c.post(
                    "/api/chat",
                    json={"model": "eyes", "messages": [{"role": "user", "content": "x", "images": ["%%"]}]},
                ),
                "messages[0].images[0] is not base64",
            ),
        ]
        for r, needle in cases:
            assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert generate(c, [b64(DARK)]).status_code == 200


def test_a_modelfile_names_the_projector_in_a_second_from() -> None:
    parsed = Modelfile.parse("FROM ./model.gguf\nFROM ./mmproj.gguf\nPARAMETER temperature 0\n")
    assert (parsed.source, parsed.projector) == ("./model.gguf", "./mmproj.gguf")
    with pytest.raises(BadRequest, match="two FROM lines at most"):
        Modelfile.parse("FROM a.gguf\nFROM b.gguf\nFROM c.gguf\n")


def test_the_cli_makes_a_vision_model_and_runs_it_on_an_image_file(
    host: Host, tiny_gguf: Path, projector: Path, tmp_path: Path
) -> None:
    from test_cli import ff

    modelfile = tmp_path / "Modelfile"
    settings = "".join(f"PARAMETER {k} {v}\n" for k, v in GREEDY.items())
    modelfile.write_text(f"FROM {tiny_gguf}\nFROM {projector}\n{settings}")
    out = ff(host, "create", "eyes", "-f", str(modelfile))
    assert out.returncode == 0, out.stderr
    shown = ff(host, "show", "eyes").stdout
    assert "vision" in shown and "Projector" in shown and "clip" in shown and "mlp" in shown
    image = tmp_path / "noise.png"
    image.write_bytes(NOISE)
    out = ff(host, "run", "eyes", f"what is this? {image}")
    assert out.returncode == 0 and f"Added image '{image}'" in out.stderr, out.stderr
    with host.client() as c:
        reply = generate(c, [b64(NOISE)]).json()["response"]
    assert out.stdout.strip() == reply.strip()  # the path became the image, out of the text


def test_requests_with_and_without_images_decode_side_by_side(vision: Host) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def ask(images: list[bytes]) -> str:
        with vision.client() as c:
            r = generate(
                c, [b64(x) for x in images], options={**GREEDY, "num_predict": 24, "num_parallel": 4}
            )
            assert r.status_code == 200, r.text
            return str(r.json()["response"])

    asks = [[DARK], [NOISE], [], [NOISE, DARK]]
    alone = [ask(x) for x in asks]
    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(ask, asks * 2))
    assert together == alone * 2


def test_a_vision_model_pulled_from_a_registry_sees_images_through_the_ollama_client(
    tmp_path: Path, tiny_gguf: Path, projector: Path
) -> None:
    with serve_registry() as registry:  # as llava is published: the GGUF, its projector, a template
        layers = [
            (MODEL, tiny_gguf.read_bytes()),
            (PROJECTOR, projector.read_bytes()),
            (TEMPLATE, GO_TEMPLATE.encode()),
        ]
        registry.add("library/llava-tiny:latest", layers, OLLAMA_CONFIG)
        for h in start_host(tmp_path / "store", registry=registry.url):
            client = ollama.Client(host=h.url)
            assert client.pull("llava-tiny").status == "success"
            assert "vision" in (client.show("llava-tiny").capabilities or [])
            image = tmp_path / "noise.png"
            image.write_bytes(NOISE)
            from_file = client.generate("llava-tiny", "what is this?", images=[image], options=GREEDY)
            from_bytes = client.generate("llava-tiny", "what is this?", images=[NOISE], options=GREEDY)
            plain = client.generate("llava-tiny", "what is this?", options=GREEDY)
            assert from_file.response == from_bytes.response
            assert (from_file.prompt_eval_count or 0) >= (plain.prompt_eval_count or 0) + 4
            chat = client.chat(
                "llava-tiny",
                messages=[{"role": "user", "content": "what is this?", "images": [image]}],
                options=GREEDY,
            )
            assert chat.message.content and (chat.prompt_eval_count or 0) >= 4


def test_the_next_turn_of_a_chat_does_not_encode_its_image_again(
    tmp_path: Path, tiny_gguf: Path, projector: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferrousforge_host.engines import llamacpp_vision

    encoded: list[int] = []
    evaluate = llamacpp_vision.Projector.evaluate

    def counted(
        self: llamacpp_vision.Projector, lctx: object, image: llamacpp_vision.ImageSpan, *rest: int
    ) -> None:
        encoded.append(image.id)
        evaluate(self, lctx, image, *rest)

    monkeypatch.setattr(llamacpp_vision.Projector, "evaluate", counted)
    for h in start_host(tmp_path / "store", runners=0):  # the engine in this process, to count its calls
        with h.client() as c:
            files = {"tiny.gguf": upload(c, tiny_gguf), "mmproj.gguf": upload(c, projector)}
            assert (
                c.post("/api/create", json={"model": "eyes", "files": files, "stream": False}).status_code
                == 200
            )

            def chat(messages: list[dict[str, object]]) -> dict[str, object]:
                body = {"model": "eyes", "messages": messages, "stream": False, "options": GREEDY}
                r = c.post("/api/chat", json=body)
                assert r.status_code == 200, r.text
                return dict(r.json()["message"])

            turn = [{"role": "user", "content": "what is this?", "images": [b64(NOISE)]}]
            first = chat(turn)
            assert len(encoded) == 1
            second = [*turn, first, {"role": "user", "content": "and its colour?"}]
            reply = chat(second)
            assert len(encoded) == 1  # the image came from the slot's cache
            other = [{"role": "user", "content": "what is this?", "images": [b64(DARK)]}, first, second[-1]]
            chat(other)
            assert len(encoded) == 2 and encoded[0] != encoded[1]  # another image is encoded
            c.post("/api/generate", json={"model": "eyes", "keep_alive": 0})  # unload: a cold cache
            assert chat(second) == reply  # the same answer without the cache
            assert len(encoded) == 3


def test_a_chat_is_fitted_to_its_window_counting_what_its_images_take(
    host: Host, tiny_gguf: Path, tmp_path: Path
) -> None:
    """An image's marker is a few tokens of text, its image many positions (16 here, 56×56 in 14×14
    patches): the chat is cut by the positions, not by the marker's text."""
    wide = write_projector(tmp_path / "wide.gguf", n_embd=64, image=56)
    with host.client() as c:
        files = {"tiny.gguf": upload(c, tiny_gguf), "wide.gguf": upload(c, wide)}
        assert (
            c.post("/api/create", json={"model": "wide", "files": files, "stream": False}).status_code == 200
        )
        first = {"role": "user", "content": "the river runs past the old mill", "images": [b64(DARK)] * 10}
        rest = [
            {"role": "assistant", "content": "a dark square"},
            {"role": "user", "content": "and this one?"},
        ]
        body = {"model": "wide", "stream": False, "options": {**GREEDY, "num_ctx": 256}}
        whole = c.post("/api/chat", json={**body, "messages": [first, *rest], "options": {**GREEDY}})
        assert whole.status_code == 200 and whole.json()["prompt_eval_count"] >= 256  # too long for 256
        cut = c.post("/api/chat", json={**body, "messages": [first, *rest]})
        assert cut.status_code == 200, cut.text
        assert cut.json()["prompt_eval_count"] < 100  # the first turn and its ten images went


def test_a_projector_for_another_model_fails_its_load_saying_why(
    host: Host, tiny_gguf: Path, tmp_path: Path
) -> None:
    narrow = write_projector(tmp_path / "narrow.gguf", n_embd=32)  # the tiny model is 64 wide
    with host.client() as c:
        files = {"tiny.gguf": upload(c, tiny_gguf), "narrow.gguf": upload(c, narrow)}
        assert (
            c.post("/api/create", json={"model": "askew", "files": files, "stream": False}).status_code == 200
        )
        body = {"model": "askew", "prompt": "hi", "images": [b64(DARK)], "stream": False}
        r = c.post("/api/generate", json=body)
        assert r.status_code == 500
        assert r.json()["error"] == (
            "cannot load the vision projector for this model: mismatch between text model (n_embd = 64) "
            "and mmproj (n_embd = 32); hint: you may be using wrong mmproj"
        )
        after = {"model": "tiny", "prompt": "hi", "stream": False, "options": GREEDY}
        assert c.post("/api/generate", json=after).status_code == 200  # the server serves on
