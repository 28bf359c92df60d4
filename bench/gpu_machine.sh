#!/usr/bin/env bash
# The GPU machine's checks for issues G, H2 and H in one run, with llama.cpp CUDA built from the same
# source as the baseline. Prepare here first (`.venv/bin/python bench/gpu_machine_prepare.py` fills .gpu/), then
# one device call: command `bash bench/gpu_machine.sh`, carry [".gpu"], timeout_s 590. The log comes back
# as $OUT/gpu_machine.log; every step runs under its own timeout and a failing one does not stop the rest.
#   1. the machine: GPU, driver, Vulkan loader, wgpu's adapter;
#   2. (in the background) llama.cpp with CUDA for sm_90 from .gpu/llama-src.tgz: its shared libraries
#      (FerrousForge's llama.cpp engine loads them through LLAMA_CPP_LIB_PATH), llama-server, llama-bench;
#   3. the kernels' tests against numpy on the machine's adapter (CPU adapters hide races and fused
#      multiply-adds); whether wgpu's cooperative matrices reach the matrix units, and right; H2: the GPU decoder through wgpu (Vulkan) on copies of gemma3:270m and
#      smollm2:135m with random weights (bench/random_gguf.py): decode steps (host encoding vs GPU
#      wait), chained 8 to a pass (the engine's greedy path), the GPU's time by kernel, a 256-token prompt,
#      with the GPU's power state and clocks sampled by nvidia-smi while it runs (as for --floor and llama-bench);
#      what a dispatch costs when it does nothing (--floor), and the kernels' variants beside a GPU's
#      defaults (GPU_MACHINE_VARIANTS: wgpu's loop-bounding counters as before, the output projection
#      as a product of its own, the attention's projection on one workgroup a head (now 4), the
#      attention's 4 loads at once as before (now 16), one load at a time, 16 threads a weight row;
#      bandwidth and decode as the defaults run);
#   4. H: linear.wgsl's matrix-vector product on a 65536×4096 f16 matrix, as GB/s; all-minilm's encoder
#      on wgpu against the same shape in transformers' BertModel on torch CUDA (f32, f16), batch 1/32/256;
#   5. llama-bench on the same two files: decode (tg128) and prompt (pp256), all layers on the GPU;
#   6. G: `ferrousforge serve` on llama.cpp CUDA: info, ps (size_vram, the processor split), then
#      bench/generate_speed.py: /api/generate streaming against llama-server, the same build and file;
#   7. while the call's time lasts (`left`; each skipped step says so): H from texts, the wgpu and ONNX
#      (all cores) engines against sentence-transformers on torch CUDA; the encoder's products alone
#      (matmul.wgsl, every tiling) at batch 256's shapes beside torch's; H2 with 4 sequences a step.
# Off the GPU machine it runs on lavapipe and a CPU build of llama.cpp: GPU_MACHINE_PY=.venv/bin/python
# GPU_MACHINE_CUDA=OFF GPU_MACHINE_STEPS=4 GPU_MACHINE_PROMPT=16 GPU_MACHINE_GEMV=4096x1024 GPU_MACHINE_BATCHES=1,4 \
# GPU_MACHINE_MATMULS=256x384x384 GPU_MACHINE_VARIANTS='--unroll 4' bash bench/gpu_machine.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-machine}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_machine.log") 2>&1
export PYTHONUNBUFFERED=1  # a step stopped by its timeout still leaves what it printed
G=$PWD/.gpu
PY=${GPU_MACHINE_PY:-python3}
STEPS=${GPU_MACHINE_STEPS:-128}
PROMPT=${GPU_MACHINE_PROMPT:-256}
step() { echo; echo "== $* ($(date +%T), ${SECONDS}s in)"; }
# left [NEED]: seconds left of the call's BUDGET (580 of the device call's 590); with NEED, whether
# that many are left (else a line saying the step was skipped)
BUDGET=${GPU_MACHINE_BUDGET:-580}
left() {
  local rest=$((BUDGET - SECONDS))
  if [ -z "${1:-}" ]; then echo "$((rest > 1 ? rest : 1))"; return 0; fi
  [ "$rest" -ge "$1" ] && return 0
  echo "(skipped: ${rest}s left of the call, under the ${1}s it needs)"
  return 1
}

# sampled CMD...: run CMD while nvidia-smi samples the GPU's power state and clocks every 100 ms, then
# say which it ran at (a GPU left at low clocks between small dispatches makes each one slower; the
# settings are only read, never changed)
sampled() {
  local sampler=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=pstate,clocks.sm,clocks.max.sm,clocks.mem,utilization.gpu \
      --format=csv,noheader,nounits -lms 100 >/tmp/clocks.csv 2>/dev/null &
    sampler=$!
  fi
  "$@"
  local rc=$?
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null
    echo "-- GPU while it ran, samples by (pstate, SM MHz, of max, memory MHz, % busy):"
    sort /tmp/clocks.csv | uniq -c | sort -rn | head -n 6
  fi
  return $rc
}

step "the machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv 2>/dev/null || echo "no nvidia-smi"
# the Vulkan loader and glvnd (NVIDIA's Vulkan driver is its GLX library, which needs glvnd's dispatch
# library), unpacked as the device machine's notes say; then the driver's manifest where the loader looks
if [ -z "${GPU_MACHINE_PY:-}" ]; then
  for f in "$G"/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
  /etc/vulkan/icd.d/nvidia_icd.json; do
  [ -f "$icd" ] && { export VK_DRIVER_FILES=$icd; break; }
done
echo "Vulkan: driver manifest ${VK_DRIVER_FILES:-none found}; $(ldconfig -p | grep -oE 'lib(vulkan|GLdispatch|GLX_nvidia)\.so\.[0-9]+' | sort -u | tr '\n' ' ')"
if [ -z "${GPU_MACHINE_PY:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$G"/wheels/*.whl
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/host-site "$G"/host-wheels/*.whl
  export PYTHONPATH=/tmp/site:$PWD/shared
  HOSTPATH=$PWD/shared:$PWD/host:$G/llama_cpp_py:/tmp/host-site:/tmp/site
fi
for m in gemma3 smollm2; do $PY bench/random_gguf.py "$G/$m.gguf.gz" "/tmp/$m.gguf"; done
gunzip -c "$G/all-minilm.onnx.gz" > /tmp/all-minilm.onnx
adapter() { timeout 60 $PY -c "import wgpu; a = wgpu.gpu.request_adapter_sync(power_preference='high-performance'); print(a.info); print(sorted(a.features))"; }
if ! adapter; then  # again with the driver's own library folder, then with the loader's own search
  [ -n "${VK_DRIVER_FILES:-}" ] && cat "$VK_DRIVER_FILES"
  for lib in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [ -d "$lib" ] && export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
  done
  VK_LOADER_DEBUG=error,warn adapter 2>&1 | tail -n 20
  adapter >/dev/null 2>&1 || { unset VK_DRIVER_FILES; VK_LOADER_DEBUG=error,warn adapter 2>&1 | tail -n 20; }
fi

CUDA=${GPU_MACHINE_CUDA:-ON}  # OFF: a CPU build, to check this script off the GPU machine; SKIP: no build
if [ "$CUDA" = SKIP ]; then
  step "llama.cpp: not built in this run (GPU_MACHINE_CUDA=SKIP): no llama-bench, no G"
elif [ "$CUDA" = OFF ] || { command -v nvcc >/dev/null && nvidia-smi >/dev/null 2>&1; }; then
  step "building llama.cpp (CUDA $CUDA, sm_90) in the background"
  rm -rf /tmp/llama.cpp /tmp/llama-build /tmp/llama-build.rc && tar xzf "$G/llama-src.tgz" -C /tmp
  (cmake -S /tmp/llama.cpp -B /tmp/llama-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA="$CUDA" \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/tmp/llama-cmake.log 2>&1 &&
    nice cmake --build /tmp/llama-build --target llama mtmd llama-server llama-bench -j "$(nproc)" \
      >/tmp/llama-build.log 2>&1
    echo $? >/tmp/llama-build.rc) &
  building=$!
fi

step "H, H2: the kernels' tests on this adapter (tests/test_gpu_kernels.py, against numpy)"
timeout 150 $PY -m pytest --noconftest -q -p no:cacheprovider -rf tests/test_gpu_kernels.py >"$OUT/kernels.log" 2>&1
grep -E "^(FAILED|ERROR|E  )|passed|failed" "$OUT/kernels.log" | cut -c1-240 | tail -n 40

step "H, H2: the GPU's matrix units through wgpu's cooperative matrices (bench/gpu_coop_probe.py)"
timeout 60 $PY bench/gpu_coop_probe.py

step "H2: the GPU decoder through wgpu"
for m in gemma3 smollm2; do
  sampled timeout 150 $PY bench/gpu_decode.py "/tmp/$m.gguf" --steps "$STEPS" --prompt "$PROMPT"
done

step "H2: what a dispatch costs, and the kernels' variants beside the defaults (--unroll, --lanes)"
sampled timeout 30 $PY bench/gpu_decode.py --floor 100
# each variant: gpu_decode.py's flags, ';' between variants (the defaults: 32 threads a weight row, 4 loads at once in the products, 16 in the attention)
IFS=';' read -ra variants <<<"${GPU_MACHINE_VARIANTS:---loop-bounding;--shares off;--attention-splits 1;--attention-unroll 4;--unroll 1;--lanes 16}"
for v in "${variants[@]}"; do
  left 60 || break
  for w in f16 q4; do  # (the product's variants only)
    # shellcheck disable=SC2086  # (the variant's flags split into words)
    [[ $v == *--unroll* || $v == *--lanes* || $v == *--loop-bounding* ]] &&
      timeout 30 $PY bench/gpu_decode.py $v --bandwidth "${GPU_MACHINE_GEMV:-65536x4096}" --weights $w
  done
  for m in gemma3 smollm2; do
    echo "-- $m, $v:"
    # shellcheck disable=SC2086
    timeout 60 $PY bench/gpu_decode.py "/tmp/$m.gguf" $v --steps "$STEPS" --prompt "$PROMPT"
  done
done

step "H: linear.wgsl's bandwidth, the encoder against torch"
timeout 60 $PY bench/gpu_decode.py --bandwidth "${GPU_MACHINE_GEMV:-65536x4096}"
left 120 && timeout 150 $PY bench/gpu_encoder.py /tmp/all-minilm.onnx --torch --batches "${GPU_MACHINE_BATCHES:-1,32,256}"

if [ -n "${building:-}" ]; then
  step "llama.cpp CUDA $CUDA (llama-bench, same source)"
  timeout 400 tail --pid="$building" -f /dev/null
  echo "build exit: $(cat /tmp/llama-build.rc 2>/dev/null || echo unfinished)"
  tail -n 3 /tmp/llama-cmake.log /tmp/llama-build.log
  for m in gemma3 smollm2; do
    sampled timeout 90 /tmp/llama-build/bin/llama-bench -m "/tmp/$m.gguf" -p 256 -n 128 -ngl 99 -r 3 -o md
  done

  step "G: ferrousforge serve on that build"
  export LLAMA_CPP_LIB_PATH=/tmp/llama-build/bin
  store=/tmp/ff-store && rm -rf "$store"
  (
    export PYTHONPATH=${HOSTPATH:-${PYTHONPATH:-}} FERROUSFORGE_MODELS=$store FERROUSFORGE_HOST=127.0.0.1:11555
    $PY -m ferrousforge_host.cli serve >/tmp/serve.log 2>&1 &
    server=$!
    for _ in $(seq 60); do curl -s 127.0.0.1:11555 >/dev/null && break; sleep 1; done
    timeout 60 $PY -m ferrousforge_host.cli info
    printf 'FROM /tmp/gemma3.gguf\n' >/tmp/Modelfile
    timeout 120 $PY -m ferrousforge_host.cli create gemma3-random -f /tmp/Modelfile
    curl -s 127.0.0.1:11555/api/generate -d '{"model": "gemma3-random", "prompt": "The history of", "stream": false,
      "options": {"temperature": 0, "num_predict": 16}}' | head -c 600; echo
    timeout 30 $PY -m ferrousforge_host.cli ps
    curl -s 127.0.0.1:11555/api/ps; echo
    # num_gpu 9 of its 18 layers and output: a reload with a split, as ps shows it
    curl -s 127.0.0.1:11555/api/generate -d '{"model": "gemma3-random", "prompt": "The history of", "stream": false,
      "options": {"temperature": 0, "num_predict": 4, "num_gpu": 9}}' | head -c 300; echo
    timeout 30 $PY -m ferrousforge_host.cli ps
    kill $server
    tail -5 /tmp/serve.log
    export BENCH_GGUF=/tmp/gemma3.gguf LLAMA_SERVER=/tmp/llama-build/bin/llama-server BENCH_GPU_LAYERS=99
    export FERROUSFORGE_BENCH_STORE=/tmp/ff-bench-store
    timeout "$(left)" $PY bench/generate_speed.py --runs "${GPU_MACHINE_RUNS:-6}"
  )
fi
# what is left, as long as the call's time lasts (G's figures above come first)
step "H: the encoder from texts against sentence-transformers"
if left 90; then
  gunzip -c "$G/all-minilm-tokenizer.json.gz" >/tmp/all-minilm-tokenizer.json
  PYTHONPATH=$PWD/host:${PYTHONPATH:-} timeout "$(left)" $PY bench/gpu_encoder.py /tmp/all-minilm.onnx \
    --texts /tmp/all-minilm-tokenizer.json --torch --batches "${GPU_MACHINE_BATCHES:-1,32,256}"
fi
step "H: the encoder's products in each tiling against torch"
MATMULS=${GPU_MACHINE_MATMULS:-4096x1152x384,4096x384x384,4096x1536x384,4096x384x1536}
if left 40; then
  timeout "$(left)" $PY bench/gpu_encoder.py --torch --matmul "$MATMULS"
fi
if left 30; then  # the first shape again, with wgpu's loop-bounding counters as before
  timeout "$(left)" $PY bench/gpu_encoder.py --loop-bounding --matmul "${MATMULS%%,*}"
fi
step "H2: 4 sequences a step"
for m in gemma3 smollm2; do
  if left 30; then timeout "$(left)" $PY bench/gpu_decode.py "/tmp/$m.gguf" --steps "$((STEPS / 2))" --prompt 0 --slots 4; fi
done
step "H2: weights in f16 and 8 bits against the default above (4 bits where the file's are): bandwidth, decode"
for w in q4 q8; do
  if left 30; then timeout "$(left)" $PY bench/gpu_decode.py --bandwidth "${GPU_MACHINE_GEMV:-65536x4096}" --weights $w; fi
done
for m in gemma3 smollm2; do
  for w in f16 q8; do
    if left 30; then timeout "$(left)" $PY bench/gpu_decode.py "/tmp/$m.gguf" --steps "$STEPS" --prompt "$PROMPT" --weights $w; fi
  done
done
step done
