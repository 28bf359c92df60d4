#!/usr/bin/env bash
# Ensures a built llama-cpp-python wheel is in the cache folder (it compiles llama.cpp: ~6 min on
# 2 cores), so every later setup, on this machine or in CI, installs it in seconds.
set -euo pipefail
PIP=$1 WHEELS=$2 VERSION=$3
mkdir -p "$WHEELS"
if ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  exit 0
fi
echo "Building llama-cpp-python $VERSION once (cached in $WHEELS)..." >&2
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PIP" wheel --no-deps -w "$WHEELS" "llama-cpp-python==$VERSION"
