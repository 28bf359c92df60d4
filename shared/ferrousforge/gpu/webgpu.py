"""The page's backend: ``navigator.gpu`` through Pyodide's FFI, with ``web/gpu.mjs`` making the WebGPU
objects. A recording becomes one JS array at its first submit; replaying it is one call."""

from __future__ import annotations

from typing import Any

from pyodide.ffi import to_js

from ferrousforge.browser.bridge import helpers, jsobj
from ferrousforge.gpu.device import Binding, Buffer, Dispatch, GpuDevice, Recording


def _camel_to_snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class WebGpuDevice(GpuDevice):
    def __init__(self, state: Any) -> None:
        super().__init__()
        self.js = helpers().gpu
        self.state = state
        self.name = str(state.name)
        self.software = bool(state.software)
        self.features = frozenset(str(f) for f in state.device.features)
        self.limits = {_camel_to_snake(k): int(v) for k, v in self.js.limits(state).to_py().items()}

    @classmethod
    async def open(cls) -> WebGpuDevice:
        """The page's device (shared by the probe and every model)."""
        return cls(await helpers().gpu.open())

    def buffer(self, size: int) -> Buffer:
        size = max(4, (size + 3) // 4 * 4)
        return Buffer(size, self.js.buffer(self.state, size))

    def write(self, buffer: Buffer, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        view = memoryview(data).cast("B")
        if len(view) % 4:
            view = memoryview(bytes(view) + b"\0" * (-len(view) % 4))
        self.js.write(self.state, buffer.handle, offset, to_js(view))

    async def read(self, buffer: Buffer, size: int | None = None, offset: int = 0) -> bytes:
        size = buffer.size - offset if size is None else size
        data = await self.js.read(self.state, buffer.handle, offset, size)
        return bytes(data.to_bytes())

    def compile(self, name: str, source: str, entry: str, bindings: tuple[Binding, ...]) -> Any:
        return self.js.kernel(self.state, name, source, jsobj([[b.index, b.kind] for b in bindings]))

    def bind(self, dispatch: Dispatch) -> Any:
        buffers = to_js([b.handle for b in dispatch.buffers])
        return self.js.bind(
            self.state,
            dispatch.kernel.handle,
            to_js(memoryview(dispatch.params)),
            buffers,
            to_js(list(dispatch.groups)),
        )

    def submit(self, recording: Recording) -> None:
        if recording.handle is None:
            recording.handle = to_js([d.handle for d in recording.dispatches])
        self.js.submit(self.state, recording.handle)
