#!/usr/bin/env bash
# Builds a static natsapp-wasm (x86_64 Linux, musl libc) that runs with no
# files around it: target/x86_64-unknown-linux-musl/release/natsapp-wasm.
# A release build: many minutes on 2 cores, so it is not part of the tests.
# Installs what it needs (the Rust target, and musl-gcc from Debian's
# musl-tools for the C parts of the TLS library) idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools
    else
        sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools
    fi
fi
CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --release --target "$TARGET" -p natsapp-wasm --bin natsapp-wasm
binary="target/$TARGET/release/natsapp-wasm"
# Proof that it stands alone: from an empty folder with an empty
# environment, it compiles the order-processor component and checks
# deploy/service.toml.
cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip2 -p order_processor
empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
cp "$binary" guests/target/wasm32-wasip2/release/order_processor.wasm "$empty/"
sed 's#component = "/opt/natsapp/order_processor.wasm"#component = "order_processor.wasm"#' \
    deploy/service.toml > "$empty/service.toml"
(cd "$empty" && env -i ./natsapp-wasm --version && env -i ./natsapp-wasm check service.toml >/dev/null)
echo "static binary: $binary (runs alone: version and check passed with an empty environment)"
