#!/usr/bin/env bash
# The Qdrant-compatibility tests: the official qdrant-client and LangChain's Qdrant integration
# (langchain-qdrant), installed from PyPI into a virtual environment cached by the hash of
# e2e/qdrant-compat/requirements.txt, run against three `vecshard-server dev` clusters this
# script starts (2 shards x 1 replica each) and stops, the third with TLS and API keys
# (`--tls --api-key --read-only-api-key`, test_security.py): each test file once over REST
# and once over gRPC (Qdrant's `qdrant.*` services on the router's gRPC port).
#
# Usage: bash e2e/qdrant-compat.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here=$root/e2e/qdrant-compat
cache=${VECSHARD_TOOLS_CACHE:-$HOME/.cache/vecshard-e2e}
log() { printf '[qdrant-compat] %s\n' "$*" >&2; }
started=$(date +%s)

# ---- the clients, cached by their pinned versions ----
key=$(sha256sum "$here/requirements.txt" | cut -c1-12)
venv=$cache/qdrant-compat-py-$key
if [[ ! -x $venv/bin/python ]]; then
  log "installing the clients into $venv"
  rm -rf "$venv.tmp"
  python3 -m venv "$venv.tmp" || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv.tmp"; }
  "$venv.tmp/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  # The tests run its python directly, so the scripts' shebangs naming the .tmp path do not matter.
  mv "$venv.tmp" "$venv"
fi
log "clients ready ($(( $(date +%s) - started )) s)"

# ---- the servers ----
cargo build -q -p vecshard-server --bin vecshard-server
bin=$root/target/debug/vecshard-server
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME DIMENSION INDEX-FIELD...: writes the router's HTTP URL and gRPC port to
# $work/NAME.addr once it is ready. Called directly, not in a subshell, so that its pid is
# recorded for the cleanup.
start() {
  local name=$1 dim=$2; shift 2
  local http grpc base fields=()
  http=$(free_port); grpc=$(free_port); base=$(( 20000 + RANDOM % 20000 ))
  for f in "$@"; do fields+=(--index-field "$f"); done
  "$bin" dev --collection "$name" --dimension "$dim" --shards 2 --replicas 1 \
    --data-dir "$work/$name" --http-listen "127.0.0.1:$http" --grpc-listen "127.0.0.1:$grpc" \
    --base-port "$base" "${fields[@]}" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    if curl -fs "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; then
      echo "http://127.0.0.1:$http $grpc" >"$work/$name.addr"; return 0
    fi
    sleep 0.2
  done
  log "vecshard-server dev ($name) did not become ready:"; cat "$work/$name.log" >&2; return 1
}
# start_secure NAME DIMENSION: as `start`, with TLS and API keys (`dev --tls --api-key`).
start_secure() {
  local name=$1 dim=$2
  local http grpc base
  http=$(free_port); grpc=$(free_port); base=$(( 20000 + RANDOM % 20000 ))
  "$bin" dev --collection "$name" --dimension "$dim" --shards 2 --replicas 1 \
    --data-dir "$work/$name" --http-listen "127.0.0.1:$http" --grpc-listen "127.0.0.1:$grpc" \
    --base-port "$base" --tls --api-key rw-key-1 --read-only-api-key ro-key-1 >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    if [[ -f $work/$name/tls/ca.crt ]] &&
      curl -fs --cacert "$work/$name/tls/ca.crt" "https://127.0.0.1:$http/readyz" >/dev/null 2>&1; then
      echo "https://127.0.0.1:$http $grpc" >"$work/$name.addr"; return 0
    fi
    sleep 0.2
  done
  log "vecshard-server dev --tls ($name) did not become ready:"; cat "$work/$name.log" >&2; return 1
}
start compat 8 city:keyword n:integer
start lc 16 metadata.source:keyword
start_secure secure 8
read -r compat_url compat_grpc <"$work/compat.addr"
read -r lc_url lc_grpc <"$work/lc.addr"
read -r secure_url secure_grpc <"$work/secure.addr"
log "servers ready: $compat_url gRPC $compat_grpc (compat), $lc_url gRPC $lc_grpc (lc), $secure_url gRPC $secure_grpc (secure: TLS and API keys)"

status=0
for transport in rest grpc; do
  log "qdrant-client and langchain-qdrant over $transport"
  grpc_port() { [[ $transport == grpc ]] && echo "$1" || echo ""; }
  VECSHARD_URL=$compat_url VECSHARD_GRPC_PORT=$(grpc_port "$compat_grpc") \
    "$venv/bin/python" "$here/test_qdrant_client.py" || status=$?
  VECSHARD_LC_URL=$lc_url VECSHARD_LC_GRPC_PORT=$(grpc_port "$lc_grpc") \
    "$venv/bin/python" "$here/test_langchain.py" || status=$?
  VECSHARD_URL=$secure_url VECSHARD_CA=$work/secure/tls/ca.crt \
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=$work/secure/tls/ca.crt \
    VECSHARD_GRPC_PORT=$(grpc_port "$secure_grpc") \
    "$venv/bin/python" "$here/test_security.py" || status=$?
done
if [[ $status -ne 0 ]]; then
  for f in "$work"/*.log; do log "--- $f (last 40 lines)"; tail -40 "$f" >&2; done
fi
log "finished in $(( $(date +%s) - started )) s"
exit $status
