#!/usr/bin/env bash
# Builds a JavaScript handler into a component:
#   build.sh HANDLER_DIR OUT.wasm
# HANDLER_DIR holds handler.js (which exports handle(data, msg)); the SDK
# (natsapp.js, main.js) and the WIT package are staged beside it, bundled
# into one ES module (bundle.mjs, rolldown), then componentized.
# Needs `npm install` in this folder (componentize-js 0.23.0, rolldown).
set -euo pipefail
sdk=$(cd "$(dirname "$0")" && pwd)
# The WIT package: beside the SDK in its npm package, else the repository's.
if [ -d "$sdk/wit" ]; then default_wit=$sdk/wit; else default_wit=$sdk/../../wit; fi
wit=${NATSAPP_WIT:-$default_wit}
src=$(cd "$1" && pwd)
out=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$src"/*.js "$stage"/
cp "$sdk/natsapp.js" "$sdk/main.js" "$stage"/
node "$sdk/bundle.mjs" "$stage/main.js" "$stage/bundle.js"
NODE_OPTIONS="--import $sdk/preopens.mjs" "$sdk/node_modules/.bin/componentize-js" "$stage/bundle.js" \
    --wit "$wit" --world-name handler-sdk-warm-up -d fetch-event -o "$out"
