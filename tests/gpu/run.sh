#!/usr/bin/env bash
# On the GPU machine, from the repository root, after tests/gpu/bundle.sh was run on the
# build machine and target/gpu-bundle carried over:
#   tests/gpu/run.sh tests              GPU-vs-CPU tests (must pass; no skipping allowed)
#   tests/gpu/run.sh bench SIZE N DEV   simulate N images of SIZE px (once, cached under
#                                       $BENCH_DIR) and time `pipeline` + `compute_state` on
#                                       DEV (cuda or cpu); prints wall time per stage, peak
#                                       host memory and the GPU memory peak
# Writes logs under ${OUT:-gpu-out}. Each call fits the device tool's 10-minute limit for
# the sizes in BENCHMARKS.md; larger sets take several calls (the simulation is cached).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=target/gpu-bundle
OUT="${OUT:-gpu-out}"
BENCH_DIR="${BENCH_DIR:-/tmp/recovar-bench}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

case "${1:-tests}" in
tests)
    RECOVAR_REQUIRE_GPU=1 "$B/cuda_backend" --nocapture --test-threads=1 2>&1 |
        tee "$OUT/cuda_backend.log"
    ;;
bench)
    size="$2" n="$3" dev="$4"
    data="$BENCH_DIR/sim-$size-$n"
    if [ ! -e "$data/test_dataset/ctf.pkl" ]; then
        /usr/bin/time -v "$B/recovar" make_test_dataset "$data" --image-size "$size" \
            --n-images "$n" 2> "$OUT/make-$size-$n.time"
    fi
    run="$BENCH_DIR/run-$size-$n-$dev"
    rm -rf "$run"
    # GPU memory in use, sampled every 200 ms, while the pipeline runs.
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 \
        > "$OUT/gpumem-$size-$n-$dev.txt" &
    smi=$!
    /usr/bin/time -v "$B/recovar" pipeline "$data/test_dataset/particles.$size.mrcs" \
        --poses "$data/test_dataset/poses.pkl" --ctf "$data/test_dataset/ctf.pkl" \
        -o "$run" --zdim 4 --device "$dev" 2> "$OUT/pipeline-$size-$n-$dev.time"
    printf '0 0 0 0\n1 0 0 0\n' > "$BENCH_DIR/points4.txt"
    /usr/bin/time -v "$B/recovar" compute_state "$run" -o "$run/states" \
        --latent-points "$BENCH_DIR/points4.txt" --device "$dev" \
        2> "$OUT/compute_state-$size-$n-$dev.time"
    kill "$smi" || true
    echo "== $size px, $n images, $dev"
    grep -h "Elapsed\|Maximum resident" "$OUT/pipeline-$size-$n-$dev.time" \
        "$OUT/compute_state-$size-$n-$dev.time"
    echo "GPU memory peak (MiB): $(sort -n "$OUT/gpumem-$size-$n-$dev.txt" | tail -n 1)"
    grep -i "device" "$run/run.log" || true
    cp "$run/timings.json" "$OUT/timings-$size-$n-$dev.json" && cat "$OUT/timings-$size-$n-$dev.json"
    ;;
*)
    echo "usage: tests/gpu/run.sh tests | bench SIZE N cuda|cpu" >&2
    exit 2
    ;;
esac
