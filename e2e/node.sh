# A real Kubernetes node for `e2e/run.sh node`, sourced by run.sh inside the private network
# and mount namespaces it creates (so every interface, iptables rule and mount the node makes
# disappears with them). Needs: $work, $logs, $pki, $api_port, pids (array), say, wait_for,
# free_port, kubeconfig, cert from run.sh.
#
#   containerd (Debian) with runc, CNI bridge + host-local on 10.244.0.0/24, images imported
#   from the archives e2e/images/build.sh wrote; kubelet and kube-proxy (iptables) from
#   e2e/tools.sh; CoreDNS (kubernetes plugin) as a process on the node address, which is
#   every pod's nameserver (kubelet clusterDNS).

NODE_NAME=vecshard-e2e-node
NODE_IP=10.77.0.1     # on an interface of the namespace; pods reach it through cni0
POD_CIDR=10.244.0.0/24
# A cgroup root of this run's own: teardown kills everything under it and removes it.
CGROUP_ROOT=/vecshard-e2e-$$

node_network() {
  ip link set lo up
  # The node's address, on one end of a veth pair (kernels without the dummy driver have veth:
  # CNI needs it), with the default route, as on a machine with one network card.
  ip link add vecshard0 type veth peer name vecshard1
  ip addr add "$NODE_IP/24" dev vecshard0
  ip link set vecshard0 up
  ip link set vecshard1 up
  ip route add default via "${NODE_IP%.*}.254" dev vecshard0 onlink
  echo 1 > /proc/sys/net/ipv4/ip_forward
  # Pod-to-service-to-pod on one bridge: bridged replies must pass iptables to be un-NATed.
  if [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables
  else
    say "warning: br_netfilter is not loaded; a pod reaching a Service backed by a pod on the same bridge may hang"
  fi
}

node_pki() { # kubelet and kube-proxy identities, and the kubelet's serving certificate
  (
    cd "$pki"
    client node "/O=system:nodes/CN=system:node:$NODE_NAME"
    client kube-proxy "/CN=system:kube-proxy"
    printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$NODE_IP" "$NODE_NAME" > kubelet.ext
    openssl genrsa -out kubelet.key 2048 2>/dev/null
    openssl req -new -key kubelet.key -subj "/CN=$NODE_NAME" -out kubelet.csr 2>/dev/null
    openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile kubelet.ext -out kubelet.crt 2>/dev/null
  )
}

node_containerd() {
  local dir=$work/containerd
  mkdir -p "$dir" "$work/cni"
  cat > "$work/cni/10-bridge.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "e2e",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$work/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:e2e"
  # Sandboxes (-998) and guaranteed pods ask for a negative OOM score; lowering one needs
  # CAP_SYS_RESOURCE, which containers running this (CI sandboxes) may lack: keep no score below
  # containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni"
TOML
  containerd --config "$dir/config.toml" > "$logs/containerd.log" 2>&1 &
  pids+=($!)
  CONTAINERD_SOCK=$dir/containerd.sock
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
  local image
  for image in "$VECSHARD_E2E_IMAGES"/*.tar; do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --no-unpack "$image" >> "$logs/images.log" 2>&1
  done
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q >> "$logs/images.log"
  say "containerd running; images imported: $(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -v sha256 | tr '\n' ' ')"
}

node_kubelet() {
  local kport hport
  kport=$(free_port); hport=$(free_port)
  kubeconfig "$work/kubelet.kubeconfig" node "$(cert node)"
  printf 'nameserver %s\noptions ndots:5\n' "$NODE_IP" > "$work/resolv.conf"
  cat > "$work/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
address: $NODE_IP
port: $kport
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
tlsCertFile: "$pki/kubelet.crt"
tlsPrivateKeyFile: "$pki/kubelet.key"
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
# The machines this runs on mount cgroup v1; kubelet 1.37 still supports it when asked.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: "$work/resolv.conf"
podLogsDir: "$work/pod-logs"
# Never evict or garbage-collect the imported images (there is no registry to pull again).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Absolute disk thresholds, not percentages: these machines' disks are large but often nearly
# full (a few GiB free of 252G); "1%" (2.5 GiB) put the node under DiskPressure, which taints it
# and left every pod, the operator's too, unscheduled.
evictionHard: {memory.available: "100Mi", nodefs.available: "256Mi", imagefs.available: "256Mi", nodefs.inodesFree: "1%"}
serializeImagePulls: false
maxPods: 60
# Pods see a changed Secret at their next sync: within seconds here instead of about a minute
# (the security scenario rotates certificates and keys and waits for the pods to reload them).
syncFrequency: 10s
YAML
  # kubelet wants its cgroup root to exist in every hierarchy; a new cpuset needs its CPUs
  # and memory nodes set before anything can join it.
  local h
  for h in /sys/fs/cgroup/*/; do
    [ "$h" = /sys/fs/cgroup/unified/ ] && continue
    mkdir -p "$h$CGROUP_ROOT"
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset$CGROUP_ROOT/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset$CGROUP_ROOT/cpuset.mems"
  kubelet --config "$work/kubelet.yaml" --kubeconfig "$work/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --root-dir "$work/kubelet" --cert-dir "$work/kubelet-certs" \
    > "$logs/kubelet.log" 2>&1 &
  pids+=($!)
  KUBELET_PID=$!
}

node_kube_proxy() {
  kubeconfig "$work/kube-proxy.kubeconfig" kube-proxy "$(cert kube-proxy)"
  cat > "$work/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$work/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$(free_port)
metricsBindAddress: 127.0.0.1:$(free_port)
# A namespace of its own: leave the machine's conntrack table size alone.
conntrack: {maxPerCore: 0}
YAML
  kube-proxy --config "$work/kube-proxy.yaml" > "$logs/kube-proxy.log" 2>&1 &
  pids+=($!)
}

node_coredns() {
  local health ready
  health=$(free_port); ready=$(free_port)
  cat > "$work/Corefile" <<CORE
.:53 {
    errors
    health 127.0.0.1:$health
    ready 127.0.0.1:$ready
    cache 5
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $work/admin.kubeconfig
        pods insecure
        ttl 5
    }
}
CORE
  coredns -conf "$work/Corefile" > "$logs/coredns.log" 2>&1 &
  pids+=($!)
  wait_for coredns 30 curl -sf "http://127.0.0.1:$ready/ready"
}

node_start() {
  node_containerd
  node_kubelet
  node_kube_proxy
  node_coredns
  local _
  for _ in $(seq 120); do
    kill -0 "$KUBELET_PID" 2>/dev/null || { say "kubelet exited"; return 1; }
    kubectl wait --for condition=Ready --timeout=1s "node/$NODE_NAME" >/dev/null 2>&1 && break
  done
  kubectl wait --for condition=Ready --timeout=1s "node/$NODE_NAME" >/dev/null
  NODE_READY_AT=$(date +%s)
  node_without_pressure
  say "node $NODE_NAME Ready (containerd, kubelet, kube-proxy, CoreDNS on $NODE_IP:53; $(node_disk_free) disk free)"
}

node_disk_free() { df -h --output=avail "$work" | tail -1 | tr -d ' '; }

# A node under memory, disk or PID pressure is tainted and evicts pods: the operator's pod and
# every collection's would stay Pending with nothing else saying why. The kubelet's eviction
# manager first looks about 10 s after the node is Ready, so run.sh asks again, at least 15 s
# after it, just before the suite.
node_without_pressure() { # [settled]
  local pressure wait
  if [[ ${1:-} == settled ]]; then
    wait=$(( NODE_READY_AT + 15 - $(date +%s) ))
    [ "$wait" -gt 0 ] && sleep "$wait"
  fi
  pressure=$(kubectl get "node/$NODE_NAME" \
    -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}' | sed 's/Ready //')
  if [[ -n ${pressure// /} ]]; then
    say "node $NODE_NAME is under $pressure(free disk: $(node_disk_free); kubelet evictionHard in e2e/node.sh)"
    return 1
  fi
}

# Everything the node started, stopped; everything it mounted, unmounted; its cgroups removed.
# (Its interfaces and iptables rules go with the network namespace.)
node_stop() {
  [ -n "${KUBELET_PID:-}" ] && kill -TERM "$KUBELET_PID" 2>/dev/null && wait "$KUBELET_PID" 2>/dev/null
  local h procs _
  for _ in $(seq 20); do
    procs=$(cat /sys/fs/cgroup/pids"$CGROUP_ROOT"/cgroup.procs \
      $(find /sys/fs/cgroup/pids"$CGROUP_ROOT" -name cgroup.procs 2>/dev/null) 2>/dev/null | sort -u)
    [ -z "$procs" ] && break
    kill -KILL $procs 2>/dev/null
    sleep 0.2
  done
  if [ -n "${CONTAINERD_SOCK:-}" ]; then
    for _ in $(seq 25); do
      pkill -KILL -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || break
      sleep 0.2
    done
  fi
  # Mounts of this namespace under the work dir and the pods' network namespaces, deepest first.
  awk '{print $5}' /proc/self/mountinfo | grep -E "^($work/|/run/netns/cni-|/var/run/netns/cni-)" \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$CGROUP_ROOT" ] && find "$h$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  return 0
}
