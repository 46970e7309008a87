#!/usr/bin/env bash
# The test command: installs prerequisites, builds the runtime binary and
# the guest components, runs every test against real nats-servers, then the
# chaos suite's short version.
# Ends with one line totalling every test binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-prereqs.sh
cargo build --workspace --bins
# The benchmark's smoke run (a few hundred messages, dev profile) keeps it
# from rotting; it needs the guests, which the test crate's build builds.
cargo build -p natsapp-wasm-tests
cargo bench -p natsapp-wasm --bench throughput --profile dev -- --messages 300 --seconds 1 --rate 200 --rounds 1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# The chaos suite's short version: the order-processor example black-box
# under server, cluster and runtime faults (a few hundred orders each).
# It exits non-zero when a message is lost or stored twice, the durable
# does not settle, or a process stopped with SIGTERM does not exit 0.
chaos=passed
./target/debug/natsapp-chaos --short || { chaos=failed; status=1; }
echo "chaos suite (short): $chaos"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
