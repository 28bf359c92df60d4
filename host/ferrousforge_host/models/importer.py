"""Turn a verified GGUF blob into a model: config from its metadata, template, system and parameters."""

from __future__ import annotations

import json
from typing import Any

from ferrousforge.chat_format import FAMILY_STOPS, check_template, family_template
from ferrousforge.errors import BadRequest
from ferrousforge.gguf import GGUFError, read_file_metadata, read_file_tensors, summarize
from ferrousforge.manifest import (
    ADAPTER,
    CONFIG_MEDIA_TYPE,
    MESSAGES,
    MODEL,
    PARAMS,
    PROJECTOR,
    SYSTEM,
    TEMPLATE,
    Layer,
    Manifest,
)
from ferrousforge.names import ModelName
from ferrousforge.options import Options
from ferrousforge_host.models.gguf_tokenizer import with_tokenizer
from ferrousforge_host.store import BlobStore


def is_projector(store: BlobStore, digest: str) -> bool:
    """Whether a GGUF blob is a vision model's projector (an mmproj file: architecture "clip")."""
    try:
        meta = read_file_metadata(str(store.blob_path(digest)))
    except (GGUFError, OSError) as exc:
        raise BadRequest(f"not a usable GGUF file: {exc}") from exc
    return meta.get("general.architecture") == "clip"


def check_adapter(store: BlobStore, adapter: str, model: str, label: str = "") -> None:
    """Refuse (400) a blob that is not a LoRA adapter for this model: llama.cpp's own checks (type,
    architecture, each low-rank pair over a weight of the model, of its shape), made when the model is
    created rather than when it loads."""
    try:
        meta, tensors = read_file_tensors(str(store.blob_path(adapter)))
        base_meta, base = read_file_tensors(str(store.blob_path(model)))
    except (GGUFError, OSError) as exc:
        raise BadRequest(f"not a usable GGUF file: {exc}") from exc
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise BadRequest(
            f"{label or adapter} is not a LoRA adapter "
            "(a GGUF of general.type 'adapter', adapter.type 'lora')"
        )
    arch, base_arch = meta.get("general.architecture"), base_meta.get("general.architecture")
    if arch != base_arch:
        raise BadRequest(f"the LoRA adapter is for {arch} models; this model is {base_arch}")
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, info in tensors.items():
        weight, _, part = name.rpartition(".")
        if part in ("lora_a", "lora_b"):
            pairs.setdefault(weight, {})[part] = info.shape
        elif not name.endswith("_norm.weight"):
            raise BadRequest(f"the LoRA adapter's tensor {name} is neither a lora_a nor a lora_b")
    for weight, pair in pairs.items():
        if weight not in base:
            raise BadRequest(f"the LoRA adapter changes {weight}, which this model does not have")
        a, b = pair.get("lora_a"), pair.get("lora_b")
        if a is None or b is None:
            raise BadRequest(f"the LoRA adapter has only one of {weight}'s lora_a and lora_b")
        n_in, n_out = base[weight].shape[:2]
        if weight != "token_embd.weight" and (a[0] != n_in or b[1] != n_out or a[1] != b[0]):
            raise BadRequest(f"the LoRA adapter's {weight} pair does not fit the model's {n_in}x{n_out}")


def gguf_config(store: BlobStore, digest: str) -> dict[str, Any]:
    try:
        meta = read_file_metadata(
            str(store.blob_path(digest)), keep_arrays=frozenset({"tokenizer.ggml.tokens"}), parameters=True
        )
    except (GGUFError, OSError) as exc:
        raise BadRequest(f"not a usable GGUF model file: {exc}") from exc
    if meta.get("general.type") == "adapter":  # loads as nothing: say what it is for
        raise BadRequest("this GGUF is a LoRA adapter, not a model: use it as ADAPTER over its base model")
    return summarize(meta)


def adapter_layers(store: BlobStore, adapters: tuple[str, ...]) -> list[Layer]:
    return [Layer(ADAPTER, digest, store.blob_path(digest).stat().st_size) for digest in adapters]


def import_gguf(
    store: BlobStore,
    name: ModelName,
    digest: str,
    *,
    template: str | None = None,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
    family: str | None = None,
    source: str | None = None,
    projector: str | None = None,
    adapters: tuple[str, ...] = (),
) -> Manifest:
    """Write the manifest of ``name`` over a GGUF blob already in the store (and a vision model's
    projector blob, and LoRA adapter blobs)."""
    config = gguf_config(store, digest)
    if family and config["model_family"] in ("", "unknown"):
        config["model_family"] = family
    if source:
        config["source"] = source
    gguf_template = config.pop("chat_template", None)
    template = template or gguf_template or family_template(family or config["model_family"])
    params = dict(parameters or {})
    if not gguf_template and "stop" not in params and (stops := FAMILY_STOPS.get(config["model_family"])):
        params["stop"] = stops
    Options.parse(params)  # refuse parameters that no request could use
    if template:
        check_template(template)  # refuse a template that cannot render
    layers = [Layer(MODEL, digest, store.blob_path(digest).stat().st_size)]
    if projector:
        layers.append(Layer(PROJECTOR, projector, store.blob_path(projector).stat().st_size))
    layers += adapter_layers(store, adapters)
    for media_type, content in (
        (TEMPLATE, template),
        (SYSTEM, system),
        (PARAMS, json.dumps(params) if params else None),
        (MESSAGES, json.dumps(messages) if messages else None),
    ):
        if content:
            layer_digest, size = store.write_bytes(content.encode())
            layers.append(Layer(media_type, layer_digest, size))
    config_digest, config_size = store.write_bytes(json.dumps(config, sort_keys=True).encode())
    manifest = Manifest(Layer(CONFIG_MEDIA_TYPE, config_digest, config_size), tuple(layers))
    manifest = with_tokenizer(store, manifest, config["model_family"])
    store.put(name, manifest)
    return manifest
