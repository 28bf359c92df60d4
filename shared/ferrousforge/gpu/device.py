"""The GPU compute layer's one interface: buffers, kernels and recorded dispatch lists.

A backend (``native.py``: wgpu-py on the host; ``webgpu.py``: ``navigator.gpu`` in the page) supplies
the few primitives below; everything else (kernel sources, shapes, models) is shared Python. Work is
recorded once as a ``Recording`` (kernel, buffers, workgroup counts, small parameters) and submitted
as one command buffer, as often as needed: a forward pass is not re-encoded call by call. Reading a
buffer back is the only async step, since a browser has no blocking wait.
"""

from __future__ import annotations

import re
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ferrousforge.gpu.wgsl import preprocess

# a kernel's bindings as its WGSL declares them: uniform parameters and storage arrays
_BINDING = re.compile(r"@binding\((\d+)\)\s*var<(uniform|storage)(?:,\s*(read|read_write))?>")


@dataclass(frozen=True)
class Binding:
    index: int
    kind: str  # "uniform" | "read" | "read_write"


@dataclass
class Buffer:
    size: int  # bytes
    handle: Any


@dataclass
class Kernel:
    name: str
    bindings: tuple[Binding, ...]
    workgroup: tuple[int, int, int]
    handle: Any  # the backend's pipeline and layout


@dataclass
class Dispatch:
    kernel: Kernel
    buffers: tuple[Buffer, ...]  # in binding order, after the parameters
    groups: tuple[int, int, int]
    params: bytes
    handle: Any = None  # the backend's bind group, made once when recorded


@dataclass
class Recording:
    """A list of dispatches, recorded once and submitted as often as needed."""

    device: GpuDevice
    dispatches: list[Dispatch] = field(default_factory=list)
    handle: Any = None  # a backend's own form of the list (the page's: one JS array), made at first submit

    def dispatch(
        self,
        kernel: Kernel,
        buffers: list[Buffer],
        groups: tuple[int, ...],
        params: tuple[int | float, ...] = (),
    ) -> None:
        storage = [b for b in kernel.bindings if b.kind != "uniform"]
        if len(buffers) != len(storage):
            raise ValueError(f"kernel {kernel.name} takes {len(storage)} buffers, not {len(buffers)}")
        limit = self.device.limits.get("max_compute_workgroups_per_dimension", 65535)
        grid = (*groups, 1, 1)[:3]
        if any(g < 1 or g > limit for g in grid):
            raise ValueError(f"kernel {kernel.name}: workgroup grid {grid} outside 1..{limit}")
        d = Dispatch(kernel, tuple(buffers), grid, pack_params(params))  # type: ignore[arg-type]
        d.handle = self.device.bind(d)
        self.dispatches.append(d)
        self.handle = None


def pack_params(params: tuple[int | float, ...]) -> bytes:
    """Uniform parameters as 32-bit words (u32 for ints, f32 for floats), padded to 16 bytes."""
    words = b"".join(struct.pack("<f" if isinstance(p, float) else "<I", p) for p in params) or b"\0" * 4
    return words + b"\0" * (-len(words) % 16)


def kernel_source(name: str) -> str:
    return (resources.files("ferrousforge.gpu") / "kernels" / f"{name}.wgsl").read_text()


class GpuDevice(ABC):
    """One adapter's device. ``software`` marks CPU adapters (lavapipe, SwiftShader): correct, slow."""

    name: str = ""
    software: bool = False
    features: frozenset[str] = frozenset()
    limits: dict[str, int]

    def __init__(self) -> None:
        self._kernels: dict[tuple[str, tuple[tuple[str, Any], ...]], Kernel] = {}
        self.tuned: dict[str, Any] = {}  # kernel name → the variant measured fastest here (tune.py)

    # -- backend primitives -------------------------------------------------------------
    @abstractmethod
    def buffer(self, size: int) -> Buffer:
        """A storage buffer of ``size`` bytes (rounded up to 4), zeroed; copyable both ways."""

    @abstractmethod
    def write(self, buffer: Buffer, data: bytes | bytearray | memoryview, offset: int = 0) -> None: ...

    def release(self, buffer: Buffer) -> None:
        """Free a buffer's memory now rather than when it is collected (work already submitted that
        uses it still completes): wgpu-py's and WebGPU's ``destroy``."""
        buffer.handle.destroy()

    @abstractmethod
    async def read(self, buffer: Buffer, size: int | None = None, offset: int = 0) -> bytes: ...

    @abstractmethod
    def compile(self, name: str, source: str, entry: str, bindings: tuple[Binding, ...]) -> Any: ...

    @abstractmethod
    def bind(self, dispatch: Dispatch) -> Any:
        """The backend's bind group for a recorded dispatch (its parameters in a uniform buffer)."""

    @abstractmethod
    def submit(self, recording: Recording) -> None:
        """Encode every dispatch of the recording in one compute pass and submit it."""

    # -- shared ---------------------------------------------------------------------------
    @property
    def f16(self) -> bool:
        return "shader-f16" in self.features

    def kernel(self, name: str, **defines: Any) -> Kernel:
        """A kernel from ``kernels/<name>.wgsl`` (entry point ``main``), preprocessed with ``defines``;
        compiled once."""
        key = (name, tuple(sorted(defines.items())))
        found = self._kernels.get(key)
        if found is None:
            source = preprocess(
                kernel_source(name),
                {**defines, "F16": self.f16 and defines.get("F16", False)},
                include=kernel_source,
            )
            found_bindings = (
                Binding(int(i), "uniform" if kind == "uniform" else access or "read")
                for i, kind, access in _BINDING.findall(source)
            )
            bindings = tuple(sorted(found_bindings, key=lambda b: b.index))  # as a dispatch's buffers come
            size = re.search(r"@workgroup_size\(([^)]*)\)", source)
            dims = tuple(int(x) for x in size.group(1).split(",")) if size else (1,)
            workgroup = (*dims, 1, 1)[:3]
            handle = self.compile(name, source, "main", bindings)
            found = self._kernels[key] = Kernel(name, bindings, workgroup, handle)  # type: ignore[arg-type]
        return found

    def record(self) -> Recording:
        return Recording(self)

    def upload(self, data: bytes | bytearray | memoryview) -> Buffer:
        buffer = self.buffer(len(data))
        if len(data):
            self.write(buffer, data)
        return buffer
