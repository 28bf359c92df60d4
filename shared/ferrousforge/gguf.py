"""A small, strict reader of GGUF metadata (the key/value header), in pure Python.

It reads only the header, so it is cheap on multi-gigabyte files and works under Pyodide on a
fetched prefix. Malformed input raises ``GGUFError``; lengths are checked against the bytes left.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

MAGIC = b"GGUF"
MAX_KEYS = 1 << 16
MAX_STRING = 1 << 24

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
STRING, ARRAY = 8, 9

FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",  # (llama.cpp's MXFP4_MOE: gpt-oss's experts)
}


class GGUFError(ValueError):
    pass


class _Reader:
    """Reads values from a buffer (bytes or an mmap) at a moving offset, checking every length."""

    def __init__(self, buf: bytes | mmap.mmap | memoryview, limit: int) -> None:
        self.buf = buf
        self.pos = 0
        self.end = min(limit, len(buf))

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise GGUFError("truncated or corrupt GGUF header")
        start = self.pos
        self.pos += n
        return bytes(self.buf[start : self.pos])

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > self.end:
            raise GGUFError("truncated GGUF header")
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > MAX_STRING:
            raise GGUFError("GGUF string too long")
        return self.take(n).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, end = self.buf, self.pos, self.end
        for _ in range(count):
            if pos + 8 > end:
                raise GGUFError("truncated GGUF header")
            n = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8 + n
            if n > MAX_STRING or pos > end:
                raise GGUFError("truncated or corrupt GGUF string array")
        self.pos = pos

    def value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            if item_kind == ARRAY or (item_kind not in _SCALARS and item_kind != STRING):
                raise GGUFError(f"unsupported GGUF array item type {item_kind}")
            if count > self.end - self.pos:
                raise GGUFError("GGUF array longer than the file")
            keep = keep or count <= 64
            if item_kind != STRING:
                fmt = _SCALARS[item_kind]
                raw = self.take(struct.calcsize(fmt) * count)
                return list(struct.unpack(f"<{count}{fmt[1]}", raw)) if keep else _Summary(count)
            if not keep:
                self.skip_strings(count)
                return _Summary(count)
            return [self.string() for _ in range(count)]
        raise GGUFError(f"unknown GGUF value type {kind}")


class _Every(frozenset[str]):
    """``keep_arrays`` that keeps every array."""

    def __contains__(self, key: object) -> bool:
        return True


EVERY_ARRAY: frozenset[str] = _Every()


def describe(path: str, verbose: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ollama's ``model_info`` and ``tensors`` of a GGUF for /api/show: long arrays are null unless
    ``verbose``, which also lists the tensors (name, type, shape in ggml order); with
    ``general.parameter_count`` counted from the tensors where the file does not say it."""
    with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as view:
        size = len(view)
        if not verbose:
            meta, reader = _header(view, size)
            _count_parameters(meta, reader, size)
            tensors: list[dict[str, Any]] = []
        else:
            meta, found = parse_tensors(view, size, EVERY_ARRAY)
            tensors = [{"name": t.name, "type": t.kind, "shape": list(t.shape)} for t in found.values()]
            meta.setdefault("general.parameter_count", sum(math.prod(t.shape) for t in found.values()))
    info = {
        k: None if isinstance(v, _Summary) else v
        for k, v in meta.items()
        if not k.startswith("gguf.") and k != "tokenizer.chat_template"
    }
    return info, tensors


class _Summary(int):
    """The length of an array that was read past but not kept."""


def read_metadata(stream: BinaryIO, size: int, keep_arrays: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Read a GGUF header from a stream (or the bytes fetched so far); see ``parse_metadata``."""
    return parse_metadata(stream.read(size), size, keep_arrays)


def parse_metadata(
    buf: bytes | mmap.mmap | memoryview, size: int, keep_arrays: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Parse a GGUF header; arrays are kept only when short or named in ``keep_arrays``."""
    return _header(buf, size, keep_arrays)[0]


def _header(
    buf: bytes | mmap.mmap | memoryview, size: int, keep_arrays: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], _Reader]:
    reader = _Reader(buf, size)
    if reader.take(4) != MAGIC:
        raise GGUFError("not a GGUF file (bad magic)")
    version = reader.unpack("<I")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    tensors, count = reader.unpack("<Q"), reader.unpack("<Q")
    if count > MAX_KEYS:
        raise GGUFError("too many GGUF metadata keys")
    meta: dict[str, Any] = {"gguf.version": version, "gguf.tensor_count": tensors}
    for _ in range(count):
        key = reader.string()
        meta[key] = reader.value(reader.unpack("<I"), keep=key in keep_arrays)
    return meta, reader


# ggml tensor types: id → (name, values per block, bytes per block); every type a GGUF file may hold
# (what runs them is the engines' business: the GPU layer dequantizes some, llama.cpp all)
TENSOR_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    kind: str  # "F32", "Q4_K", ...
    offset: int  # from the start of the file
    nbytes: int


def parse_tensors(
    buf: bytes | mmap.mmap | memoryview, size: int, keep_arrays: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    """The header and the tensor directory (names, shapes, types, where each tensor's bytes lie)."""
    meta, reader = _header(buf, size, keep_arrays)
    alignment = int(meta.get("general.alignment", 32))
    infos = []
    for _ in range(int(meta["gguf.tensor_count"])):
        name = reader.string()
        dims = tuple(reader.unpack("<Q") for _ in range(reader.unpack("<I")))
        kind, offset = reader.unpack("<I"), reader.unpack("<Q")
        if kind not in TENSOR_TYPES:
            raise GGUFError(f"tensor {name} has a type ({kind}) this reader does not know")
        infos.append((name, dims, kind, offset))
    data = (reader.pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, dims, kind, offset in infos:
        type_name, per, block = TENSOR_TYPES[kind]
        count = 1
        for d in dims:
            count *= d
        nbytes = count // per * block
        if data + offset + nbytes > size:
            raise GGUFError(f"tensor {name} runs past the end of the file")
        tensors[name] = TensorInfo(name, dims, type_name, data + offset, nbytes)
    return meta, tensors


def _count_parameters(meta: dict[str, Any], reader: _Reader, size: int) -> None:
    """Ollama's ``general.parameter_count`` where the file does not say it: the values in all its
    tensors, from the tensor directory that follows the header ``reader`` has just read. A tensor of a
    known type whose bytes would run past the end of the file (a file cut short) is an error; unknown
    types are let be."""
    total, ends = 0, []
    for _ in range(int(meta["gguf.tensor_count"])):
        name = reader.string()
        count = 1
        for _ in range(reader.unpack("<I")):
            count *= reader.unpack("<Q")
        kind, offset = reader.unpack("<I"), reader.unpack("<Q")
        total += count
        if kind in TENSOR_TYPES:
            _, per, block = TENSOR_TYPES[kind]
            ends.append((offset + count // per * block, name))
    alignment = int(meta.get("general.alignment", 32))
    data = (reader.pos + alignment - 1) // alignment * alignment
    end, name = max(ends, default=(0, ""))
    if data + end > size:
        raise GGUFError(
            f"the file is cut short: tensor {name} runs past its end "
            f"({data + end} bytes needed, {size} there)"
        )
    meta.setdefault("general.parameter_count", total)


def size_label(parameters: int) -> str:
    """A parameter count as Ollama writes ``parameter_size``: 134.52M, 268.10M, 7B, 1.2B, 512K."""
    if parameters >= 10**9:
        value = parameters / 10**9
        return f"{value:.0f}B" if value == int(value) else f"{value:.1f}B"
    if parameters >= 10**6:
        value = parameters / 10**6
        return f"{value:.0f}M" if value == int(value) else f"{value:.2f}M"
    if parameters >= 10**3:
        return f"{parameters / 10**3:.0f}K"
    return str(parameters)


def read_file_tensors(path: str) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    """A GGUF file's header (arrays summarised) and tensor directory."""
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size == 0:
            raise GGUFError("empty file")
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return parse_tensors(view, size)


def read_file_metadata(
    path: str, keep_arrays: frozenset[str] = frozenset(), parameters: bool = False
) -> dict[str, Any]:
    """A GGUF file's header (see ``parse_metadata``); with ``parameters``, its
    ``general.parameter_count`` counted from the tensors where the file does not say it, and the
    tensor directory checked against the file's length."""
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size == 0:
            raise GGUFError("empty file")
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as view:
            meta, reader = _header(view, size, keep_arrays)
            if parameters:
                _count_parameters(meta, reader, size)
            return meta


def adds_bos(config: dict[str, Any]) -> bool:
    """Whether a model's tokenizer puts BOS before a prompt itself, so that a template's leading BOS
    must go: the GGUF's ``tokenizer.ggml.add_bos_token`` where it says (SmolLM2's: no), else yes."""
    info = config.get("model_info")
    return not isinstance(info, dict) or info.get("tokenizer.ggml.add_bos_token") is not False


def special_tokens(config: dict[str, Any]) -> dict[str, Any]:
    """``render``'s BOS and EOS texts and whether a leading BOS goes, from a model's config: the host's
    (the rule from ``model_info``), or the copy of these three the host gives a page."""
    strip = config.get("strip_bos")
    return {
        "bos_token": str(config.get("bos_token", "")),
        "eos_token": str(config.get("eos_token", "")),
        "strip_bos": adds_bos(config) if strip is None else bool(strip),
    }


def summarize(meta: dict[str, Any]) -> dict[str, Any]:
    """What a model store keeps about a GGUF: family, type, context, template and special tokens."""
    arch = str(meta.get("general.architecture", "unknown"))
    tokens = meta.get("tokenizer.ggml.tokens")

    def token_text(key: str) -> str:
        idx = meta.get(key)
        if isinstance(tokens, list) and isinstance(idx, int) and 0 <= idx < len(tokens):
            return str(tokens[idx])
        return ""

    file_type = meta.get("general.file_type")
    info = {
        k: (int(v) if isinstance(v, _Summary) else v)
        for k, v in meta.items()
        if not (isinstance(v, list) and len(v) > 64) and k != "tokenizer.chat_template"
    }
    return {
        "model_format": "gguf",
        "model_family": arch,
        "model_families": [arch],
        # Ollama's parameter_size: the count when known, else the file's own label
        "model_type": size_label(count)
        if (count := int(meta.get("general.parameter_count") or 0))
        else str(meta.get("general.size_label", "")),
        "file_type": FILE_TYPES.get(file_type, str(file_type)) if isinstance(file_type, int) else "",
        "context_length": meta.get(f"{arch}.context_length"),
        "chat_template": meta.get("tokenizer.chat_template"),
        "bos_token": token_text("tokenizer.ggml.bos_token_id"),
        "eos_token": token_text("tokenizer.ggml.eos_token_id"),
        "model_info": info,
    }
