#!/usr/bin/env bash
# The outer half of `bash e2e/run.sh node` (run.sh execs this; do not call it directly):
#
#  1. what needs the network or is kept on purpose: the Go-built tools (cached), the cargo
#     build, the images (e2e/images/build.sh: archives in a temporary directory);
#  2. run.sh again inside fresh network and mount namespaces (`unshare --net --mount`), where
#     the control plane, the node and the suite run; interfaces, iptables rules and mounts made
#     there vanish with the namespaces;
#  3. a check that the machine is as before: no new processes of the node's programs, network
#     interfaces, iptables rules, mounts or network-namespace entries. Leftovers fail the run.
set -euo pipefail
started=$1
root=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '[e2e %4ss] %s\n' "$(( $(date +%s) - started ))" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "the node needs root (namespaces, mounts, cgroups, iptables)"
for tool in containerd containerd-shim-runc-v2 runc ctr iptables conntrack unshare ip gcc objcopy; do
  command -v "$tool" >/dev/null || die "$tool missing (.ci/run installs containerd runc containernetworking-plugins iptables conntrack iproute2)"
done
[ -x /usr/lib/cni/bridge ] || die "CNI plugins missing in /usr/lib/cni (Debian: containernetworking-plugins)"

bin=$(bash "$root/e2e/tools.sh" | tail -1)
mon=$(bash "$root/e2e/tools.sh" monitoring | tail -1)
say "tools ready in $bin and $mon"
cd "$root"
say "building vecshard"
cargo build -q --workspace --all-targets
images=$(mktemp -d /tmp/vecshard-e2e-images.XXXXXX)
bash "$root/e2e/images/build.sh" "$images" 2>/dev/null
say "images built: $(cd "$images" && ls | tr '\n' ' ')"

# The node's programs, by process name (comm is at most 15 characters).
node_programs='^(containerd|containerd-shim|runc|kubelet|kube-proxy|coredns|etcd|kube-apiserver|kube-controller|kube-scheduler|pause|vecshard-server|vecshard-operat|prometheus|prometheus-adap)$'
snapshot() { # dir (best effort: a missing directory or tool is an empty list)
  mkdir -p "$1"
  set +o pipefail
  # Zombies are already dead (waiting for init to reap them): not left behind.
  ps -eo pid=,stat=,comm= | awk -v re="$node_programs" '$3 ~ re && $2 !~ /^Z/ {print $1, $3}' \
    | sort > "$1/processes"
  ip -o link show | awk -F': ' '{print $2}' | sort > "$1/links"
  { iptables-save; ip6tables-save; } 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' | sort > "$1/iptables"
  awk '{print $5}' /proc/self/mountinfo | sort > "$1/mounts"
  # Full paths, the directories themselves included: `ls` of several directories would print
  # a header for each that exists, so a directory first made by this run looked like a file.
  { find /run/netns /var/log/containers -maxdepth 1; find /run/containerd; } 2>/dev/null \
    | sort > "$1/files"
  set -o pipefail
}
state=$(mktemp -d /tmp/vecshard-e2e-state.XXXXXX)
snapshot "$state/before"

set +e
VECSHARD_E2E_IN_NAMESPACE=1 VECSHARD_E2E_STARTED=$started VECSHARD_E2E_BIN=$bin VECSHARD_E2E_MONITORING_BIN=$mon \
  VECSHARD_E2E_IMAGES=$images unshare --net --mount --propagation slave bash "$root/e2e/run.sh" node
rc=$?
set -e

# Entries the namespace's processes made on the shared filesystem outside the work dir: pod
# network-namespace files (their mounts are gone with the mount namespace), containerd's
# /run/containerd (shim sockets), kubelet's /var/log/containers links.
for dir in /run/netns /var/log/containers; do
  [ -d "$dir" ] || continue
  find "$dir" -mindepth 1 -maxdepth 1 | while read -r f; do
    grep -qxF "$f" "$state/before/files" || rm -f "$f"
  done
  # A directory this run made (on a fresh machine) goes too, once empty.
  grep -qxF "$dir" "$state/before/files" || rmdir "$dir" 2>/dev/null || true
done
grep -qxF /run/containerd "$state/before/files" || rm -rf /run/containerd

# The kernel frees a namespace's interfaces, and init reaps killed processes, shortly after
# the last process exits: look again for up to 10 s before calling anything a leftover.
for _ in $(seq 10); do
  sleep 1
  snapshot "$state/after"
  leftovers=0
  for what in processes links iptables mounts files; do
    comm -13 "$state/before/$what" "$state/after/$what" > "$state/$what.new"
    [ -s "$state/$what.new" ] && leftovers=1
  done
  [ $leftovers = 0 ] && break
done
for what in processes links iptables mounts files; do
  if [ -s "$state/$what.new" ]; then
    say "teardown left $what behind:"
    cat "$state/$what.new" >&2
  fi
done
rm -rf "$state"
if [ $leftovers = 0 ]; then
  say "teardown clean: no processes, interfaces, iptables rules, mounts or namespace files left"
elif [ $rc = 0 ]; then
  rc=1
fi
exit $rc
