#!/usr/bin/env bash
# Builds a C handler into a component:
#   build.sh HANDLER_DIR OUT.wasm ADAPTER.wasm
# HANDLER_DIR holds the handler's .c files; they include "handler_sdk.h",
# the bindings wit-bindgen generates here from the WIT package (world
# handler-sdk), and may include this folder's "natsapp_http.h". ADAPTER.wasm is wasmtime's WASI preview1 reactor adapter
# (wasi_snapshot_preview1.reactor.wasm, from the crate
# wasi-preview1-component-adapter-provider pinned to the runtime's wasmtime).
# Needs clang-14 and lld-14 with wasi-libc (Debian), wit-bindgen 0.63 and
# wasm-tools: ./scripts/install-prereqs.sh installs them.
set -euo pipefail
sdk=$(cd "$(dirname "$0")" && pwd)
root=$sdk/../..
wit=${NATSAPP_WIT:-$root/wit}
wit_bindgen=${WIT_BINDGEN:-$root/.tools/bin/wit-bindgen}
wasm_tools=${WASM_TOOLS:-$root/.venv/bin/wasm-tools}
src=$(cd "$1" && pwd)
out=$2
adapter=$3
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
"$wit_bindgen" c "$wit" --world handler-sdk --out-dir "$stage" >/dev/null 2>&1
# The recipe's helpers (natsapp_http.c) build with every handler.
clang-14 --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Wall \
    -I "$stage" -I "$sdk" -o "$stage/core.wasm" \
    "$src"/*.c "$sdk"/*.c "$stage"/handler_sdk.c "$stage"/handler_sdk_component_type.o
"$wasm_tools" component new "$stage/core.wasm" --adapt "wasi_snapshot_preview1=$adapter" -o "$out"
