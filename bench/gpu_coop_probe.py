"""Issues H and H2: can the compute layer reach the GPU's matrix units (tensor cores) through wgpu?

    .venv/bin/python bench/gpu_coop_probe.py [--gemm 4096x1536x384]

wgpu-native offers them as the experimental ``cooperative-matrix`` feature (WGSL's ``enable
wgpu_cooperative_matrix``: ``coop_mat8x8`` / ``coop_mat16x16`` values that one subgroup loads, multiplies
and stores together). Its header speaks of 8 × 8 f32 matrices, while NVIDIA's Vulkan driver lists
16 × 16 f16 ones with f32 sums, and a configuration the driver does not list is undefined (zeros have
been seen). So this probe, for the GPU machine, does not trust the feature's presence: it multiplies
known matrices in each form and compares with numpy, printing the error or why a form failed.
``--gemm``: where the 16 × 16 f16 form is right, a plain product (f16 inputs, f32 sums, one subgroup
a 16 × 16 tile of C, straight from storage) of that shape, in TFLOP/s: whether the matrix units are
worth a kernel of their own. Off a GPU with the feature it says so and stops.

Found before any GPU ran it (2026-11-29): wgpu-py 0.32.0's wgpu-native refuses a device with the
feature ("experimental features are not enabled"), and its C API has no way to enable experimental
features (no descriptor field, no environment variable). Seen on Mesa 26.2's lavapipe, whose adapter
lists ``cooperative-matrix`` (Debian sid's ``mesa-vulkan-drivers`` in a chroot). So on any adapter
this probe ends at the device request until a wgpu-py release lets the feature through.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

FORMS = {
    # name: (WGSL, size, input dtype)
    "16×16 f16 → f32, from storage": (
        """
enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(32)
fn main() {
  let ma = coopLoadT<coop_mat16x16<f16, A>>(&a[0], 16u);
  let mb = coopLoadT<coop_mat16x16<f16, B>>(&b[0], 16u);
  var mc = coop_mat16x16<f32, C>();
  mc = coopMultiplyAdd(ma, mb, mc);
  coopStoreT(mc, &c[0], 16u);
}
""",
        16,
        np.float16,
    ),
    "16×16 f16 → f32, through workgroup memory": (
        """
enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
var<workgroup> sa: array<f16, 256>;
var<workgroup> sb: array<f16, 256>;
var<workgroup> sc: array<f32, 256>;
@compute @workgroup_size(32)
fn main(@builtin(local_invocation_index) t: u32) {
  for (var i = t; i < 256u; i += 32u) { sa[i] = a[i]; sb[i] = b[i]; }
  workgroupBarrier();
  let ma = coopLoadT<coop_mat16x16<f16, A>>(&sa[0], 16u);
  let mb = coopLoadT<coop_mat16x16<f16, B>>(&sb[0], 16u);
  var mc = coop_mat16x16<f32, C>();
  mc = coopMultiplyAdd(ma, mb, mc);
  coopStoreT(mc, &sc[0], 16u);
  workgroupBarrier();
  for (var i = t; i < 256u; i += 32u) { c[i] = sc[i]; }
}
""",
        16,
        np.float16,
    ),
    "8×8 f32 → f32, from storage": (
        """
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(32)
fn main() {
  let ma = coopLoadT<coop_mat8x8<f32, A>>(&a[0], 8u);
  let mb = coopLoadT<coop_mat8x8<f32, B>>(&b[0], 8u);
  var mc = coop_mat8x8<f32, C>();
  mc = coopMultiplyAdd(ma, mb, mc);
  coopStoreT(mc, &c[0], 8u);
}
""",
        8,
        np.float32,
    ),
}

# C[M, N] = A[M, K] · B[K, N], row-major, f16 inputs: a workgroup (one subgroup) a 16 × 16 tile of C
GEMM = """
enable f16;
enable wgpu_cooperative_matrix;
struct Params { M: u32, N: u32, K: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) g: vec3u) {
  let row = g.y * 16u;
  let col = g.x * 16u;
  var acc = coop_mat16x16<f32, C>();
  for (var k = 0u; k < p.K; k += 16u) {
    let ma = coopLoadT<coop_mat16x16<f16, A>>(&a[row * p.K + k], p.K);
    let mb = coopLoadT<coop_mat16x16<f16, B>>(&b[k * p.N + col], p.N);
    acc = coopMultiplyAdd(ma, mb, acc);
  }
  coopStoreT(acc, &c[row * p.N + col], p.N);
}
"""


def storage(device: Any, data: np.ndarray, wgpu: Any) -> Any:
    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
    return device.create_buffer_with_data(data=np.ascontiguousarray(data).tobytes(), usage=usage)


def prepare(device: Any, code: str, buffers: list[Any]) -> tuple[Any, Any]:
    """The kernel's pipeline and bind group (``layout="auto"``: bindings 0, 1, ... in order)."""
    module = device.create_shader_module(code=code)
    pipeline = device.create_compute_pipeline(
        layout="auto", compute={"module": module, "entry_point": "main"}
    )
    group = device.create_bind_group(
        layout=pipeline.get_bind_group_layout(0),
        entries=[{"binding": i, "resource": {"buffer": b}} for i, b in enumerate(buffers)],
    )
    return pipeline, group


def run(
    device: Any, kernel: tuple[Any, Any], out: Any, groups: tuple[int, int, int], times: int = 1
) -> float:
    """Seconds for ``times`` dispatches in one pass and a 4-byte readback of ``out``."""
    t0 = time.perf_counter()
    encoder = device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(kernel[0])
    compute.set_bind_group(0, kernel[1])
    for _ in range(times):
        compute.dispatch_workgroups(*groups)
    compute.end()
    device.queue.submit([encoder.finish()])
    device.queue.read_buffer(out, 0, 4)
    return time.perf_counter() - t0


def main() -> None:
    import wgpu

    parser = argparse.ArgumentParser()
    parser.add_argument("--gemm", default="4096x1536x384", metavar="MxNxK")
    args = parser.parse_args()
    adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    print(f"adapter: {adapter.info.get('device')} ({adapter.info.get('backend_type')})")
    if "cooperative-matrix" not in adapter.features:
        print("no cooperative-matrix feature on this adapter: nothing to probe")
        return
    wanted = [f for f in ("cooperative-matrix", "shader-f16") if f in adapter.features]
    try:
        device = adapter.request_device_sync(required_features=wanted)
    except Exception as error:  # (the probe's answer is the message)
        print(f"a device with {wanted} was refused: {str(error)[:600]}")
        return
    rng = np.random.default_rng(0)
    right = set()
    for name, (code, n, dtype) in FORMS.items():
        a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
        want = a.astype(np.float64) @ b.astype(np.float64)
        try:
            out = storage(device, np.full((n, n), 1234.0, np.float32), wgpu)
            buffers = [storage(device, a, wgpu), storage(device, b, wgpu), out]
            run(device, prepare(device, code, buffers), out, (1, 1, 1))
            got = np.frombuffer(device.queue.read_buffer(out), np.float32).reshape(n, n)
        except Exception as error:  # (the message says why the form failed)
            print(f"- {name}: failed: {' '.join(str(error).split())[:600]}")
            continue
        err = float(np.abs(got - want).max() / np.abs(want).max())
        verdict = "right" if err < 1e-2 else "unwritten" if np.all(got == 1234.0) else "wrong"
        print(f"- {name}: {verdict}, max error {err:.2e} of the largest value")
        if verdict == "right":
            right.add(n)
    if 16 not in right:
        return
    m, n, k = (int(v) for v in args.gemm.split("x"))
    if m % 16 or n % 16 or k % 16:
        raise SystemExit("--gemm takes multiples of 16")
    a, b = rng.standard_normal((m, k)).astype(np.float16), rng.standard_normal((k, n)).astype(np.float16)
    params = device.create_buffer_with_data(
        data=np.array([m, n, k, 0], np.uint32).tobytes(), usage=wgpu.BufferUsage.UNIFORM
    )
    out = storage(device, np.zeros((m, n), np.float32), wgpu)
    buffers = [params, storage(device, a, wgpu), storage(device, b, wgpu), out]
    groups = (n // 16, m // 16, 1)
    kernel = prepare(device, GEMM, buffers)
    run(device, kernel, out, groups)
    got = np.frombuffer(device.queue.read_buffer(out), np.float32).reshape(m, n)
    want = a.astype(np.float32) @ b.astype(np.float32)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    times = 20
    best = min(run(device, kernel, out, groups, times) for _ in range(3)) / times
    print(
        f"- a plain {m}×{k} · {k}×{n} product on the matrix units: {best * 1e6:.1f} µs, "
        f"{2 * m * n * k / best / 1e12:.2f} TFLOP/s, max error {err:.2e} of the largest value"
    )


if __name__ == "__main__":
    main()
