#!/usr/bin/env bash
# The demo: the order-processor example on a local nats-server.
# Installs what the demo needs (the wasm32-wasip2 target, nats-server),
# builds the runtime and the order-processor handler, starts nats-server on
# a free port, runs `natsapp-wasm run examples/order-processor/service.toml`,
# sends orders and prints what the handler produced.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-prereqs.sh demo
cargo build --bins -p natsapp-wasm -p order-demo
cargo build --quiet --manifest-path guests/Cargo.toml --target wasm32-wasip2 --release -p order_processor
./target/debug/order-demo
