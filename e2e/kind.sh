#!/usr/bin/env bash
# The cluster suite on a kind cluster (needs docker, kind, helm, kubectl, cargo): the same
# steps as `e2e/run.sh controlplane` after its control plane is up: install the chart, run the
# operator with the chart's ServiceAccount token, run `cargo test -p vecshard-e2e --features
# e2e`. Kept in step with e2e/run.sh; it cannot run on the development machine (no docker).
#
#   KIND_NODE_IMAGE=kindest/node:v1.33.1 bash e2e/kind.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cluster=${KIND_CLUSTER:-vecshard-e2e}
node_image=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
work=$(mktemp -d /tmp/vecshard-kind.XXXXXX)
logs=$work/logs
mkdir -p "$logs"

cleanup() {
  local rc=$?
  set +e
  pkill -KILL -f "$root/target/debug/vecshard-operator" 2>/dev/null
  if [ $rc != 0 ]; then
    kind export logs "$logs/kind" --name "$cluster" >/dev/null 2>&1
    echo "FAILED (exit $rc); logs in $logs" >&2
    tail -n 40 "$logs"/*.log >&2
  else
    rm -rf "$work"
  fi
  [ -n "${KEEP_CLUSTER:-}" ] || kind delete cluster --name "$cluster" >/dev/null 2>&1
  exit $rc
}
trap cleanup EXIT

kind create cluster --name "$cluster" --image "$node_image" --wait 120s
export KUBECONFIG=$work/kubeconfig
kind get kubeconfig --name "$cluster" > "$KUBECONFIG"

# Images: the same archives e2e/run.sh node imports into its containerd, built from the cargo
# build without Docker, loaded into the node (no registry involved).
(cd "$root" && cargo build -q --workspace --all-targets)
VECSHARD_IMAGES_NO_PAUSE=1 bash "$root/e2e/images/build.sh" "$work/images"
for image in vecshard-server vecshard-operator; do
  kind load image-archive --name "$cluster" "$work/images/$image.tar"
done

# As in e2e/run.sh: the chart provides CRDs, RBAC and the ServiceAccount; the suite runs its
# own operator processes with that account's token (replicaCount 0 keeps the in-cluster
# operator from reconciling the suite's namespaces too).
operator_ns=vecshard-system
helm install vecshard-operator "$root/charts/vecshard-operator" \
  --namespace "$operator_ns" --create-namespace \
  --set image.tag=e2e --set replicaCount=0 > "$logs/helm.log"
kubectl wait --for condition=established --timeout=60s \
  crd/vectorcollections.vecshard.io crd/shardsets.vecshard.io > /dev/null
token=$(kubectl create token vecshard-operator -n "$operator_ns" --duration 2h)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' \
  | base64 -d > "$work/ca.crt"
cat > "$work/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "$server", certificate-authority: "$work/ca.crt"}
users:
- name: operator
  user: {token: "$token"}
contexts:
- name: e2e
  context: {cluster: e2e, user: operator}
current-context: e2e
KC

cd "$root"
cargo build -q --workspace --all-targets
export VECSHARD_OPERATOR_BIN=$root/target/debug/vecshard-operator
export VECSHARD_E2E_OPERATOR_KUBECONFIG=$work/operator.kubeconfig
export VECSHARD_E2E_OPERATOR_NAMESPACE=$operator_ns
export VECSHARD_E2E_OPERATOR_SA=vecshard-operator
export VECSHARD_E2E_LOGS=$logs
export VECSHARD_E2E_SERVER_IMAGE=vecshard/vecshard-server:e2e
cargo test --workspace --features vecshard-e2e/e2e --test controlplane -- --test-threads 4 2>&1 \
  | tee "$logs/suite.log"
exit "${PIPESTATUS[0]}"
