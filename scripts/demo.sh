#!/usr/bin/env bash
# The demo: the order-processor example on a local nats-server.
# Installs prerequisites, builds, starts nats-server on a free port, runs
# `natsapp-wasm run examples/order-processor/service.toml`, sends orders and
# prints what the handler produced.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-prereqs.sh
cargo build --workspace --bins
cargo run --quiet -p natsapp-wasm-tests --bin order-demo
