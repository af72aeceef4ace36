#!/usr/bin/env bash
# Snapshot and restore of the whole dataset (116,659 × 384) held by one shard, to a directory
# and to a real S3 server (versitygw, built by e2e/tools.sh): times, throughput, sizes, and
# recall@10 of the restored shard against the source. Release binaries:
#   cargo build --release -p vecshard-server -p vecshardctl -p vecshard-bench
#   bash shard-server/bench/snapshot.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATASET=${DATASET:-../shared/datasets/wordnet-minilm-384}
BIN=${BIN:-./target/release}
VGW=${VECSHARD_VERSITYGW:-$(bash e2e/tools.sh versitygw)}
work=$(mktemp -d /tmp/vecshard-snapbench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
mib() { python3 -c "print(f'{$1 / 1048576:.1f}')"; }

shard() { # data-dir grpc-port http-port extra...
  local dir=$1 g=$2 h=$3; shift 3
  RUST_LOG=warn "$BIN/vecshard-server" shard --collection docs --dimension 384 --metric cosine \
    --data-dir "$dir" --quantization i8 --hnsw-m 16 --hnsw-ef-construction 128 \
    --index-field pos:keyword,lexname:keyword --shard-name docs-0 \
    --grpc-listen "127.0.0.1:$g" --http-listen "127.0.0.1:$h" "$@" >"$dir.log" 2>&1 &
  pids+=($!)
}
wait_ready() { # http-port
  until curl -sf "http://127.0.0.1:$1/readyz" >/dev/null; do sleep 0.2; done
}
recall() { # grpc-port
  "$BIN/vecshard-bench" --grpc "http://127.0.0.1:$1" --dataset "$DATASET" --skip-load \
    --ef 64 --concurrency 1 --requests 1000 --repeat 1 2>/dev/null |
    awk '/^\| 64 \| 1 \|/ {print; exit}'
}

echo "== source: load $DATASET into one shard (i8, M=16, ef_construction=128)"
shard "$work/source" 16534 16533
sleep 1
"$BIN/vecshard-bench" --grpc http://127.0.0.1:16534 --dataset "$DATASET" --ef 64 \
  --concurrency 1 --requests 200 --repeat 1 >/dev/null 2>&1
wait_ready 16533
src_bytes=$(du -sb "$work/source" | cut -f1)
echo "data directory: $(mib "$src_bytes") MiB"

echo "== snapshot to a directory"
t0=$(now)
"$BIN/vecshardctl" --addr http://127.0.0.1:16534 snapshot create --to "file://$work/repo" --id bench
t1=$(now)
repo_bytes=$(du -sb "$work/repo" | cut -f1)
echo "snapshot: $(secs "$t0" "$t1") s, $(mib "$repo_bytes") MiB ($(python3 -c "print(f'{$repo_bytes / $src_bytes:.2f}')") × the data directory)"

echo "== snapshot to S3 (versitygw, posix backend, loopback)"
mkdir -p "$work/s3/bench" "$work/sidecar"
"$VGW" --port 127.0.0.1:17170 --access bench --secret bench-secret --quiet posix --sidecar "$work/sidecar" "$work/s3" \
  >"$work/vgw.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:17170 && break; sleep 0.2; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
t0=$(now)
"$BIN/vecshardctl" --addr http://127.0.0.1:16534 snapshot create --to s3://bench/vecshard \
  --s3-endpoint http://127.0.0.1:17170 --id bench
t1=$(now)
echo "snapshot to S3: $(secs "$t0" "$t1") s"

echo "== both again (the first snapshot also waited for a graph save of a graph just built)"
t0=$(now)
"$BIN/vecshardctl" --addr http://127.0.0.1:16534 snapshot create --to "file://$work/repo" --id bench2 | head -1
t1=$(now)
"$BIN/vecshardctl" --addr http://127.0.0.1:16534 snapshot create --to s3://bench/vecshard \
  --s3-endpoint http://127.0.0.1:17170 --id bench2 | head -1
t2=$(now)
echo "second snapshot: directory $(secs "$t0" "$t1") s, S3 $(secs "$t1" "$t2") s"

echo "== verify (read every object, SHA-256)"
"$BIN/vecshardctl" snapshot verify --from "file://$work/repo" --id bench

echo "== restore from the directory into a new shard (until ready: graph loaded)"
t0=$(now)
shard "$work/restored" 16544 16543 --restore-from "file://$work/repo" --restore-snapshot bench
wait_ready 16543
t1=$(now)
echo "restore from directory: $(secs "$t0" "$t1") s ($(mib "$repo_bytes") MiB)"
grep -o '"restored from the snapshot".*\|restored from the snapshot.*' "$work/restored.log" | tail -1 || true

echo "== restore from S3 into a new shard"
t0=$(now)
shard "$work/restored-s3" 16554 16553 --restore-from s3://bench/vecshard --restore-snapshot bench \
  --s3-endpoint http://127.0.0.1:17170
wait_ready 16553
t1=$(now)
echo "restore from S3: $(secs "$t0" "$t1") s"

echo "== recall@10 (ef 64, 1,000 queries): source, restored, restored from S3"
echo "| ef | concurrency | recall@10 | QPS | QPS range | p50 ms | p99 ms |"
recall 16534
recall 16544
recall 16554
for p in 16534 16544 16554; do
  curl -s "http://127.0.0.1:$((p - 1))/metrics" | grep -E '^vecshard_graph_points_loaded' | sed "s/^/:$p /"
done
