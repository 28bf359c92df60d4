"""ONNX models in the store: converted from a safetensors folder, or fetched from a hub repository
that ships ``onnx/`` files. A model is its ONNX graph and ``tokenizer.json`` as blobs, plus a config
saying what it is for (embed or rerank) and how to pool, from the repository's own files
(sentence-transformers ``modules.json`` and ``1_Pooling/config.json``)."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ferrousforge.errors import BadRequest
from ferrousforge.gguf import size_label
from ferrousforge.manifest import CONFIG_MEDIA_TYPE, ONNX_MODEL, TOKENIZER, Layer, Manifest
from ferrousforge.names import ModelName
from ferrousforge_host.store import BlobStore

META_FILES = ("config.json", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json")


def describe(read: Callable[[str], str | None]) -> dict[str, Any]:
    """What the repository's own files say: task, pooling, normalisation, lengths, sizes."""

    def load(name: str, default: Any) -> Any:
        text = read(name)
        try:
            return json.loads(text) if text else default
        except ValueError:
            raise BadRequest(f"{name} is not valid JSON") from None

    config = load("config.json", {})
    modules = load("modules.json", [])
    archs = config.get("architectures") or []
    task = "rerank" if any("SequenceClassification" in a for a in archs) else "embed"
    pool_dir = next(
        (m.get("path") for m in modules if str(m.get("type", "")).endswith("Pooling")), "1_Pooling"
    )
    pool = load(f"{pool_dir}/config.json", {})
    pooling = (
        "cls"
        if pool.get("pooling_mode_cls_token")
        else "max"
        if pool.get("pooling_mode_max_tokens")
        else "last"
        if pool.get("pooling_mode_lasttoken")
        else "mean"
    )
    st_config = load("sentence_bert_config.json", {})
    return {
        "task": task,
        "pooling": pooling,
        "normalize": any(str(m.get("type", "")).endswith("Normalize") for m in modules),
        "max_length": int(st_config.get("max_seq_length") or config.get("max_position_embeddings") or 512),
        "dimensions": config.get("hidden_size"),
        "labels": int(config.get("num_labels") or len(config.get("id2label") or {}) or 1),
        "model_family": config.get("model_type", "bert"),
    }


def import_onnx(
    store: BlobStore,
    name: ModelName,
    onnx_digest: str,
    tokenizer_digest: str,
    meta: dict[str, Any],
    source: str | None,
    file_type: str,
) -> Manifest:
    parameters = _check_onnx(store.blob_path(onnx_digest))
    _check_tokenizer(store.blob_path(tokenizer_digest))
    family = meta.get("model_family") or "bert"
    config = {
        **meta,
        "model_format": "onnx",
        "model_family": family,
        "model_families": [family],
        "model_type": size_label(parameters),
        "file_type": file_type,
        "model_info": {"general.architecture": family, "general.parameter_count": parameters},
    }
    if source:
        config["source"] = source
    config_digest, config_size = store.write_bytes(json.dumps(config, sort_keys=True).encode())
    layers = (
        Layer(ONNX_MODEL, onnx_digest, store.blob_path(onnx_digest).stat().st_size, "model.onnx"),
        Layer(
            TOKENIZER, tokenizer_digest, store.blob_path(tokenizer_digest).stat().st_size, "tokenizer.json"
        ),
    )
    manifest = Manifest(Layer(CONFIG_MEDIA_TYPE, config_digest, config_size), layers)
    store.put(name, manifest)
    return manifest


def _check_onnx(path: Path) -> int:
    """Refuses a file that is not an encoder's ONNX graph; its parameter count (initializers' values)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BadRequest(f"not a usable ONNX model: {exc}") from None
    names = {i.name for i in model.graph.input}
    if "input_ids" not in names:
        raise BadRequest(f"ONNX model has no 'input_ids' input (inputs: {', '.join(sorted(names))})")
    return sum(math.prod(t.dims) for t in model.graph.initializer)


def _check_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:
        raise BadRequest(f"not a usable tokenizer.json: {exc}") from None


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            yield block


def directory_plan(model_dir: Path, quantize: bool = False, family: str | None = None) -> Any:
    """Convert a local Hugging Face / sentence-transformers folder (safetensors) to ONNX."""
    from ferrousforge_host.models import bert_onnx
    from ferrousforge_host.models.pull import PullPlan

    for needed in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (model_dir / needed).is_file():
            raise BadRequest(f"the model folder has no {needed}")

    def read(rel: str) -> str | None:
        path = model_dir / rel
        return path.read_text() if path.is_file() else None

    def finish(store: BlobStore, name: ModelName, digests: list[str], source: str | None) -> object:
        meta = describe(read)
        if family:
            meta["model_family"] = family
        try:
            graph = bert_onnx.convert_directory(
                model_dir, "classifier" if meta["task"] == "rerank" else "encoder"
            )
        except (bert_onnx.UnsupportedModel, KeyError) as exc:
            raise BadRequest(f"cannot convert {model_dir} to ONNX: {exc}") from None
        with tempfile.TemporaryDirectory(dir=store.partial) as tmp:
            import onnx

            fp32 = Path(tmp) / "model.onnx"
            onnx.save(graph, str(fp32))
            out = fp32
            if quantize:
                out = Path(tmp) / "model.int8.onnx"
                bert_onnx.quantize_int8(fp32, out)
            onnx_digest, _ = store.write_blob(_chunks(out))
        tok_digest, _ = store.write_blob(_chunks(model_dir / "tokenizer.json"))
        return import_onnx(store, name, onnx_digest, tok_digest, meta, source, "INT8" if quantize else "F32")

    return PullPlan(
        [], finish, finish_status="converting to ONNX" + (" (int8, per-channel)" if quantize else "")
    )


def hub_plan(repo: str, files: list[str], want: str, hub_file: Callable[[str], Any]) -> Any:
    """A hub repository that ships ONNX: the graph (``:tag`` picks a variant), tokenizer and metadata."""
    from ferrousforge_host.models.pull import PullPlan

    graphs = sorted((f for f in files if f.endswith(".onnx")), key=len)
    tag = "" if want in ("", "latest") else want.lower()
    chosen = (
        next((f for f in graphs if f in ("onnx/model.onnx", "model.onnx")), graphs[0])
        if not tag
        else next((f for f in graphs if tag in Path(f).name.lower()), None)
    )
    if chosen is None:
        raise BadRequest(f"repository '{repo}' has no ONNX file for '{want}': {', '.join(graphs)}")
    if "tokenizer.json" not in files:
        raise BadRequest(f"repository '{repo}' has no tokenizer.json")
    metas = [f for f in META_FILES if f in files]
    remote = [hub_file(chosen), hub_file("tokenizer.json"), *(hub_file(f) for f in metas)]
    quantized = any(q in Path(chosen).name.lower() for q in ("int8", "uint8", "quant"))

    def finish(store: BlobStore, name: ModelName, digests: list[str], source: str | None) -> object:
        texts = {f: store.read_bytes(d).decode() for f, d in zip(metas, digests[2:], strict=True)}
        manifest = import_onnx(
            store, name, digests[0], digests[1], describe(texts.get), source, "INT8" if quantized else "F32"
        )
        store.discard(digests[2:])  # the metadata files were read; only the graph and tokenizer stay
        return manifest

    return PullPlan(remote, finish)
