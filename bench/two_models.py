"""Two models generating at once on one host: the cores shared (the default) or not.

    .venv/bin/python bench/two_models.py [--runs 2]

``ferrousforge serve`` with ``num_thread`` 2, started fresh for each setting in turn (alternating,
``--runs`` rounds): one gemma3:270m stream alone (greedy, 128 tokens after a ~234-token prompt: first
token and tokens/s, median of 3), then the two-model mix of bench/ray_overhead.py (gemma3:270m and
smollm2:135m, 8 requests of 32 tokens, 4 clients at once: tokens/s). ``FERROUSFORGE_SHARE_CORES=0``
is the host before the sharing: every model's runner on every core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from generate_speed import TEXT, bench_store, start_forge, stop
from ray_overhead import generate, mix

SETTINGS = {"shared": {}, "not shared": {"FERROUSFORGE_SHARE_CORES": "0"}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    store = bench_store()
    results: dict[str, dict[str, list[float]]] = {name: {} for name in SETTINGS}
    for _ in range(args.runs):
        for name, env in SETTINGS.items():
            proc, url = start_forge(store, pull="gemma3:270m", extra_env=env)
            try:
                generate(url, "gemma3:270m", "hello", 4)
                alone = [generate(url, "gemma3:270m", f"{i} {TEXT}", 128) for i in range(3)]
                row = results[name]
                row.setdefault("ttft", []).append(statistics.median(a[0] for a in alone))
                row.setdefault("tok/s", []).append(statistics.median(a[1] for a in alone))
                row.setdefault("mix", []).append(mix(url))
            finally:
                stop(proc)
    print(f"medians of {args.runs} runs")
    for name, row in results.items():
        ttft, tps, both = (statistics.median(row[k]) for k in ("ttft", "tok/s", "mix"))
        print(
            f"  cores {name:10s} alone: first token {ttft * 1000:5.0f} ms, {tps:5.1f} tok/s;"
            f"  mix {both:5.1f} tok/s"
        )


if __name__ == "__main__":
    main()
