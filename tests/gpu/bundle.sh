#!/usr/bin/env bash
# Build, here (no GPU or CUDA toolkit needed), what the GPU machine runs: the release CLI and
# the release GPU-vs-CPU test executable, into target/gpu-bundle/. The GPU machine has CUDA
# but no Rust toolchain: carry target/gpu-bundle there and run tests/gpu/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/gpu-bundle
rm -rf "$out" && mkdir -p "$out"
cargo build --release --locked -p recovar-core --bin recovar
cp target/release/recovar "$out/"
# The test executable's path is in cargo's JSON messages ("executable":"...").
exe=$(cargo test --release --locked -p recovar-core --test cuda_backend --no-run \
        --message-format=json 2>/dev/null |
      grep -o '"executable":"[^"]*cuda_backend[^"]*"' | tail -n 1 | cut -d'"' -f4)
test -x "$exe" || { echo "bundle: no cuda_backend test executable" >&2; exit 1; }
cp "$exe" "$out/cuda_backend"
strip "$out/recovar" "$out/cuda_backend" 2>/dev/null || true
ls -la "$out"
