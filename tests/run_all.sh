#!/usr/bin/env bash
# Every test of the project, as CI runs it (.ci/run calls this script).
# Needs: the Rust toolchain, a C and C++ compiler (cc, c++), and ../shared next to the
# repository root. Python is optional: tests that compare with numpy/mrcfile/starfile run
# when RECOVAR_TEST_PYTHON (or python3) can import them, and print "skipped: ..." otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (workspace)"
cargo test --workspace --locked

echo "== Rust examples run"
tmp=$(mktemp -d)
cargo run --quiet -p recovar-core --example render_phantom -- "$tmp" 32 > /dev/null
rm -rf "$tmp"

echo "== fuzz targets compile"
cargo check --manifest-path fuzz/Cargo.toml --bins

echo "all tests passed"
