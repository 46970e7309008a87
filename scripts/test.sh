#!/usr/bin/env bash
# The test command: installs prerequisites, builds the runtime binary and
# the guest components, and runs every test against real nats-servers.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-prereqs.sh
cargo build --workspace --bins
cargo test --workspace "$@"
