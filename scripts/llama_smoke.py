"""A short Q4_K generation with the installed llama-cpp-python, on every core: proves the build runs
on this CPU. Exits by a signal if the build uses an instruction this machine cannot run. With
``--gpu`` (a GPU build) every layer runs on the GPU, and finding none is a failure.

Prints one line: tokens generated, where, and the CPU features llama.cpp reports.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import llama_cpp

from tinymodel import write_tiny_llama


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_llama(Path(tmp) / "smoke-q4k.gguf", q4k=True)
        threads = os.cpu_count() or 1
        gpu = "--gpu" in sys.argv[1:]
        if gpu and not llama_cpp.llama_supports_gpu_offload():
            raise SystemExit(
                "this llama.cpp GPU build found no GPU device to offload to (Vulkan skips CPU devices "
                "such as lavapipe unless GGML_VK_VISIBLE_DEVICES names them)"
            )
        llm = llama_cpp.Llama(
            str(path),
            n_ctx=256,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=-1 if gpu else 0,
            verbose=False,
        )
        prompt = " ".join(["the cat is on the mat and it was not a dog"] * 3)  # a batch: matrix kernels
        out = llm(prompt, max_tokens=8, temperature=0.0)
        n = out["usage"]["completion_tokens"]
        features = llama_cpp.llama_print_system_info().decode().replace("\n", " ").strip()
        where = "the GPU" if gpu else f"{threads} threads"
        print(f"{n} tokens from a Q4_K model on {where}; {features}")


if __name__ == "__main__":
    main()
