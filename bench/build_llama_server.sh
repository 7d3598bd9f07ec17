#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the sources vendored in the llama-cpp-python sdist.
# Why: there is no internet here except PyPI, so the sdist is the only way to get llama.cpp.
# Idempotent: re-running with the binary already built does nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")" && pwd)"
CACHE="$ROOT/.cache"
BIN="$CACHE/llama.cpp-build/bin/llama-server"
PY="${PYTHON:-$ROOT/../.venv/bin/python}"

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$CACHE/sdist"
if ! ls "$CACHE"/sdist/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
    "$PY" -m pip download --no-deps --no-binary :all: -d "$CACHE/sdist" llama-cpp-python
fi
SDIST="$(ls "$CACHE"/sdist/llama_cpp_python-*.tar.gz | sort -V | tail -1)"
SRC="$CACHE/llama.cpp-src"
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
    rm -rf "$SRC" "$CACHE/unpack"
    mkdir -p "$CACHE/unpack"
    tar -xzf "$SDIST" -C "$CACHE/unpack"
    mv "$CACHE"/unpack/llama_cpp_python-*/vendor/llama.cpp "$SRC"
    rm -rf "$CACHE/unpack"
fi

# The web UI is downloaded at configure time unless switched off; there is no internet.
cmake -S "$SRC" -B "$CACHE/llama.cpp-build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF
cmake --build "$CACHE/llama.cpp-build" -j"$(nproc)" --target llama-server
echo "$BIN"
