#!/usr/bin/env bash
# Builds llama.cpp's own llama-server from the llama.cpp source vendored in the llama-cpp-python sdist
# that FerrousForge runs, so the benchmark compares the same kernels. Cached outside the repo.
# Built as setup builds the native flavour: with GCC's AMX intrinsic fixed (scripts/ggml_amx_loadconfig.h),
# without which llama-server dies at its first Q4_K prompt on Xeons with AMX.
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${FERROUSFORGE_CACHE:-$HOME/.cache/ferrousforge}
OUT="$CACHE/llama-server-$VERSION-amxfix"
FIX="$(cd "$(dirname "$0")/.." && pwd)/scripts/ggml_amx_loadconfig.h"
if [ -x "$OUT/bin/llama-server" ]; then echo "$OUT/bin/llama-server"; exit 0; fi
mkdir -p "$CACHE/sdist" "$OUT"
SDIST="$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz"
[ -f "$SDIST" ] || python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$CACHE/sdist" >&2
SRC=$(mktemp -d)
tar xzf "$SDIST" -C "$SRC"
cmake -S "$SRC/llama_cpp_python-$VERSION/vendor/llama.cpp" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF "-DCMAKE_CXX_FLAGS=-include$FIX" >&2
cmake --build "$SRC/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$OUT/bin"
cp "$SRC/build/bin/llama-server" "$OUT/bin/"
rm -rf "$SRC"
echo "$OUT/bin/llama-server"
