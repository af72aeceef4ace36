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
    # The device call carries the working tree and .gpu-check together, at most 64 MiB.
    local carried
    carried=$(( $(du -sb "$DIR" | cut -f1) + $(git ls-files -z | xargs -0 cat | wc -c) ))
    echo "carried to the device: $((carried / 1048576)) MiB of 64"
    if [ "$carried" -gt $((60 * 1048576)) ]; then
        echo "too large to carry: lower DATASET_ROWS (now $DATASET_ROWS)" >&2
        exit 1
    fi
    # What the binaries load (usearch is built with OpenMP: libgomp must be on the device).
    ldd "$DIR/gpu_bench" | awk '{print $1}' | sort -u | tr '\n' ' '
    echo
}

# Directories holding LIB, in the order of the roots given (first root wins), without CUDA's
# link-time stubs (a stub libcuda loads and then fails every call) or its forward-compat driver
# (a user-mode driver that may not match the kernel module).
lib_dirs() {
    local lib=$1
    shift
    { find "$@" -name "$lib*" -not -path '*/stubs/*' -not -path '*/compat/*' -printf '%h\n' \
        2>/dev/null || true; } | awk '!seen[$0]++'
}

run() {
    # The driver's libcuda first, then the toolkit the driver came with (cuBLAS and NVRTC of
    # the same CUDA release), and pip's CUDA wheels under /opt only when the toolkit lacks one:
    # cuBLAS and cuBLASLt must come from the same release, and NVRTC must not be newer than
    # the driver or its PTX is refused at load.
    local dirs="" lib d found
    for lib in libcuda.so.1 libcublas.so libcublasLt.so libnvrtc.so; do
        found=$(lib_dirs "$lib" /usr/local/nvidia /usr/lib/x86_64-linux-gnu \
            "$(readlink -f /usr/local/cuda 2>/dev/null || echo /usr/local/cuda)" /usr/local/cuda* \
            /usr/local/lib | head -1 || true)
        [ -n "$found" ] || found=$(lib_dirs "$lib" /opt | head -1 || true)
        for d in $found; do
            case ":$dirs:" in *":$d:"*) ;; *) dirs="$dirs:$d" ;; esac
        done
    done
    export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    # What those libraries are, before any Rust code calls them: the driver's and NVRTC's
    # versions and the files the loader picked.
    python3 - <<'PY' || true
import ctypes, ctypes.util
def load(names):
    for n in names:
        try:
            return n, ctypes.CDLL(n)
        except OSError:
            pass
    return None, None
name, cuda = load(["libcuda.so.1", "libcuda.so"])
if cuda:
    v = ctypes.c_int()
    print(f"{name}: cuInit -> {cuda.cuInit(0)}, cuDriverGetVersion -> {cuda.cuDriverGetVersion(ctypes.byref(v))}, driver CUDA {v.value}")
else:
    print("libcuda: not loadable")
name, nvrtc = load(["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"])
if nvrtc:
    a, b = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))
    print(f"{name}: NVRTC {a.value}.{b.value}")
else:
    print("libnvrtc: not loadable")
name, _ = load(["libcublas.so.13", "libcublas.so.12", "libcublas.so"])
print(f"cuBLAS: {name or 'not loadable'}")
with open("/proc/self/maps") as f:
    print("\n".join(sorted({l.split()[-1] for l in f if "libcu" in l or "nvrtc" in l})))
PY
    for b in "$DIR/gpu_bench" "$DIR/engine-tests"; do
        ldd "$b" | grep -i "not found" && echo "$b: a library above is missing on this machine"
    done
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    local out=${OUT:-/tmp/gpu-check-out}
    mkdir -p "$out"
    local t0=$SECONDS
    echo "== GPU tests (the engine's gpu_tests on the device)"
    local tests=passed
    VECSHARD_TEST_DEVICE=gpu timeout 150 "$DIR/engine-tests" gpu_tests --test-threads 1 \
        >"$out/gpu-tests.log" 2>&1 || tests=FAILED
    tail -40 "$out/gpu-tests.log"
    echo "GPU tests $tests: $((SECONDS - t0)) s"
    t0=$SECONDS
    echo "== benchmark"
    local bench=passed
    # 150 + 380 s leaves the device call (600 s) room for the start and the copies back.
    timeout 380 "$DIR/gpu_bench" --dataset "$DIR/base.f16.npy" --queries "$DIR/queries.f32.npy" \
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
