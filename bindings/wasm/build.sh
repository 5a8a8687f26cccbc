#!/usr/bin/env bash
# Build the wasm module and its JS glue:
#   bindings/wasm/pkg/      wasm-bindgen --target nodejs (CommonJS; what the Node tests load)
#   bindings/wasm/pkg-web/  wasm-bindgen --target web (ES module with init(); the browser demo)
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli at exactly the version of the
# `wasm-bindgen` crate (the two must match); both are installed here when missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
here=bindings/wasm

# The CLI version must equal the crate pin in bindings/wasm/Cargo.toml.
version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' "$here/Cargo.toml")
if [ -z "$version" ]; then
    echo "build.sh: no exact wasm-bindgen pin (wasm-bindgen = \"=x.y.z\") in $here/Cargo.toml" >&2
    exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "build.sh: installing the Rust target wasm32-unknown-unknown (rustup target add)"
    rustup target add wasm32-unknown-unknown
fi

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
bindgen="$(command -v wasm-bindgen || true)"
[ -n "$bindgen" ] || bindgen="$cargo_bin/wasm-bindgen"
have=$("$bindgen" --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$version" ]; then
    echo "build.sh: wasm-bindgen ${have:-missing}, need $version: installing wasm-bindgen-cli $version into $cargo_bin (takes 10-15 minutes)"
    # Not --locked: its lock file pins a webpki-roots this registry lacks (dependencies.md §5).
    cargo install wasm-bindgen-cli --version "$version"
    bindgen="$cargo_bin/wasm-bindgen"
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release --locked --target wasm32-unknown-unknown -p recovar-wasm
wasm="$target_dir/wasm32-unknown-unknown/release/recovar_wasm.wasm"
for t in nodejs web; do
    out="$here/pkg"
    [ "$t" = nodejs ] || out="$here/pkg-$t"
    rm -rf "$out"
    "$bindgen" --target "$t" --out-dir "$out" "$wasm"
done
echo "built $here/pkg and $here/pkg-web ($(du -k "$here/pkg/recovar_wasm_bg.wasm" | cut -f1) KiB wasm)"
