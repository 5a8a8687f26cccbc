#!/usr/bin/env bash
# The Node binding's tests: build the addon and the recovar CLI (release), simulate a tiny
# dataset once, run test/*.test.mjs with node's built-in test runner, then run the example
# examples/node/pipeline.mjs on the same dataset. Exits non-zero on any failure.
# Needs node >= 18 on PATH; no npm packages. Honours CARGO_TARGET_DIR; extra arguments go
# to cargo (e.g. --locked).
set -euo pipefail
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' 2> /dev/null; then
  echo "bindings/node/test.sh: needs node >= 18 on PATH (found: $(node --version 2> /dev/null || echo none))" >&2
  exit 1
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

# One cargo invocation for the CLI and the addon: built separately, recovar-core's
# dependencies would resolve to different feature sets (napi's are not unified in) and
# recovar-core would be compiled twice. build.sh then only copies the addon.
(cd "$root" && cargo build --release -p recovar-node -p recovar-core --lib --bin recovar "$@")
"$here/build.sh" "$@"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export RECOVAR_BIN="$target/release/recovar"
"$RECOVAR_BIN" make_test_dataset "$tmp" --image-size 32 --n-images 400 --discrete-only > /dev/null
export RECOVAR_TEST_DATASET="$tmp/test_dataset"

cd "$here"
node --test test/*.test.mjs

echo "== examples/node/pipeline.mjs"
node "$root/examples/node/pipeline.mjs" "$RECOVAR_TEST_DATASET" "$tmp/example_out"
test -s "$tmp/example_out/volume.mrc"
