#!/usr/bin/env bash
# Build pinned upstream Kubernetes binaries (plus etcd, helm and CoreDNS)
# from Go modules into a cache keyed by version, reusing them when present.
#
# Usage:
#   bash e2e/tools.sh                # build (or reuse) everything; prints the bin dir
#   bash e2e/tools.sh versitygw      # build (or reuse) only the S3 server; prints its path
#   bash e2e/tools.sh monitoring     # build (or reuse) only Prometheus and prometheus-adapter;
#                                    # prints their directory
#   bash e2e/tools.sh update-gomod   # regenerate e2e/tools/*/go.{mod,sum} for the
#                                    # versions below (after bumping them), then exit
#
# The last line of stdout is the directory holding symlinks to all binaries:
#   ${VECSHARD_TOOLS_CACHE:-$HOME/.cache/vecshard-e2e}/bin
# All progress goes to stderr.
#
# Cache layout (one directory per component and version; each is created by an
# atomic `mv` of a fully built temp dir, so an interrupted build never leaves a
# half-populated cache entry):
#   <cache>/kubernetes-<K8S_VERSION>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl,kubelet,kube-proxy}
#   <cache>/etcd-<ETCD_VERSION>/bin/etcd
#   <cache>/helm-<HELM_VERSION>/bin/helm
#   <cache>/coredns-<COREDNS_VERSION>/bin/coredns
#   <cache>/versitygw-<VERSITYGW_VERSION>/bin/versitygw
#   <cache>/prometheus-<PROMETHEUS_VERSION>/bin/prometheus
#   <cache>/prometheus-adapter-<ADAPTER_VERSION>/bin/prometheus-adapter
#   <cache>/bin/  -> symlinks to all of the above
set -euo pipefail

# ---- Pinned versions (the go.mod files under e2e/tools/ must match; see update-gomod) ----
K8S_VERSION=v1.37.2   # k8s.io/kubernetes; staging modules are pinned to v0.<minor>.<patch>
ETCD_VERSION=v3.7.3   # go.etcd.io/etcd/server/v3 (k8s v1.37 ships/tests with etcd 3.7.x)
HELM_VERSION=v3.22.0  # helm.sh/helm/v3
COREDNS_VERSION=v1.14.7 # github.com/coredns/coredns (cluster DNS of `e2e/run.sh node`)
VERSITYGW_VERSION=v1.8.0 # github.com/versity/versitygw (the S3 server of the snapshot tests)
PROMETHEUS_VERSION=v0.316.0 # github.com/prometheus/prometheus (Prometheus 3.16; the autoscale scenario)
# prometheus-adapter is not served by the module proxy: built from the copy in
# ../shared/third_party/prometheus-adapter (its dependencies come from the proxy), keyed by commit.
ADAPTER_VERSION=01919d0ef118 # kubernetes-sigs/prometheus-adapter v0.12.0 + 4 commits

K8S_REQUIRED=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
K8S_OPTIONAL=(kubelet kube-proxy) # built too; a failure here is reported, not fatal

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS_SRC=$HERE/tools
CACHE=${VECSHARD_TOOLS_CACHE:-$HOME/.cache/vecshard-e2e}

# Reproducible, hermetic-ish Go settings. GOPATH/GOMODCACHE/GOCACHE stay at their defaults.
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
GO_BUILD=(go build -trimpath)

log() { printf '[e2e/tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found in PATH (need Go >= 1.26)"

# ---------------------------------------------------------------------------
# update-gomod: regenerate go.mod/go.sum for the pinned versions.
# ---------------------------------------------------------------------------
k8s_staging_modules() {
  # Every staging module of k8s.io/kubernetes@$K8S_VERSION, read from the
  # replace block (`k8s.io/x => ./staging/src/k8s.io/x`) of its own go.mod.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || die "could not download go.mod of k8s.io/kubernetes@$K8S_VERSION"
  awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// { print $1 }' "$gomod" | sort -u
}

update_gomod() {
  local staging_ver="v0.${K8S_VERSION#v1.}" m d
  export GOFLAGS="-mod=mod -buildvcs=false"

  d=$TOOLS_SRC/kubernetes
  log "regenerating $d/go.mod (k8s.io/kubernetes $K8S_VERSION, staging $staging_ver)"
  mkdir -p "$d"; rm -f "$d/go.mod" "$d/go.sum"
  (cd "$d" && go mod init vecshard/e2e/tools/kubernetes 2>/dev/null && go mod edit -go=1.26.0)
  local -a edits=("-require=k8s.io/kubernetes@$K8S_VERSION")
  local mods; mods=$(k8s_staging_modules)
  [[ -n $mods ]] || die "no staging modules found"
  for m in $mods; do edits+=("-replace=$m=$m@$staging_ver"); done
  for m in "${K8S_REQUIRED[@]}" "${K8S_OPTIONAL[@]}"; do edits+=("-tool=k8s.io/kubernetes/cmd/$m"); done
  (cd "$d" && go mod edit "${edits[@]}" && go mod tidy)

  d=$TOOLS_SRC/etcd
  log "regenerating $d/go.mod (go.etcd.io/etcd/server/v3 $ETCD_VERSION)"
  rm -f "$d/go.mod" "$d/go.sum"
  (cd "$d" && go mod init vecshard/e2e/tools/etcd 2>/dev/null && go mod edit -go=1.26.0 \
    "-require=go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy)

  d=$TOOLS_SRC/helm
  log "regenerating $d/go.mod (helm.sh/helm/v3 $HELM_VERSION)"
  mkdir -p "$d"; rm -f "$d/go.mod" "$d/go.sum"
  (cd "$d" && go mod init vecshard/e2e/tools/helm 2>/dev/null && go mod edit -go=1.26.0 \
    "-require=helm.sh/helm/v3@$HELM_VERSION" -tool=helm.sh/helm/v3/cmd/helm && go mod tidy)
  d=$TOOLS_SRC/coredns
  log "regenerating $d/go.mod (github.com/coredns/coredns $COREDNS_VERSION)"
  rm -f "$d/go.mod" "$d/go.sum"
  (cd "$d" && go mod init vecshard/e2e/tools/coredns 2>/dev/null && go mod edit -go=1.26.0 \
    "-require=github.com/coredns/coredns@$COREDNS_VERSION" && go mod tidy)
  d=$TOOLS_SRC/versitygw
  log "regenerating $d/go.mod (github.com/versity/versitygw $VERSITYGW_VERSION)"
  mkdir -p "$d"; rm -f "$d/go.mod" "$d/go.sum"
  (cd "$d" && go mod init vecshard/e2e/tools/versitygw 2>/dev/null && go mod edit -go=1.26.0 \
    "-require=github.com/versity/versitygw@$VERSITYGW_VERSION" -tool=github.com/versity/versitygw/cmd/versitygw && go mod tidy)
  d=$TOOLS_SRC/prometheus
  log "regenerating $d/go.mod (github.com/prometheus/prometheus $PROMETHEUS_VERSION)"
  mkdir -p "$d"; rm -f "$d/go.mod" "$d/go.sum"
  (cd "$d" && go mod init vecshard/e2e/tools/prometheus 2>/dev/null && go mod edit -go=1.26.0 \
    "-require=github.com/prometheus/prometheus@$PROMETHEUS_VERSION" -tool=github.com/prometheus/prometheus/cmd/prometheus && go mod tidy)
  for d in "$TOOLS_SRC"/{kubernetes,etcd,helm,coredns,versitygw,prometheus}; do
    sed -i '1i // Generated by `bash e2e/tools.sh update-gomod` from the versions pinned in e2e/tools.sh; do not edit.' "$d/go.mod"
  done
  log "done; commit e2e/tools/*/go.mod and go.sum"
}

if [[ ${1:-} == update-gomod ]]; then update_gomod; exit 0; fi
ONLY=${1:-}
[[ -z $ONLY || $ONLY == versitygw || $ONLY == monitoring ]] || die "usage: bash e2e/tools.sh [versitygw|monitoring|update-gomod]"

# ---------------------------------------------------------------------------
# Build helpers
# ---------------------------------------------------------------------------
# Fail early if a go.mod was not regenerated after bumping a version variable.
check_pin() { # dir module version
  local got
  got=$(cd "$1" && go list -m -f '{{.Version}}' "$2") || die "cannot resolve $2 in $1/go.mod"
  [[ $got == "$3" ]] || die "$1/go.mod pins $2 $got but tools.sh wants $3; run: bash e2e/tools.sh update-gomod"
}

mod_time() { # dir module -> RFC3339 UTC release time of the pinned version (reproducible buildDate)
  (cd "$1" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$2")
}

build_kubernetes() { # outdir
  local src=$TOOLS_SRC/kubernetes out=$1 ver=${K8S_VERSION#v} ld="-s -w" k v
  check_pin "$src" k8s.io/kubernetes "$K8S_VERSION"
  local -A vars=(
    [gitVersion]=$K8S_VERSION [gitMajor]=${ver%%.*} [gitMinor]=$(cut -d. -f2 <<<"$ver")
    [gitTreeState]=clean [gitCommit]="" [buildDate]=$(mod_time "$src" k8s.io/kubernetes)
  )
  for k in "${!vars[@]}"; do
    v=${vars[$k]}
    ld+=" -X 'k8s.io/component-base/version.$k=$v' -X 'k8s.io/client-go/pkg/version.$k=$v'"
  done
  local -a all=() req=()
  for k in "${K8S_OPTIONAL[@]}"; do all+=("k8s.io/kubernetes/cmd/$k"); done
  for k in "${K8S_REQUIRED[@]}"; do req+=("k8s.io/kubernetes/cmd/$k"); done
  if ! (cd "$src" && "${GO_BUILD[@]}" -ldflags "$ld" -o "$out/" "${req[@]}" "${all[@]}"); then
    log "WARNING: building ${K8S_OPTIONAL[*]} together with the control plane failed; retrying without them"
    (cd "$src" && "${GO_BUILD[@]}" -ldflags "$ld" -o "$out/" "${req[@]}")
    echo "${K8S_OPTIONAL[*]}" >"$out/../OPTIONAL_BUILD_FAILED"
  fi
}

build_etcd() { # outdir
  local src=$TOOLS_SRC/etcd
  check_pin "$src" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  (cd "$src" && "${GO_BUILD[@]}" \
    -ldflags "-s -w -X 'go.etcd.io/etcd/api/v3/version.GitSHA=go.etcd.io/etcd/server/v3@$ETCD_VERSION'" \
    -o "$1/etcd" .)
}

build_helm() { # outdir
  local src=$TOOLS_SRC/helm k8s
  check_pin "$src" helm.sh/helm/v3 "$HELM_VERSION"
  k8s=$(cd "$src" && go list -m -f '{{.Version}}' k8s.io/client-go) # v0.X.Y -> Kubernetes 1.X (as helm's Makefile)
  k8s=${k8s#v0.}; k8s=${k8s%%.*}
  (cd "$src" && "${GO_BUILD[@]}" -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/internal/version.metadata= \
    -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s" \
    -o "$1/helm" helm.sh/helm/v3/cmd/helm)
}

build_versitygw() { # outdir
  local src=$TOOLS_SRC/versitygw
  check_pin "$src" github.com/versity/versitygw "$VERSITYGW_VERSION"
  (cd "$src" && "${GO_BUILD[@]}" -ldflags "-s -w" -o "$1/versitygw" github.com/versity/versitygw/cmd/versitygw)
}

# Module v0.316.0 is Prometheus 3.16.0.
prometheus_release() { local v=${PROMETHEUS_VERSION#v0.}; echo "${v:0:1}.${v:1}"; }

build_prometheus() { # outdir
  local src=$TOOLS_SRC/prometheus
  check_pin "$src" github.com/prometheus/prometheus "$PROMETHEUS_VERSION"
  # Only Kubernetes service discovery: the other discovery plugins (clouds, Consul, ...) are
  # most of the binary and of its build time.
  (cd "$src" && "${GO_BUILD[@]}" -tags remove_all_sd,enable_kubernetes_sd -ldflags "-s -w \
    -X github.com/prometheus/common/version.Version=$(prometheus_release) \
    -X github.com/prometheus/common/version.Branch=module" \
    -o "$1/prometheus" github.com/prometheus/prometheus/cmd/prometheus)
}

build_prometheus-adapter() { # outdir
  local src="" d
  for d in "$HERE/../../shared/third_party/prometheus-adapter" /work/shared/third_party/prometheus-adapter; do
    [[ -z $src && -f $d/go.mod ]] && src=$(cd "$d" && pwd)
  done
  [[ -n $src ]] || die "prometheus-adapter source not found (../shared/third_party/prometheus-adapter next to the checkout)"
  # ../shared is read-only: build in a copy. Its go.mod names Go 1.22; GOTOOLCHAIN=local builds
  # it with this Go. -mod=mod lets go fill in what its go.sum lacks from the module proxy.
  local copy; copy=$(mktemp -d); TMPDIRS+=("$copy")
  cp -r "$src/." "$copy/"
  (cd "$copy" && GOFLAGS="-mod=mod -buildvcs=false" "${GO_BUILD[@]}" -ldflags "-s -w" \
    -o "$1/prometheus-adapter" ./cmd/adapter)
}

build_coredns() { # outdir
  local src=$TOOLS_SRC/coredns
  check_pin "$src" github.com/coredns/coredns "$COREDNS_VERSION"
  (cd "$src" && "${GO_BUILD[@]}" -ldflags "-s -w" -o "$1/coredns" .)
}

TMPDIRS=()
cleanup() { local d; for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

BUILT=()
ensure() { # component version binaries...
  local comp=$1 ver=$2; shift 2
  local dest=$CACHE/$comp-$ver b missing=0
  for b in "$@"; do [[ -x $dest/bin/$b ]] || missing=1; done
  if ((missing == 0)); then
    log "$comp $ver: cached in $dest"
    return
  fi
  local tmp start=$SECONDS
  tmp=$(mktemp -d "$CACHE/.$comp-$ver.tmp.XXXXXX")
  TMPDIRS+=("$tmp")
  chmod 755 "$tmp"; mkdir -p "$tmp/bin"
  log "$comp $ver: building (this can take many minutes on few cores)..."
  "build_$comp" "$tmp/bin"
  for b in "$@"; do [[ -x $tmp/bin/$b ]] || die "$comp $ver: $b missing after build"; done
  printf 'component=%s\nversion=%s\ngo=%s\nbuilt=%s\nseconds=%s\n' "$comp" "$ver" \
    "$(go env GOVERSION)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$((SECONDS - start))" >"$tmp/BUILD_INFO"
  rm -rf "$dest"   # only an outdated/incomplete entry can be here (we hold the lock)
  mv -T "$tmp" "$dest"
  BUILT+=("$comp")
  log "$comp $ver: built in $((SECONDS - start))s -> $dest"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"
rm -rf "$CACHE"/.*.tmp.* # leftovers of builds that were killed hard

ensure versitygw "$VERSITYGW_VERSION" versitygw
if [[ $ONLY == versitygw ]]; then
  echo "$CACHE/versitygw-$VERSITYGW_VERSION/bin/versitygw"
  exit 0
fi
ensure_monitoring() {
  ensure prometheus "$PROMETHEUS_VERSION" prometheus
  ensure prometheus-adapter "$ADAPTER_VERSION" prometheus-adapter
}
if [[ $ONLY == monitoring ]]; then
  ensure_monitoring
  mon=$CACHE/monitoring-bin
  mkdir -p "$mon"
  ln -sfn "$CACHE/prometheus-$PROMETHEUS_VERSION/bin/prometheus" "$mon/prometheus"
  ln -sfn "$CACHE/prometheus-adapter-$ADAPTER_VERSION/bin/prometheus-adapter" "$mon/prometheus-adapter"
  echo "$mon"
  exit 0
fi
ensure kubernetes "$K8S_VERSION" "${K8S_REQUIRED[@]}"
ensure etcd "$ETCD_VERSION" etcd
ensure helm "$HELM_VERSION" helm
ensure coredns "$COREDNS_VERSION" coredns

if [[ -f $CACHE/kubernetes-$K8S_VERSION/OPTIONAL_BUILD_FAILED ]]; then
  log "WARNING: $(cat "$CACHE/kubernetes-$K8S_VERSION/OPTIONAL_BUILD_FAILED") failed to build for $K8S_VERSION" \
    "(delete $CACHE/kubernetes-$K8S_VERSION to retry)"
fi

# Refresh <cache>/bin: symlinks to every binary of the pinned versions, stale links removed.
BIN=$CACHE/bin
mkdir -p "$BIN"
find "$BIN" -mindepth 1 -maxdepth 1 -type l -delete
for d in "$CACHE/kubernetes-$K8S_VERSION/bin" "$CACHE/etcd-$ETCD_VERSION/bin" "$CACHE/helm-$HELM_VERSION/bin" \
  "$CACHE/coredns-$COREDNS_VERSION/bin" "$CACHE/versitygw-$VERSITYGW_VERSION/bin"; do
  for b in "$d"/*; do [[ -x $b ]] && ln -sfn "$b" "$BIN/$(basename "$b")"; done
done

if ((${#BUILT[@]})); then # sanity-check freshly built binaries
  log "sanity check:"
  "$BIN/kube-apiserver" --version >&2
  "$BIN/kubectl" version --client >&2
  "$BIN/etcd" --version >&2
  "$BIN/helm" version --short >&2
  "$BIN/coredns" -version >&2
fi

echo "$BIN"
