#!/usr/bin/env bash
# What a warm-up call made on a fresh instance before its message takes
# off the message's first call: builds the three Python components and the
# program, then runs it three times on each (docs/src/internals/benchmark.md,
# "Prepared instances"). Needs ./scripts/install-prereqs.sh run once.
set -euo pipefail
cd "$(dirname "$0")"
root=../..
out=$root/target/experiments/warm-up
tool=$root/.venv/bin/componentize-py
if [ ! -x "$tool" ]; then
    echo "componentize-py not found at $tool: run ./scripts/install-prereqs.sh" >&2
    exit 1
fi
mkdir -p "$out"
for app in empty parse_only same_path; do
    "$tool" -d wit -w w componentize "$app" -p py -o "$out/$app.wasm" >/dev/null
done
cargo build --release --quiet --target-dir "$out"
for round in 1 2 3; do
    for app in empty parse_only same_path; do
        echo "== $app, run $round"
        "$out/release/warm-up" "$out/$app.wasm" 300
    done
done
