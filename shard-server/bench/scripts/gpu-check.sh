#!/usr/bin/env bash
# GPU check of issue 24, in one device call.
#
#   bash shard-server/bench/scripts/gpu-check.sh prepare   # here: build, slice the dataset
#   then, with the device tool:
#     run(command="bash shard-server/bench/scripts/gpu-check.sh run", carry=[".gpu-check"],
#         timeout_s=600)
#
# `prepare` builds (release) the engine's test binary and the `gpu_bench` example with the
# GPU code, and copies them with the first DATASET_ROWS rows of the dataset and its first
# 2,048 queries into .gpu-check/ (~53 MB, ignored by git; the device call carries at most
# 64 MiB with the working tree, and the whole dataset is 90 MB). `run`, on the GPU machine (no cargo there):
#   1. the GPU tests: the engine's gpu_tests with VECSHARD_TEST_DEVICE=gpu, i.e. the same
#      assertions as CI's stand-in run (answers equal to the CPU exact plan's through
#      updates, deletes, filters, batches, compaction, reopen) on the real device;
#   2. the benchmark table: exact search QPS/latency at batch 1, 8, 64, 1024 on the dataset's
#      rows and on synthetic 116,659 / 1M / 10M × 384 f16 points, GPU against the CPU exact
#      plan in the same run and against the measured memory-bandwidth bound; written to
#      $OUT/gpu-table.md (copy it into docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/../../.."
DIR=.gpu-check
DATASET_ROWS=${DATASET_ROWS:-50000}
SIZES=${SIZES:-116659,1000000,10000000}

# The first ROWS rows of a 2-D .npy file (no numpy needed).
npy_head() {
    python3 - "$1" "$2" "$3" <<'PY'
import ast, sys
src, dst, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src, "rb") as f:
    magic = f.read(8)
    assert magic[:6] == b"\x93NUMPY", src
    hlen = int.from_bytes(f.read(2 if magic[6] == 1 else 4), "little")
    header = ast.literal_eval(f.read(hlen).decode("latin1"))
    n, d = header["shape"]
    rows = min(rows, n)
    item = int(header["descr"][2:])
    body = f.read(rows * d * item)
header["shape"] = (rows, d)
text = repr(header).encode("latin1")
pad = 64 - (10 + len(text) + 1) % 64
text += b" " * (pad % 64) + b"\n"
with open(dst, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body)
print(f"{dst}: {rows} x {d}")
PY
}

prepare() {
    export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
    mkdir -p "$DIR"
    grep -qx '/.gpu-check/' .git/info/exclude 2>/dev/null || echo '/.gpu-check/' >>.git/info/exclude
    cargo build --release -p vecshard-engine --example gpu_bench
    cp target/release/examples/gpu_bench "$DIR/gpu_bench"
    local tests
    tests=$(cargo test --release -p vecshard-engine --lib --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "vecshard_engine":
        print(m["executable"])')
    cp "$tests" "$DIR/engine-tests"
    strip "$DIR/gpu_bench" "$DIR/engine-tests" 2>/dev/null || true
    local data=${DATASET_DIR:-../shared/datasets/wordnet-minilm-384}
    npy_head "$data/base.f16.npy" "$DIR/base.f16.npy" "$DATASET_ROWS"
    npy_head "$data/queries.f32.npy" "$DIR/queries.f32.npy" 2048
    du -sh "$DIR"
}

run() {
    # CUDA's libraries: the driver's and the toolkit's (cuBLAS, NVRTC), wherever they are.
    local dirs=""
    for lib in libcuda.so.1 libcublas.so libnvrtc.so; do
        for d in $(find /usr/local/nvidia /usr/local/cuda* /usr/lib/x86_64-linux-gnu /opt \
            /usr/local/lib -name "$lib*" -printf '%h\n' 2>/dev/null | sort -u); do
            dirs="$dirs:$d"
        done
    done
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$dirs"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    local out=${OUT:-/tmp/gpu-check-out}
    mkdir -p "$out"
    local t0=$SECONDS
    echo "== GPU tests (the engine's gpu_tests on the device)"
    local tests=passed
    VECSHARD_TEST_DEVICE=gpu timeout 240 "$DIR/engine-tests" gpu_tests --test-threads 1 \
        >"$out/gpu-tests.log" 2>&1 || tests=FAILED
    tail -40 "$out/gpu-tests.log"
    echo "GPU tests $tests: $((SECONDS - t0)) s"
    t0=$SECONDS
    echo "== benchmark"
    local bench=passed
    timeout 420 "$DIR/gpu_bench" --dataset "$DIR/base.f16.npy" --queries "$DIR/queries.f32.npy" \
        --sizes "$SIZES" --out "$out/gpu-table.md" >"$out/gpu-bench.log" 2>&1 || bench=FAILED
    cat "$out/gpu-bench.log"
    echo "benchmark $bench: $((SECONDS - t0)) s"
    [ "$tests" = passed ] && [ "$bench" = passed ]
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
