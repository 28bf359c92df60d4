"""Reads an ONNX file's weights without onnx or numpy: a small protobuf walk that finds each
initializer's name, shape, type and where its raw bytes lie in the file, and the attributes of the
nodes. The host and the page read the same stored blob with it, and hand the GPU the same bytes
(the page by offset into its cached ArrayBuffer, with no copy through Python).

Only what FerrousForge's own converter writes is needed: tensors with ``raw_data``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

FLOAT, INT64 = 1, 7  # TensorProto.DataType


@dataclass
class Tensor:
    name: str
    dims: tuple[int, ...]
    data_type: int
    offset: int  # of raw_data in the file
    length: int


@dataclass
class Node:
    op_type: str
    attributes: dict[str, float | int | bytes] = field(default_factory=dict)


@dataclass
class OnnxWeights:
    tensors: dict[str, Tensor]
    nodes: list[Node]

    def int64s(self, data: bytes | memoryview, name: str) -> list[int]:
        t = self.tensors[name]
        return list(struct.unpack(f"<{t.length // 8}q", data[t.offset : t.offset + t.length]))


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value or (offset, length)) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, (pos, 8)
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            yield number, wire, (pos, length)
            pos += length
        elif wire == 5:
            yield number, wire, (pos, 4)
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _tensor(data: memoryview, start: int, end: int) -> Tensor:
    dims: list[int] = []
    name, data_type, offset, length = "", 0, 0, 0
    for number, wire, value in _fields(data, start, end):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:  # packed dims
            pos, stop = value[0], value[0] + value[1]
            while pos < stop:
                dim, pos = _varint(data, pos)
                dims.append(dim)
        elif number == 2:
            data_type = value
        elif number == 8:
            name = bytes(data[value[0] : value[0] + value[1]]).decode()
        elif number == 9:
            offset, length = value
    return Tensor(name, tuple(dims), data_type, offset, length)


def _node(data: memoryview, start: int, end: int) -> Node:
    node = Node("")
    for number, _, value in _fields(data, start, end):
        if number == 4:
            node.op_type = bytes(data[value[0] : value[0] + value[1]]).decode()
        elif number == 5:  # AttributeProto: name (1), f (2), i (3), s (4)
            name, attr = "", None
            for n, wire, v in _fields(data, value[0], value[0] + value[1]):
                if n == 1:
                    name = bytes(data[v[0] : v[0] + v[1]]).decode()
                elif n == 2 and wire == 5:
                    attr = struct.unpack("<f", data[v[0] : v[0] + 4])[0]
                elif n == 3 and wire == 0:
                    attr = v - (1 << 64) if v >= 1 << 63 else v  # int64, two's complement
            if attr is not None:
                node.attributes[name] = attr
    return node


def read(data: bytes | memoryview) -> OnnxWeights:
    """The initializers and nodes of a ModelProto (graph: field 7; in it node: 1, initializer: 5)."""
    view = memoryview(data).cast("B")
    tensors: dict[str, Tensor] = {}
    nodes: list[Node] = []
    for number, wire, value in _fields(view, 0, len(view)):
        if number != 7 or wire != 2:
            continue
        for n, w, (pos, length) in _fields(view, value[0], value[0] + value[1]):
            if n == 5 and w == 2:
                tensor = _tensor(view, pos, pos + length)
                tensors[tensor.name] = tensor
            elif n == 1 and w == 2:
                nodes.append(_node(view, pos, pos + length))
    return OnnxWeights(tensors, nodes)
