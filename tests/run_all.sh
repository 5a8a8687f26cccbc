#!/usr/bin/env bash
# Every test of the project, as CI runs it (.ci/run calls this script).
# Needs: the Rust toolchain (with the wasm32-unknown-unknown target), a C and C++ compiler
# (cc, c++), node >= 18, and ../shared next to the repository root. cmake (for the C++
# package test), wasm-bindgen-cli 0.2.130 (for the wasm binding) and NVRTC (PyPI wheel
# nvidia-cuda-nvrtc, to compile the CUDA kernels; no GPU needed) are installed when missing. Python is optional: tests that compare with numpy/mrcfile/starfile run when
# RECOVAR_TEST_PYTHON (or python3) can import them, and print "skipped: ..." otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot run gains nothing from incremental compilation, whose caches took tens of GB.
export CARGO_INCREMENTAL=0

echo "== tools: cmake"
tests/tools/ensure_cmake.sh

echo "== tools: NVRTC (compiles the CUDA kernels; no GPU needed)"
nvrtc_dir=$(tests/tools/ensure_nvrtc.sh | tail -n 1)
export LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RECOVAR_REQUIRE_NVRTC=1

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (workspace)"
cargo test --workspace --locked

echo "== CUDA: kernels compile to PTX; GPU-vs-CPU tests (skipped without a GPU)"
cargo test --locked -p recovar-core --test cuda_kernels_compile --test cuda_backend \
  -- --nocapture 2>&1 | grep -E "compiled|skipped|^test result|on cuda" || true
cargo test --locked -p recovar-core --test cuda_kernels_compile --test cuda_backend --quiet

echo "== Rust examples run"
tmp=$(mktemp -d)
cargo run --quiet -p recovar-core --example render_phantom -- "$tmp" 32 > /dev/null
cargo run --quiet -p recovar-core --bin recovar -- make_test_dataset "$tmp" --image-size 32 \
  --n-images 400 --discrete-only > /dev/null
cargo run --quiet -p recovar-core --example model_pipeline -- \
  "$tmp/test_dataset/particles.star" "$tmp/volume.mrc" 2> /dev/null
test -s "$tmp/volume.mrc"
rm -rf "$tmp"

echo "== Node binding (napi-rs addon, node --test, examples/node)"
bindings/node/test.sh --locked

echo "== wasm binding (wasm32-unknown-unknown, wasm-bindgen, node --test)"
bindings/wasm/test.sh

echo "== fuzz targets compile"
cargo check --manifest-path fuzz/Cargo.toml --bins

echo "all tests passed"
