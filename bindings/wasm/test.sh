#!/usr/bin/env bash
# The wasm binding's tests: build the module (build.sh; installs the wasm32 target and
# wasm-bindgen-cli when missing), write the native library's results for the fixed inputs
# of test/native.test.mjs (examples/reference.rs), then run every Node test
# (node --test, Node ≥ 20, no npm packages). Exits non-zero on any failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

if ! command -v node > /dev/null; then
    echo "test.sh: node is not installed; the wasm tests need Node.js ≥ 20" >&2
    exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "test.sh: node $(node --version) is too old; the wasm tests need Node.js ≥ 20" >&2
    exit 1
fi

echo "== wasm: build (bindings/wasm/build.sh)"
bindings/wasm/build.sh

echo "== wasm: native reference results (examples/reference.rs)"
ref=$(mktemp)
trap 'rm -f "$ref"' EXIT
cargo run --quiet --locked -p recovar-wasm --example reference > "$ref"

echo "== wasm: Node tests (bindings/wasm/test)"
RECOVAR_WASM_REFERENCE="$ref" node --test bindings/wasm/test/
