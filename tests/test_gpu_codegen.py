"""The SPIR-V the kernels compile to natively (naga's output, the same for any Vulkan driver): no loop
carries wgpu's loop-bounding counter, and no kernel of a decode step, a prompt or the encoder indexes a
thread's own array by anything but a constant. Either would keep a GPU's compiler from holding the
array in registers (a loop it cannot unroll; an index it cannot resolve), putting every access to the
sums through memory. lavapipe runs both forms at one speed, so only the compiled code shows this."""

from __future__ import annotations

import pytest
from spirv import Module, dump, lavapipe

from ferrousforge.gpu import ops

from tinymodel import write_tiny_gemma3, write_tiny_llama

LOAD_TIME = {"quant4", "quant8", "dequant", "half", "gguf_bytes"}  # run once as a model loads


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Module]]:
    if lavapipe() is None:
        pytest.skip("needs Mesa's lavapipe (make vulkan)")
    folder = tmp_path_factory.mktemp("spirv")
    models = [
        write_tiny_llama(folder / "llama.gguf", seed=1),
        write_tiny_llama(folder / "llama-q4k.gguf", seed=2, q4k=True),
        write_tiny_gemma3(folder / "gemma3.gguf", seed=3),
    ]
    return dump(folder, models)


def test_the_checks_see_a_loop_bound_and_an_index_by_a_loop_counter(modules: dict[str, list[Module]]) -> None:
    [bounded] = modules["probe with wgpu's default checks"]
    [probe] = modules["probe"]
    assert bounded.loop_bounds == bounded.loops == 1 and bounded.dynamic == 2
    assert probe.loop_bounds == 0 and probe.loops == 1 and probe.dynamic == 2


def test_no_kernel_carries_a_loop_bounding_counter(modules: dict[str, list[Module]]) -> None:
    kernels = {name for name in modules if not name.startswith("probe")}
    assert {"linear", "causal", "matmul", "argmax", "attention", "layernorm", "pool"} <= kernels, kernels
    assert {name: [m.loop_bounds for m in found] for name, found in modules.items() if name in kernels} == {
        name: [0] * len(modules[name]) for name in kernels
    }


def test_a_passs_kernels_index_a_threads_arrays_by_constants_alone(modules: dict[str, list[Module]]) -> None:
    hot = {
        name: found
        for name, found in modules.items()
        if name not in LOAD_TIME and not name.startswith("probe")
    }
    assert len(hot["linear"]) >= 8 and len(hot["matmul"]) > 3 * len(ops.MATMUL_TILES)  # all were read
    assert {name: [m.dynamic for m in found] for name, found in hot.items()} == {
        name: [0] * len(found) for name, found in hot.items()
    }
