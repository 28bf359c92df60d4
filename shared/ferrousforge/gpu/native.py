"""The host's backend: wgpu-py (wgpu-native: Vulkan, Metal, DX12). Imported only natively."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferrousforge.gpu.device import Binding, Buffer, Dispatch, GpuDevice, Recording

SOFTWARE = ("llvmpipe", "lavapipe", "swiftshader", "software", "basic render")

# wgpu-native's run-time checks on a shader (WGPUShaderRuntimeChecks): its default adds both. Loop
# bounding puts a 64-bit counter and an exit in every loop, against infinite loops, and it keeps a
# driver from unrolling a loop of constant length (a kernel's per-thread arrays then go to memory).
# The kernels here end every loop, so theirs keep the bounds checks alone.
BOUNDS_CHECKS = 1
LOOP_BOUNDING = 2
# the adapter's clock, asked for where it has one (benchmarks read it: ``gpu_clock``)
TIMESTAMPS = ("timestamp-query", "timestamp-query-inside-passes")
MAX_QUERIES = 4096  # timestamps a query set holds (WebGPU's limit)


def _raw_pass_calls() -> Any:
    """wgpu-native's own pass-encoding functions, called without wgpu-py's per-call error capture (half
    of a dispatch's encoding cost in Python): a recorded pass was validated when first encoded, and
    an encoding error still surfaces at ``finish()``. None where this wgpu-py lays them out otherwise."""
    try:
        from wgpu.backends.wgpu_native._ffi import ffi, lib

        return (
            lib.wgpuComputePassEncoderSetPipeline,
            lib.wgpuComputePassEncoderSetBindGroup,
            lib.wgpuComputePassEncoderDispatchWorkgroups,
            ffi.NULL,
        )
    except (ImportError, AttributeError):
        return None


def _trusted_modules() -> Any:
    """wgpu-native's ``wgpuDeviceCreateShaderModuleTrusted`` (a WGSL module with the run-time checks
    asked for) as ``make(device, code, label, checks)``; None where this wgpu-py lacks it."""
    try:
        from wgpu.backends.wgpu_native import _api

        create = _api.libf.wgpuDeviceCreateShaderModuleTrusted
    except (ImportError, AttributeError):
        return None

    def make(device: Any, code: str, label: str, checks: int) -> Any:
        source = _api.new_struct_p("WGPUShaderSourceWGSL *", code=_api.to_c_string_view(code))
        source[0].chain.next = _api.ffi.NULL
        source[0].chain.sType = _api.lib.WGPUSType_ShaderSourceWGSL
        descriptor = _api.new_struct_p(
            "WGPUShaderModuleDescriptor *",
            nextInChain=_api.ffi.cast("WGPUChainedStruct *", source),
            label=_api.to_c_string_view(label),
        )
        handle = create(device._internal, descriptor, checks)
        if handle == _api.ffi.NULL:
            raise RuntimeError(f"shader module {label} could not be created")
        return _api.GPUShaderModule(label, handle, device)

    return make


class NativeDevice(GpuDevice):
    """``loop_bounding``: compile the kernels with wgpu's default checks, loop bounding included (for
    comparison: ``bench/gpu_decode.py --loop-bounding``); else with bounds checks alone."""

    def __init__(self, power_preference: str = "high-performance", loop_bounding: bool = False) -> None:
        import wgpu

        super().__init__()
        self._wgpu = wgpu
        adapter = wgpu.gpu.request_adapter_sync(power_preference=power_preference)
        if adapter is None:
            raise RuntimeError("no GPU adapter (install a Vulkan, Metal or DX12 driver)")
        info = adapter.info
        self.name = f"{info.get('device', '')} ({info.get('backend_type', '')})".strip()
        self.software = info.get("adapter_type") == "CPU" or any(s in self.name.lower() for s in SOFTWARE)
        wanted = [f for f in ("shader-f16", "subgroup", *TIMESTAMPS) if f in adapter.features]
        limits = {k: adapter.limits[k] for k in ("max-storage-buffer-binding-size", "max-buffer-size")}
        self.device = adapter.request_device_sync(required_features=wanted, required_limits=limits)
        self.features = frozenset(self.device.features)
        self.limits = {k.replace("-", "_"): v for k, v in self.device.limits.items() if isinstance(v, int)}
        usage = wgpu.BufferUsage
        self._storage = usage.STORAGE | usage.COPY_SRC | usage.COPY_DST
        self._uniform = usage.UNIFORM | usage.COPY_DST
        self._raw = _raw_pass_calls()
        self._trusted = _trusted_modules()
        self.checks = BOUNDS_CHECKS | (LOOP_BOUNDING if loop_bounding or self._trusted is None else 0)

    def buffer(self, size: int) -> Buffer:
        size = max(4, (size + 3) // 4 * 4)
        return Buffer(size, self.device.create_buffer(size=size, usage=self._storage))

    def write(self, buffer: Buffer, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        data = bytes(data)
        if len(data) % 4:
            data += b"\0" * (-len(data) % 4)
        self.device.queue.write_buffer(buffer.handle, offset, data)

    async def read(self, buffer: Buffer, size: int | None = None, offset: int = 0) -> bytes:
        size = buffer.size - offset if size is None else size
        return bytes(self.device.queue.read_buffer(buffer.handle, offset, (size + 3) // 4 * 4))[:size]

    def compile(self, name: str, source: str, entry: str, bindings: tuple[Binding, ...]) -> Any:
        wgpu = self._wgpu
        kinds = {
            "uniform": {"type": wgpu.BufferBindingType.uniform},
            "read": {"type": wgpu.BufferBindingType.read_only_storage},
            "read_write": {"type": wgpu.BufferBindingType.storage},
        }
        layout = self.device.create_bind_group_layout(
            entries=[
                {"binding": b.index, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": kinds[b.kind]}
                for b in bindings
            ]
        )
        if self._trusted is None:
            module = self.device.create_shader_module(code=source, label=name)
        else:
            module = self._trusted(self.device, source, name, self.checks)
        pipeline = self.device.create_compute_pipeline(
            layout=self.device.create_pipeline_layout(bind_group_layouts=[layout]),
            compute={"module": module, "entry_point": entry},
            label=name,
        )
        return pipeline, layout

    def bind(self, dispatch: Dispatch) -> Any:
        pipeline, layout = dispatch.kernel.handle
        params = self.device.create_buffer_with_data(data=dispatch.params, usage=self._uniform)
        buffers = iter(dispatch.buffers)
        entries = []
        for b in dispatch.kernel.bindings:
            resource = params if b.kind == "uniform" else next(buffers).handle
            entries.append({"binding": b.index, "resource": {"buffer": resource}})
        return pipeline, self.device.create_bind_group(layout=layout, entries=entries)

    def submit(self, recording: Recording) -> None:
        """The first submit encodes through wgpu-py (which validates); a replayed recording's commands are
        encoded straight into wgpu-native, and the next replay's right after this one is submitted,
        while the GPU runs it: a decode step's submit then costs no encoding at all."""
        if recording.handle is None or self._raw is None:
            encoder = self.device.create_command_encoder()
            compute = encoder.begin_compute_pass()
            _dispatch_all(compute, recording.dispatches)
            compute.end()
            self.device.queue.submit([encoder.finish()])
            calls = [(d.handle[0]._internal, d.handle[1]._internal, *d.groups) for d in recording.dispatches]
            recording.handle = _Replay(calls)
            return
        replay: _Replay = recording.handle
        ready, replay.ready = replay.ready or self._encode(replay), None
        self.device.queue.submit([ready])
        replay.ready = self._encode(replay)

    async def gpu_clock(self, dispatches: list[Dispatch], each: bool = False) -> list[float]:
        """Seconds by the GPU's own clock (timestamp queries: the host's encoding and the submit are not
        in them) for one run of ``dispatches`` in one pass: [the whole pass], or with ``each`` every
        dispatch's, from the end of the one before it (or the pass's start) to its own end, so a
        barrier's wait counts to the dispatch that waited (a timestamp may also keep neighbouring
        dispatches from overlapping: the pass's own figure is the one to compare). Needs the adapter's
        "timestamp-query" (with ``each`` also "timestamp-query-inside-passes")."""
        wgpu = self._wgpu
        needed = TIMESTAMPS if each else TIMESTAMPS[:1]
        if not set(needed) <= self.features:
            raise RuntimeError(f"{self.name} has no {' and '.join(needed)}")
        marks = len(dispatches) + 1 if each else 2
        if marks > MAX_QUERIES:
            raise ValueError(f"{len(dispatches)} dispatches need more than {MAX_QUERIES} timestamps")
        from wgpu.backends.wgpu_native import _api, extras

        queries = self.device.create_query_set(type=wgpu.QueryType.timestamp, count=marks)
        resolved = self.device.create_buffer(
            size=8 * marks, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC
        )
        encoder = self.device.create_command_encoder()
        writes = {"query_set": queries, "beginning_of_pass_write_index": 0}
        if not each:
            writes["end_of_pass_write_index"] = 1
        compute = encoder.begin_compute_pass(timestamp_writes=writes)
        mark = (lambda i: extras.write_timestamp(compute, queries, i + 1)) if each else None
        _dispatch_all(compute, dispatches, mark)
        compute.end()
        encoder.resolve_query_set(queries, 0, marks, resolved, 0)
        self.device.queue.submit([encoder.finish()])
        ticks = struct.unpack(f"<{marks}Q", self.device.queue.read_buffer(resolved))
        period = _api.libf.wgpuQueueGetTimestampPeriod(self.device.queue._internal)  # ns a tick
        resolved.destroy()
        queries.destroy()
        return [(b - a) * period * 1e-9 for a, b in itertools.pairwise(ticks)]

    def _encode(self, replay: _Replay) -> Any:
        set_pipeline, set_group, dispatch, null = self._raw
        encoder = self.device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        native = compute._internal
        for pipeline, group, x, y, z in replay.calls:
            set_pipeline(native, pipeline)
            set_group(native, 0, group, 0, null)
            dispatch(native, x, y, z)
        compute.end()
        return encoder.finish()


def _dispatch_all(
    compute: Any, dispatches: list[Dispatch], after: Callable[[int], None] | None = None
) -> None:
    """Encode the dispatches into a wgpu-py compute pass, calling ``after(i)`` past the i-th."""
    for i, d in enumerate(dispatches):
        pipeline, group = d.handle
        compute.set_pipeline(pipeline)
        compute.set_bind_group(0, group)
        compute.dispatch_workgroups(*d.groups)
        if after is not None:
            after(i)


@dataclass
class _Replay:
    """A recording as wgpu-native handles, and its next command buffer, encoded ahead."""

    calls: list[tuple[Any, ...]]
    ready: Any = None
