#!/usr/bin/env bash
# The test command: installs prerequisites, builds the runtime binary and
# the guest components, runs every test against real nats-servers, the
# chaos suite's short version, and builds the book.
# Ends with how long each stage took and one line totalling every test
# binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."

stages=()
stage() { # name command…
    local name=$1 started=$SECONDS
    shift
    local status=0
    "$@" || status=$?
    stages+=("$(printf '%-28s %4ds%s' "$name" $((SECONDS - started)) "$([ $status -eq 0 ] || echo '  FAILED')")")
    return $status
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
tests() {
    cargo test --workspace "$@" 2>&1 | tee "$log"
}
# The chaos suite's short version: the order-processor example black-box
# under server, cluster and runtime faults (a few hundred orders each).
# It exits non-zero when a message is lost or stored twice, the durable
# does not settle, a wait exceeds its bound, or a process stopped with
# SIGTERM does not exit 0. Two scenarios run at once: each mostly waits
# (ack_wait, elections), so this halves the stage and, as a bonus, runs
# every fault beside another's load.
chaos() {
    ./target/debug/natsapp-chaos --short --jobs 2
}

status=0
stage prerequisites ./scripts/install-prereqs.sh
# Builds go through sccache, whose cache every clone on this machine
# shares: a fresh clone compiles what changed, not all of wasmtime again.
# NATSAPP_SCCACHE=off builds without it.
if [ "${NATSAPP_SCCACHE:-on}" != off ]; then
    export RUSTC_WRAPPER="$PWD/.venv/bin/sccache"
    export SCCACHE_DIR=${SCCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/natsapp-wasm-sccache}
    export SCCACHE_CACHE_SIZE=${SCCACHE_CACHE_SIZE:-20G}
    trap 'rm -f "$log"; "$RUSTC_WRAPPER" --stop-server >/dev/null 2>&1 || true' EXIT
fi
stage "build (runtime, guests)" cargo build --workspace --bins
stage "build (test crate)" cargo build -p natsapp-wasm-tests
# The benchmark's smoke run (a few hundred messages, dev profile) keeps it
# from rotting; it needs the guests, which the test crate's build builds.
stage "benchmark smoke" cargo bench -p natsapp-wasm --bench throughput --profile dev -- \
    --messages 300 --seconds 1 --rate 200 --rounds 1 || status=1
stage tests tests "$@" || status=1
stage "chaos suite (short)" chaos || status=1
stage book ./.tools/bin/mdbook build docs || status=1

echo
if [ -n "${RUSTC_WRAPPER:-}" ]; then
    "$RUSTC_WRAPPER" --show-stats 2>/dev/null | grep -E "^(Compile requests|Cache hits|Cache misses) +[0-9]+$" | sed 's/^/sccache: /' || true
fi
echo "stages:"
printf '  %s\n' "${stages[@]}"
echo "  $(printf '%-28s %4ds' total "$SECONDS")"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
