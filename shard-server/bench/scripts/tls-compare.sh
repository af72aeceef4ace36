#!/usr/bin/env bash
# TLS + API keys against plaintext, in one run (docs/benchmarks.md "TLS and API keys against
# plaintext"). Two release shard servers on loopback with the same data: A plaintext, B with
# TLS on both ports and API keys; then vecshard-bench alternates blocks of searches between
# them (`--compare-grpc`), so both see the same VM spells. B is searched with the read-only
# key over TLS, each call checked against the key set (SHA-256, constant-time compare).
#
#   bash shard-server/bench/scripts/tls-compare.sh [POINTS] [REQUESTS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
points=${1:-40000}
requests=${2:-6000}
work=$(mktemp -d /tmp/vecshard-tls-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build -q --release -p vecshard-server -p vecshard-bench
server=$root/target/release/vecshard-server
bench=$root/target/release/vecshard-bench

# A CA and a server certificate for 127.0.0.1 (what `vecshard-server dev --tls` writes).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > "$work/ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/ext" -out "$work/tls.crt" 2>/dev/null
mkdir -p "$work/keys"
echo "bench-read-write-key-0123456789abcdef" > "$work/keys/read-write"
echo "bench-read-only-key-0123456789abcdef" > "$work/keys/read-only"

common=(shard --collection docs --dimension 384 --metric cosine --quantization i8
  --hnsw-m 16 --hnsw-ef-construction 128 --index-field pos:keyword --index-field lexname:keyword)
"$server" "${common[@]}" --data-dir "$work/a" \
  --grpc-listen 127.0.0.1:17334 --http-listen 127.0.0.1:17333 > "$work/a.log" 2>&1 &
pids+=($!)
"$server" "${common[@]}" --data-dir "$work/b" \
  --grpc-listen 127.0.0.1:18334 --http-listen 127.0.0.1:18333 \
  --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" --api-keys-dir "$work/keys" > "$work/b.log" 2>&1 &
pids+=($!)
sleep 2

echo "== loading $points points into A (plaintext) and B (TLS + keys)"
"$bench" --grpc http://127.0.0.1:17334 --points "$points" --ef 64 --concurrency 1 --requests 200 --repeat 1 > "$work/load-a.txt"
"$bench" --grpc https://127.0.0.1:18334 --tls-ca "$work/ca.crt" \
  --api-key "$(cat "$work/keys/read-write")" \
  --points "$points" --ef 64 --concurrency 1 --requests 200 --repeat 1 > "$work/load-b.txt"
grep -h "ingest" "$work/load-a.txt" "$work/load-b.txt" || true

echo "== A plaintext vs B TLS + read-only key, alternating blocks"
"$bench" --grpc http://127.0.0.1:17334 --points "$points" --skip-load \
  --compare-grpc https://127.0.0.1:18334 --tls-ca "$work/ca.crt" \
  --api-key "$(cat "$work/keys/read-only")" \
  --ef 64 --concurrency 1,8 --requests "$requests" --compare-block 500

echo "== control: A against A"
"$bench" --grpc http://127.0.0.1:17334 --points "$points" --skip-load \
  --compare-grpc http://127.0.0.1:17334 \
  --ef 64 --concurrency 8 --requests "$requests" --compare-block 500
