"""Kernel variants measured on the device that runs them, as GPU libraries tune their products: the
fastest tiling of a matrix product differs between an NVIDIA card, an Apple GPU and an integrated
one, and no table written here can know them all. A choice is made once per device and kept in
``device.tuned``; every variant gives the same bits, so the choice changes speed only.
"""

from __future__ import annotations

import math
import time

from ferrousforge.gpu import ops
from ferrousforge.gpu.device import Dispatch, GpuDevice, Recording

REPEATS = 8  # dispatches a timed submit, so a submit's and a readback's latency weigh little


async def seconds(
    device: GpuDevice, dispatches: list[Dispatch], repeats: int = REPEATS, runs: int = 3
) -> float:
    """Best wall-clock seconds of ``dispatches``, ``repeats`` times in one submit, over ``runs``
    submits after an untimed one (which compiles and encodes); per repeat. The benchmarks' GPU timer
    too (``bench/gpu_decode.py``, ``bench/browser_gpu_kernels.mjs``)."""
    repeated = Recording(device, dispatches * repeats)
    probe = dispatches[-1].buffers[-1]
    best = math.inf
    for i in range(runs + 1):
        t0 = time.perf_counter()
        device.submit(repeated)
        await device.read(probe, 4)
        if i:
            best = min(best, time.perf_counter() - t0)
    return best / repeats


async def tune_matmul(
    device: GpuDevice, shapes: list[tuple[int, int, int]], half: bool = False
) -> ops.MatmulTile:
    """The tiling of ``ops.MATMUL_TILES`` that runs ``shapes`` ((m, n, k), weights [k, n] as the
    encoder keeps them; f16 with ``half``) in the least time on this device, kept as
    ``device.tuned["matmul"]``; and each shape's own fastest, by (n, k), as
    ``device.tuned["matmul_shapes"]`` (a product of 384 columns fills a large GPU with small tiles,
    one of 1536 with large ones). Software adapters keep the default without measuring."""
    if device.software:
        device.tuned["matmul"] = ops.MATMUL_TILES[0]
        return ops.MATMUL_TILES[0]
    totals = dict.fromkeys(ops.MATMUL_TILES, 0.0)
    per_shape: dict[tuple[int, int], ops.MatmulTile] = {}
    for m, n, k in shapes:
        a, w = device.buffer(4 * m * k), device.buffer((2 if half else 4) * k * n)
        bias, c = device.buffer(4 * n), device.buffer(4 * m * n)
        times = {}
        for tile in ops.MATMUL_TILES:
            rec = device.record()
            ops.matmul(rec, a, w, bias, c, m, n, k, w_kn=True, half=half, tile=tile)
            times[tile] = await seconds(device, rec.dispatches)
            totals[tile] += times[tile]
        per_shape[(n, k)] = min(times, key=times.__getitem__)
        for buffer in (a, w, bias, c):
            device.release(buffer)
    best = min(totals, key=totals.__getitem__)
    device.tuned["matmul"] = best
    device.tuned["matmul_shapes"] = per_shape
    device.tuned["matmul_seconds"] = {tile_name(t): s for t, s in totals.items()}
    return best


def tile_name(tile: ops.MatmulTile) -> str:
    return f"{tile.bm}x{tile.bn}/{tile.tm}x{tile.tn}/{tile.bk}" + ("/prefetch" if tile.prefetch else "")
