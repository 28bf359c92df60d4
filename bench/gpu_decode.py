"""Issue H2: the GPU decoder in process on one GGUF, and where a decode step's time goes: the host's
encoding and submitting of the recorded pass, then the wait for the GPU and the 8-byte readback.

    .venv/bin/python bench/gpu_decode.py MODEL.gguf [--steps 64] [--prompt 256] [--slots 1] [--chain 8]
        [--weights auto|q8|f16]
    .venv/bin/python bench/gpu_decode.py --bandwidth 65536x4096 [--weights q8|q4|f16]

``--bandwidth RxC``: the decoder's matrix-vector product (linear.wgsl, one row) on an RxC f16 matrix
(f32 without shader-f16), timed as the kernels below: the share of the memory bandwidth a decode
step's kernel gets. ``--weights``: how the decoder holds its matrices (``ferrousforge.gpu.decoder``:
"auto" 4 bits where the file's are, f16 else; "q8" 8 bits where not 4; "f16" f16 only); for the
product alone also "q4".

Greedy decode steps feed each token back; the step time does not depend on the weights' values, so a
GGUF whose tensor data is zeroed (``zero_gguf.py``: small enough to carry to a GPU machine) times the
same as the model. Prompt speed is one ``--prompt``-token pass (the power-of-two chunk a prompt
takes), after one untimed pass of that shape. With ``--slots N`` each step carries N sequences. On
lavapipe (a CPU) these figures show the path, not a speed to aim at.

``--chain N``: greedy decode as the engine runs it, N steps chained in one pass (each step's argmax the
next one's input on the GPU, one readback a pass): tokens a second without the host between steps.

``--loop-bounding``: the kernels compiled with wgpu's default run-time checks, a counter and an exit
in every loop (``ferrousforge.gpu.native``: the decoder's own kernels keep bounds checks alone).

Where the GPU's part of a step goes: the whole step replayed 20 times in one submit (once on lavapipe),
no readback between, by the wall clock; the same by the GPU's own clock (timestamp queries, where the
adapter has them: no host encoding in it), and each dispatch's share of it (a timestamp after each);
and each kernel's dispatches alone, wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ferrousforge.gguf import parse_tensors
from ferrousforge.gpu import ops, tune
from ferrousforge.gpu.decoder import Decoder
from ferrousforge.gpu.device import Dispatch, GpuDevice
from ferrousforge.gpu.native import TIMESTAMPS, NativeDevice


async def decode(
    decoder: Decoder, steps: int, slots: int
) -> tuple[list[float], list[float], list[float], Any]:
    """Per step, in ms: the host's part until the GPU has the step (writing its ids, submitting), the
    next step's commands encoded ahead while the GPU runs, and the wait for the GPU and the readback;
    and the last pass."""
    tokens = [1] * slots
    start, ahead, wait = [], [], []
    run, queue = None, decoder.device.device.queue  # type: ignore[attr-defined]
    submitted: list[float] = []  # when each submit returned (the readback submits a copy too)
    submit = queue.submit

    def timed_submit(buffers: Any) -> None:
        submit(buffers)
        submitted.append(time.perf_counter())

    queue.submit = timed_submit
    try:
        for position in range(steps):
            submitted.clear()
            t0 = time.perf_counter()
            run = decoder.submit([(token, position, slot) for slot, token in enumerate(tokens)])
            t1 = time.perf_counter()
            tokens = await decoder.read_best(run, slots)
            t2 = time.perf_counter()
            start.append((submitted[0] - t0) * 1e3)  # the step's own submit: the first
            ahead.append((t1 - submitted[0]) * 1e3)
            wait.append((t2 - t1) * 1e3)
    finally:
        queue.submit = submit
    return start, ahead, wait, run


async def chained(decoder: Decoder, steps: int, slots: int, chain: int) -> float:
    """ms a step of greedy decoding in passes of ``chain`` chained steps (after one untimed pass)."""
    tokens, position = [1] * slots, 0
    t0 = 0.0
    while position + chain <= steps:
        if position == chain:
            t0 = time.perf_counter()
        run = decoder.submit([(token, position, slot) for slot, token in enumerate(tokens)], chain=chain)
        tokens = [row[-1] for row in await decoder.read_chain(run, slots, chain)]
        position += chain
    return (time.perf_counter() - t0) / max(1, position - chain) * 1e3


async def prompt_pass(decoder: Decoder, n: int) -> float:
    """Seconds for one n-token prompt pass (the last row projected), after one untimed pass."""
    rows = [(1 + i % 100, i, 0) for i in range(n)]
    await decoder.read_best(decoder.submit(rows, "last"), 1)
    t0 = time.perf_counter()
    await decoder.read_best(decoder.submit(rows, "last"), 1)
    return time.perf_counter() - t0


def gpu_time(device: GpuDevice, dispatches: list[Dispatch]) -> float:
    """Seconds for one run of ``dispatches``, wall clock: best of three submits of 20 runs (on a
    software adapter one of one), the next submit's encoding overlapping the GPU as in decoding."""
    repeats, runs = (1, 1) if device.software else (20, 3)
    return asyncio.run(tune.seconds(device, dispatches, repeats, runs))


def clock(device: GpuDevice, dispatches: list[Dispatch], each: bool = False) -> list[float] | None:
    """The GPU's own clock on one run (``NativeDevice.gpu_clock``: no host in it), best of three
    after one untimed run; None where the adapter has no timestamps."""
    needed = set(TIMESTAMPS if each else TIMESTAMPS[:1])
    if not isinstance(device, NativeDevice) or not needed <= device.features:
        return None
    runs = [asyncio.run(device.gpu_clock(dispatches, each)) for _ in range(1 if device.software else 4)]
    return min(runs[1:] or runs, key=sum)


SLOWEST = 8  # dispatches listed by name


def by_kernel(device: GpuDevice, dispatches: list[Dispatch], what: str = "a decode step") -> None:
    """Time of a recorded pass, and of each kernel's dispatches: in the pass by the GPU's clock
    (timestamps after each dispatch, where the adapter has them), and alone by the wall clock."""
    whole = gpu_time(device, dispatches)
    pass_clock, each = clock(device, dispatches), clock(device, dispatches, each=True)
    measured = f", {sum(pass_clock) * 1e3:.3f} ms by the GPU's clock" if pass_clock else ""
    print(f"- {what}, replayed without readback: {whole * 1e3:.3f} ms wall clock{measured}; by kernel:")
    kinds = Counter(d.kernel.name for d in dispatches)
    for kind, count in kinds.most_common():
        alone = gpu_time(device, [d for d in dispatches if d.kernel.name == kind])
        line = f"  - {kind}: {count} dispatches"
        if each:
            inside = sum(s for d, s in zip(dispatches, each, strict=True) if d.kernel.name == kind)
            share = f"{inside * 1e3:.3f} ms ({inside / sum(each):.0%})"
            line += f"; in the pass {share}, {inside * 1e6 / count:.1f} µs each"
        print(f"{line}; alone {alone * 1e3:.3f} ms, {alone * 1e6 / count:.1f} µs each")
    if each:
        slowest = sorted(range(len(dispatches)), key=lambda i: -each[i])[:SLOWEST]
        listed = ", ".join(
            f"#{i} {dispatches[i].kernel.name} {'×'.join(map(str, dispatches[i].groups))} {each[i] * 1e6:.1f}"
            for i in slowest
        )
        print(f"  - the slowest dispatches in the pass (index, kernel, workgroups, µs): {listed}")


def bandwidth(gpu: NativeDevice, shape: str, form: str) -> None:
    rows, cols = (int(v) for v in shape.split("x"))
    form = form if form in ("q8", "q4") else "f16" if gpu.f16 else "f32"
    sizes = {"q8": ops.q8_bytes(rows, cols), "q4": ops.q4_bytes(rows, cols), "f16": 2 * rows * cols}
    size = sizes.get(form, 4 * rows * cols)
    w, x, y = gpu.buffer(size), gpu.upload(bytes(4 * cols)), gpu.buffer(4 * rows)
    rec = gpu.record()
    ops.linear(rec, x, w, y, 1, rows, cols, half=form == "f16", q8=form == "q8", q4=form == "q4")
    best = gpu_time(gpu, rec.dispatches)
    print(f"linear.wgsl, 1 × {cols} · ({rows} × {cols})ᵀ, {form} weights on {gpu.name}:")
    print(
        f"- {best * 1e6:.1f} µs a product, {size / best / 1e9:.1f} GB/s of weights, "
        f"{rows * cols / best / 1e9:.1f} G weights/s"
    )


def floor(gpu: NativeDevice, n: int) -> None:
    """What a dispatch costs when its work is nothing: ``n`` RMS norms of one 64-value row in one
    pass, each reading the last one's output (what a decode step's chain of products does), then each
    writing a buffer of its own; by the wall clock (host encoding included where it is the slower
    part) and by the GPU's."""
    x, w = gpu.upload(bytes(256)), gpu.upload(bytes(256))
    chained, apart = gpu.record(), gpu.record()
    outs = [gpu.buffer(256) for _ in range(n + 1)]
    for i in range(n):
        ops.rownorm(chained, outs[i], outs[i + 1], 1, 64, "rms", w, 1e-6)
        ops.rownorm(apart, x, outs[i + 1], 1, 64, "rms", w, 1e-6)
    for name, rec in (("each reading the last one's output", chained), ("each on its own buffers", apart)):
        seconds = asyncio.run(tune.seconds(gpu, rec.dispatches, 1, 3))
        on_gpu = clock(gpu, rec.dispatches)
        measured = f", {sum(on_gpu) * 1e6 / n:.1f} µs by the GPU's clock" if on_gpu else ""
        print(f"- {n} one-workgroup dispatches in a pass, {name}: {seconds * 1e6 / n:.1f} µs each{measured}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--chain", type=int, default=8)
    parser.add_argument("--bandwidth", metavar="RxC")
    parser.add_argument("--weights", default="auto", choices=("auto", "q8", "q4", "f16"))
    parser.add_argument("--lanes", type=int, help="linear.wgsl's threads a weight row (16, 32, 64, 128)")
    parser.add_argument(
        "--unroll", type=int, help="loads at once a thread in linear.wgsl (1, 2, 4, 8) and causal.wgsl"
    )
    parser.add_argument(
        "--attention-unroll", type=int, help="causal.wgsl's alone (1 to 16; a GPU's default: 16)"
    )
    parser.add_argument(
        "--attention-splits",
        type=int,
        help="workgroups a head for the output projection in a decode step (1 to 16; a GPU's default: 4)",
    )
    parser.add_argument(
        "--shares",
        choices=("on", "off"),
        help="the output projection in the attention (Decoder.output_shares; on a GPU's default)",
    )
    parser.add_argument("--floor", type=int, metavar="N", help="the cost of N one-workgroup dispatches")
    parser.add_argument(
        "--loop-bounding",
        action="store_true",
        help="compile the kernels with wgpu's default checks (a counter in every loop), as before",
    )
    args = parser.parse_args()
    gpu = NativeDevice(loop_bounding=args.loop_bounding)
    if args.lanes:
        gpu.tuned["linear_lanes"] = args.lanes
    if args.unroll:
        gpu.tuned["linear_unroll"] = gpu.tuned["attention_unroll"] = args.unroll
    if args.attention_unroll:
        gpu.tuned["attention_unroll"] = args.attention_unroll
    if args.attention_splits:
        gpu.tuned["attention_splits"] = args.attention_splits
    if args.shares:
        gpu.tuned["attention_output"] = args.shares == "on"
    if args.floor:
        floor(gpu, args.floor)
    if args.bandwidth:
        bandwidth(gpu, args.bandwidth, args.weights)
    if args.model is None:
        return
    data = memoryview(args.model.read_bytes())
    meta, tensors = parse_tensors(data, len(data))
    t0 = time.perf_counter()
    n_ctx = max(args.prompt, args.steps, 3) + 1  # (3: the warm-up steps)
    weights = "q8" if args.weights == "q4" else args.weights
    decoder = Decoder(gpu, data, meta, tensors, n_ctx=n_ctx, slots=args.slots, weights=weights)
    asyncio.run(decode(decoder, 3, args.slots))  # records and compiles the step's pass
    load = time.perf_counter() - t0
    start, ahead, wait, step = asyncio.run(decode(decoder, args.steps, args.slots))
    kinds = Counter(d.kernel.name for d in step.recording.dispatches)
    total = [sum(parts) for parts in zip(start, ahead, wait, strict=True)]
    prompt = asyncio.run(prompt_pass(decoder, args.prompt)) if args.prompt else 0.0
    step_ms = statistics.median(total)
    dispatches = sum(kinds.values())
    print(f"{args.model.name} on {gpu.name} (f16: {gpu.f16}), {args.slots} sequence(s) a step")
    forms = ", ".join(sorted(set(decoder.forms.values())))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (a CPU adapter's memory is ours)
    print(
        f"- load and first steps: {load:.1f} s; weights {decoder.weight_bytes / 2**20:.0f} MiB ({forms}), "
        f"KV cache {(decoder.memory_bytes - decoder.weight_bytes) / 2**20:.0f} MiB for {n_ctx} positions; "
        f"peak RSS {peak:.0f} MiB, the file {args.model.stat().st_size / 2**20:.0f} MiB of it"
    )
    print(f"- dispatches a decode step: {dispatches} {dict(kinds.most_common())}")
    print(
        f"- decode: {1e3 * args.slots / step_ms:.1f} tok/s, median step {step_ms:.3f} ms: host to submit "
        f"{statistics.median(start):.3f} ms, next step encoded ahead {statistics.median(ahead):.3f} ms "
        f"({1e3 * statistics.median(ahead) / dispatches:.2f} µs a dispatch, while the GPU runs), GPU + "
        f"readback {statistics.median(wait):.3f} ms ({args.steps} steps)"
    )
    if args.chain and args.steps >= 2 * args.chain:
        chain_ms = asyncio.run(chained(decoder, args.steps, args.slots, args.chain))
        print(
            f"- chained decode, {args.chain} steps a pass (the engine's greedy path): "
            f"{1e3 * args.slots / chain_ms:.1f} tok/s, {chain_ms:.3f} ms a step"
        )
    by_kernel(decoder.device, step.recording.dispatches)
    if args.prompt:
        print(f"- prompt: {args.prompt / prompt:.1f} tok/s ({args.prompt} tokens in {prompt * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
