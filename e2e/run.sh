#!/usr/bin/env bash
# vecshard's cluster tests on this machine, with real upstream components on loopback.
#
#   bash e2e/run.sh controlplane   etcd + kube-apiserver (RBAC) + kube-controller-manager +
#                                  kube-scheduler, the Helm chart installed, then the suite
#                                  (cargo test -p vecshard-e2e --features e2e) against it
#   bash e2e/run.sh node           the same control plane plus a real node (containerd, runc,
#                                  CNI bridge, kubelet, kube-proxy, CoreDNS) in a network and
#                                  mount namespace of its own; vecshard's images built without
#                                  Docker and imported; the operator runs from the chart as a
#                                  pod; then the real-pod scenarios (e2e/tests/node.rs: the
#                                  lifecycle, then snapshots to a real S3 server, versitygw,
#                                  on the node's address, and restores,
#                                  then latency autoscaling with a real Prometheus and
#                                  prometheus-adapter behind the custom metrics API, and
#                                  TLS, API keys and NetworkPolicies from the operator)
#   bash e2e/run.sh snapshots      the node with only the snapshot scenario
#   bash e2e/run.sh autoscale      the node with only the autoscaling scenario
#   bash e2e/run.sh security       the node with only the security scenario (operator-issued
#                                  TLS, API keys, NetworkPolicies, renewal and key rotation)
#
# Binaries come from e2e/tools.sh (built from Go modules once, cached by version). Everything
# runs in a temporary directory that is removed on exit, success or failure; component logs
# are kept (and printed) only when something failed. No process outlives the script.
# e2e/kind.sh runs the same suite against a kind cluster.
set -euo pipefail

mode=${1:-controlplane}
case $mode in
  controlplane|node) ;;
  # The snapshot scenario alone, on the same real node (`node` runs it too, after the
  # lifecycle scenario, so that the node starts once).
  snapshots) mode=node; export VECSHARD_E2E_FILTER=snapshots ;;
  autoscale) mode=node; export VECSHARD_E2E_FILTER=autoscal ;;
  security) mode=node; export VECSHARD_E2E_FILTER=tls_keys ;;
  *) echo "usage: $0 controlplane|node|snapshots|autoscale|security" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
started=${VECSHARD_E2E_STARTED:-$(date +%s)}
say() { printf '[e2e %4ss] %s\n' "$(( $(date +%s) - started ))" "$*" >&2; }

if [[ $mode == node && -z ${VECSHARD_E2E_IN_NAMESPACE:-} ]]; then
  # Outside the namespaces: what needs the network (Go modules, crates) or leaves files
  # behind on purpose (the tools cache, the build), then the run itself in fresh network and
  # mount namespaces, then a check that it left nothing behind on the machine.
  exec bash "$root/e2e/node-outer.sh" "$started"
fi

if [[ $mode == node ]]; then
  # The scenario loads the benchmark dataset (next to the checkout, as ../shared/datasets).
  dataset=${VECSHARD_E2E_DATASET:-}
  for d in "$root/../shared/datasets/wordnet-minilm-384" /work/shared/datasets/wordnet-minilm-384; do
    [[ -z $dataset && -f $d/base.f16.npy ]] && dataset=$(cd "$d" && pwd)
  done
  [[ -f ${dataset:-/nonexistent}/base.f16.npy ]] || {
    say "dataset wordnet-minilm-384 not found (../shared/datasets next to the checkout); set VECSHARD_E2E_DATASET"
    exit 1
  }
fi

if [[ -n ${VECSHARD_E2E_BIN:-} ]]; then
  bin=$VECSHARD_E2E_BIN
else
  bin=$(bash "$root/e2e/tools.sh" | tail -1)
fi
export PATH="$bin:$PATH"
say "tools ready in $bin"
if [[ $mode == node ]]; then
  # Prometheus and prometheus-adapter (the autoscaling scenario's metrics pipeline).
  mon=${VECSHARD_E2E_MONITORING_BIN:-$(bash "$root/e2e/tools.sh" monitoring | tail -1)}
  export PATH="$mon:$PATH"
fi

work=$(mktemp -d /tmp/vecshard-e2e.XXXXXX)
logs=$work/logs
mkdir -p "$logs"
pids=()

# What a failed run needs to be understood from CI's output alone (which shows its tail):
# where the pods are, why they are not running, what the operator said last.
cluster_state() {
  echo "== disk and memory"; df -h / /tmp 2>&1 | sed -n '1,3p'; free -m 2>&1 | sed -n '1,2p'
  echo "== nodes"; timeout 10 kubectl get nodes -o wide 2>&1
  timeout 10 kubectl describe nodes 2>&1 | sed -n '/^Conditions:/,/^Addresses:/p'
  echo "== pods"; timeout 10 kubectl get pods -A -o wide 2>&1
  echo "== vecshard resources"; timeout 10 kubectl get vectorcollections,shardsets,vectorsnapshots -A 2>&1
  echo "== the operator's pod"
  timeout 10 kubectl describe pods -n "${operator_ns:-vecshard-system}" 2>&1 | sed -n '/^Containers:/,/^Conditions:/p'
  echo "== last events"
  timeout 10 kubectl get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 30
  if [ -d "$work/pod-logs" ]; then
    local f
    for f in "$work"/pod-logs/"${operator_ns:-vecshard-system}"_*/*/*.log; do
      [ -f "$f" ] || continue
      echo "== $f (last 60 lines)"; tail -n 60 "$f"
    done
  fi
}

cleanup() {
  local rc=$?
  set +e
  if [ $rc != 0 ] && [[ -n ${operator_ns:-} ]]; then
    cluster_state > "$logs/cluster-state.txt" 2>&1
  fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  [[ -s $work/prometheus.pid ]] && kill -KILL "$(cat "$work/prometheus.pid")" 2>/dev/null
  [[ $mode == node ]] && node_stop
  # Operators started by the suite die with their test process; be sure of it.
  pkill -KILL -f "$root/target/debug/vecshard-operator" 2>/dev/null
  if [ $rc != 0 ] || [ -n "${VECSHARD_E2E_KEEP_LOGS:-}" ]; then
    local keep=/tmp/vecshard-e2e-logs-$(date +%Y%m%d-%H%M%S)
    # On a node run, the containers' own logs too (shard servers, routers, the operator).
    [ -d "$work/pod-logs" ] && cp -r "$work/pod-logs" "$logs/pods"
    cp -r "$logs" "$keep"
    if [ $rc = 0 ]; then
      say "component logs kept in $keep (VECSHARD_E2E_KEEP_LOGS)"
      rm -rf "$work" "${VECSHARD_E2E_IMAGES:-}"
      exit 0
    fi
    say "FAILED (exit $rc); component logs kept in $keep"
    for f in "$keep"/*.log; do
      echo "===== $f (last 40 lines) =====" >&2
      tail -n 40 "$f" >&2
    done
    if [ -f "$keep/cluster-state.txt" ]; then
      echo "===== the cluster when the run failed ($keep/cluster-state.txt) =====" >&2
      cat "$keep/cluster-state.txt" >&2
    fi
  fi
  rm -rf "$work" "${VECSHARD_E2E_IMAGES:-}"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # what, seconds, command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq $(( seconds * 4 ))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  say "timed out waiting for $what"
  return 1
}

# ---- certificates and service-account keys ----
pki=$work/pki
mkdir -p "$pki"
client() { # name, subject: a client certificate signed by the run's CA (in the current dir)
  openssl genrsa -out "$1.key" 2048 2>/dev/null
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  echo "extendedKeyUsage=clientAuth" > client.ext
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile client.ext -out "$1.crt" 2>/dev/null
}
if [[ $mode == node ]]; then
  source "$root/e2e/node.sh"
  node_network
  api_bind=0.0.0.0 api_advertise=$NODE_IP
  # Pods reach the API server through the `kubernetes` Service, whose endpoint the API
  # server itself maintains at its advertised address.
  api_endpoints=()
else
  api_bind=127.0.0.1 api_advertise=127.0.0.1
  # A loopback advertise address is refused by the endpoint reconciler; nothing needs it.
  api_endpoints=(--endpoint-reconciler-type none)
fi
(
  cd "$pki"
  openssl genrsa -out ca.key 2048 2>/dev/null
  openssl req -x509 -new -key ca.key -subj "/CN=vecshard-e2e-ca" -days 2 -out ca.crt 2>/dev/null
  cat > apiserver.ext <<EXT
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:$api_advertise,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EXT
  openssl genrsa -out apiserver.key 2048 2>/dev/null
  openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  client admin "/O=system:masters/CN=vecshard-e2e-admin"
  client controller-manager "/CN=system:kube-controller-manager"
  client scheduler "/CN=system:kube-scheduler"
  client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  # The aggregation layer: the API server proxies custom.metrics.k8s.io to prometheus-adapter
  # with a client certificate from a CA of its own (the front proxy's), which the adapter
  # trusts to assert the user in request headers.
  openssl genrsa -out front-proxy-ca.key 2048 2>/dev/null
  openssl req -x509 -new -key front-proxy-ca.key -subj "/CN=vecshard-e2e-front-proxy-ca" -days 2 \
    -out front-proxy-ca.crt 2>/dev/null
  openssl genrsa -out front-proxy-client.key 2048 2>/dev/null
  openssl req -new -key front-proxy-client.key -subj "/CN=front-proxy-client" -out front-proxy-client.csr 2>/dev/null
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
    -CAcreateserial -days 2 -extfile client.ext -out front-proxy-client.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
[[ $mode == node ]] && node_pki
say "certificates in $pki"

etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
server=https://127.0.0.1:$api_port

kubeconfig() { # file, user name, user credentials (YAML flow map)
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: $3
contexts:
- name: e2e
  context: {cluster: e2e, user: $2}
current-context: e2e
KC
}
cert() { echo "{client-certificate: \"$pki/$1.crt\", client-key: \"$pki/$1.key\"}"; }
kubeconfig "$work/admin.kubeconfig" admin "$(cert admin)"
kubeconfig "$work/controller-manager.kubeconfig" controller-manager "$(cert controller-manager)"
kubeconfig "$work/scheduler.kubeconfig" scheduler "$(cert scheduler)"
export KUBECONFIG=$work/admin.kubeconfig

# ---- etcd ----
etcd --name e2e --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "e2e=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync \
  > "$logs/etcd.log" 2>&1 &
pids+=($!)
wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"
say "etcd on 127.0.0.1:$etcd_port"

# ---- kube-apiserver ----
kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address "$api_bind" --advertise-address "$api_advertise" --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --api-audiences https://kubernetes.default.svc.cluster.local \
  --authorization-mode Node,RBAC --service-cluster-ip-range 10.0.0.0/24 \
  --allow-privileged=true --cert-dir "$work/apiserver-certs" \
  "${api_endpoints[@]}" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
  --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
  --enable-aggregator-routing=true \
  > "$logs/kube-apiserver.log" 2>&1 &
pids+=($!)
wait_for kube-apiserver 90 kubectl get --raw /readyz
say "kube-apiserver on $server"

# ---- kube-controller-manager and kube-scheduler ----
kube-controller-manager --kubeconfig "$work/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$work/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$work/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true --cluster-name e2e \
  --horizontal-pod-autoscaler-sync-period 5s \
  > "$logs/kube-controller-manager.log" 2>&1 &
pids+=($!)
kube-scheduler --kubeconfig "$work/scheduler.kubeconfig" \
  --authentication-kubeconfig "$work/scheduler.kubeconfig" \
  --authorization-kubeconfig "$work/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false \
  > "$logs/kube-scheduler.log" 2>&1 &
pids+=($!)
# The service-account controller creating `default` proves the controller manager works.
wait_for kube-controller-manager 90 kubectl get serviceaccount default -n default
say "kube-controller-manager and kube-scheduler running"
[[ $mode == node ]] && node_start
if [[ $mode == node ]]; then
  # The S3 server the snapshot scenario's pods write to: versitygw (posix backend, data on
  # disk, object metadata such as multipart ETags in a sidecar directory) on the node's
  # address, a bucket `backups`.
  s3_port=$(free_port)
  mkdir -p "$work/s3/backups" "$work/sidecar"
  versitygw --port "$NODE_IP:$s3_port" --access e2e-access --secret e2e-secret-key --quiet \
    posix --sidecar "$work/sidecar" "$work/s3" > "$logs/versitygw.log" 2>&1 &
  pids+=($!)
  wait_for versitygw 30 curl -s -o /dev/null "http://$NODE_IP:$s3_port/"
  export VECSHARD_E2E_S3_ENDPOINT=http://$NODE_IP:$s3_port VECSHARD_E2E_S3_ROOT=$work/s3
  export VECSHARD_E2E_S3_ACCESS=e2e-access VECSHARD_E2E_S3_SECRET=e2e-secret-key
  say "versitygw (S3) on $NODE_IP:$s3_port, bucket backups"
fi

# ---- Prometheus and prometheus-adapter (node runs) ----
# Prometheus scrapes the pods that ask for it (prometheus.io/* annotations, as the operator
# sets them) through the node's network; the adapter serves custom.metrics.k8s.io from it with
# the chart's rules, behind the API server's aggregation layer (an APIService per version, a
# selectorless Service whose endpoint is the adapter on the node's address).
monitoring_start() {
  local prom_port adapter_port rules=$work/adapter-rules.yaml
  prom_port=$(free_port); adapter_port=$(free_port)
  cat > "$work/prometheus.yml" <<PROM
global: {scrape_interval: 5s, scrape_timeout: 4s, evaluation_interval: 5s}
scrape_configs:
  - job_name: pods
    kubernetes_sd_configs: [{role: pod, kubeconfig_file: "$work/admin.kubeconfig"}]
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: "true", action: keep}
      - {source_labels: [__meta_kubernetes_pod_container_port_name], regex: http, action: keep}
      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], regex: "(.+)", target_label: __metrics_path__}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
PROM
  # `prometheus-ctl stop|start`: the autoscaling scenario stops Prometheus (an outage must
  # freeze scaling, not scale down) and starts it again on the same port and TSDB. Its pid
  # lives in a file, since a restarted one is not a child of this script; cleanup kills it.
  cat > "$work/prometheus-ctl" <<CTL
#!/usr/bin/env bash
set -euo pipefail
pidfile=$work/prometheus.pid
case \$1 in
  stop)
    pid=\$(cat "\$pidfile"); kill "\$pid"
    for _ in \$(seq 300); do kill -0 "\$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -KILL "\$pid" ;;
  start)
    setsid prometheus --config.file "$work/prometheus.yml" --storage.tsdb.path "$work/prometheus" \\
      --web.listen-address "127.0.0.1:$prom_port" >> "$logs/prometheus.log" 2>&1 < /dev/null &
    echo \$! > "\$pidfile"
    for _ in \$(seq 600); do curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null && exit 0; sleep 0.1; done
    echo "prometheus did not become ready" >&2; exit 1 ;;
esac
CTL
  chmod +x "$work/prometheus-ctl"
  "$work/prometheus-ctl" start
  export VECSHARD_E2E_PROMETHEUS=http://127.0.0.1:$prom_port
  export VECSHARD_E2E_PROMETHEUS_CTL=$work/prometheus-ctl

  kubectl get configmap -n "$operator_ns" vecshard-operator-adapter-rules \
    -o jsonpath='{.data.config\.yaml}' > "$rules"
  [[ -s $rules ]] || { say "the chart rendered no prometheus-adapter rules"; return 1; }
  (
    cd "$pki"
    printf 'subjectAltName=DNS:prometheus-adapter.monitoring.svc,IP:%s\nextendedKeyUsage=serverAuth\n' "$NODE_IP" > adapter.ext
    openssl genrsa -out adapter.key 2048 2>/dev/null
    openssl req -new -key adapter.key -subj "/CN=prometheus-adapter" -out adapter.csr 2>/dev/null
    openssl x509 -req -in adapter.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile adapter.ext -out adapter.crt 2>/dev/null
  )
  prometheus-adapter --secure-port "$adapter_port" --bind-address "$NODE_IP" \
    --tls-cert-file "$pki/adapter.crt" --tls-private-key-file "$pki/adapter.key" \
    --lister-kubeconfig "$work/admin.kubeconfig" --authentication-kubeconfig "$work/admin.kubeconfig" \
    --authorization-kubeconfig "$work/admin.kubeconfig" \
    --prometheus-url "http://127.0.0.1:$prom_port/" --metrics-relist-interval 15s \
    --config "$rules" --v 2 > "$logs/prometheus-adapter.log" 2>&1 &
  pids+=($!)
  local ca; ca=$(base64 -w0 < "$pki/ca.crt")
  kubectl apply -f - > /dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Service
metadata: {name: prometheus-adapter, namespace: monitoring}
spec:
  ports: [{name: https, port: 443, targetPort: $adapter_port}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: prometheus-adapter, namespace: monitoring}
subsets: [{addresses: [{ip: "$NODE_IP"}], ports: [{name: https, port: $adapter_port}]}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.custom.metrics.k8s.io}
spec:
  group: custom.metrics.k8s.io
  version: v1beta1
  service: {name: prometheus-adapter, namespace: monitoring, port: 443}
  caBundle: $ca
  groupPriorityMinimum: 100
  versionPriority: 100
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta2.custom.metrics.k8s.io}
spec:
  group: custom.metrics.k8s.io
  version: v1beta2
  service: {name: prometheus-adapter, namespace: monitoring, port: 443}
  caBundle: $ca
  groupPriorityMinimum: 100
  versionPriority: 200
YAML
  wait_for "the custom metrics API (prometheus-adapter)" 90 \
    kubectl get --raw /apis/custom.metrics.k8s.io/v1beta2
  say "Prometheus on 127.0.0.1:$prom_port; prometheus-adapter on $NODE_IP:$adapter_port serves custom.metrics.k8s.io"
}

# ---- the chart, and the operator's identity ----
operator_ns=vecshard-system
if [[ $mode == node ]]; then
  # The operator runs as the chart deploys it, from the image built for this run.
  # The chart's prometheus-adapter rules too (with a short rate window for a short test):
  # the adapter below runs with them, so the shipped rules are the ones tested.
  chart_values=(--set image.tag=e2e --set replicaCount=1
    --set prometheusAdapter.rules.enabled=true --set prometheusAdapter.rules.window=30s)
else
  chart_values=()
fi
helm install vecshard-operator "$root/charts/vecshard-operator" "${chart_values[@]}" \
  --namespace "$operator_ns" --create-namespace --wait=false > "$logs/helm.log" 2>&1
release_sa=vecshard-operator
kubectl wait --for condition=established --timeout=60s \
  crd/vectorcollections.vecshard.io crd/shardsets.vecshard.io crd/vectorsnapshots.vecshard.io > /dev/null
token=$(kubectl create token "$release_sa" -n "$operator_ns" --duration 2h)
[[ $mode == node ]] && monitoring_start
kubeconfig "$work/operator.kubeconfig" operator "{token: \"$token\"}"
say "chart installed in $operator_ns; operator token for serviceaccount $release_sa"
if [[ $mode == node ]]; then
  # Fail here, with the cluster's state, rather than in every scenario's first wait.
  kubectl wait --for=condition=Available deployment --all -n "$operator_ns" --timeout=180s > /dev/null
  say "the operator's pod is available"
fi

# ---- the suite ----
cd "$root"
if [[ -z ${VECSHARD_E2E_IN_NAMESPACE:-} ]]; then # a node run built it before the namespaces
  say "building the operator and the suite"
  # --workspace --all-targets: the same packages, targets and dev-dependencies (hence the same
  # dependency features) as `cargo test --workspace`, so its build is reused, not redone.
  cargo build -q --workspace --all-targets
fi
export VECSHARD_OPERATOR_BIN=$root/target/debug/vecshard-operator
export VECSHARD_E2E_OPERATOR_KUBECONFIG=$work/operator.kubeconfig
export VECSHARD_E2E_OPERATOR_NAMESPACE=$operator_ns
export VECSHARD_E2E_OPERATOR_SA=$release_sa
export VECSHARD_E2E_LOGS=$logs
[[ $mode == node ]] && node_without_pressure settled
say "running the suite"
if [[ $mode == node ]]; then
  export VECSHARD_E2E_CONTAINERD_SOCK=$CONTAINERD_SOCK
  export VECSHARD_E2E_NODE=$NODE_NAME
  export VECSHARD_E2E_VOLUMES=$work/volumes
  export VECSHARD_E2E_DATASET=$dataset
  # One scenario after the other (they share the node's 2 cores).
  cargo test --workspace --features vecshard-e2e/e2e --test node -- --nocapture \
    --test-threads 1 ${VECSHARD_E2E_FILTER:-} 2>&1 | tee "$logs/suite.log"
else
  cargo test --workspace --features vecshard-e2e/e2e --test controlplane -- --test-threads 4 2>&1 \
    | tee "$logs/suite.log"
fi
status=${PIPESTATUS[0]}
say "suite finished with exit $status"
exit "$status"
