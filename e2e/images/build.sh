#!/usr/bin/env bash
# Build vecshard's images as image archives without Docker (no engine, no registry needed):
#
#   bash e2e/images/build.sh OUTDIR [TARGET_DIR]
#
# writes OUTDIR/{vecshard-server,vecshard-operator,pause}.tar, each importable with
# `ctr -n k8s.io images import` (e2e/run.sh node) or `kind load image-archive`:
#   docker.io/vecshard/vecshard-server:e2e and :e2e-next   (same content; the suite's rolling update)
#   docker.io/vecshard/vecshard-operator:e2e
#   registry.k8s.io/pause:e2e                               (the pod sandbox image)
# The binaries come from TARGET_DIR (default target/debug: the build `cargo test` already made;
# dependencies are optimised there, see Cargo.toml). A rootfs holds the binary, exactly the
# shared libraries `ldd` lists (libstdc++ for usearch, glibc), and /etc/passwd with the
# non-root user 65532 the operator's pods run as. The pause image is Kubernetes' own pause.c
# (from the k8s.io/kubernetes module e2e/tools.sh already downloaded), linked statically;
# VECSHARD_IMAGES_NO_PAUSE=1 skips it.
set -euo pipefail

out=${1:?usage: build.sh OUTDIR [TARGET_DIR]}
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${2:-$root/target/debug}
mkdir -p "$out"
work=$(mktemp -d /tmp/vecshard-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

rootfs() { # dir binaries... : a minimal root filesystem running the binaries as user 65532
  local dir=$1 bin lib; shift
  mkdir -p "$dir"/{etc,tmp,usr/local/bin}
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > "$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$dir/etc/group"
  printf 'hosts: files dns\n' > "$dir/etc/nsswitch.conf"
  for bin in "$@"; do
    # Debug info is most of a debug binary's size; the image does not need it.
    objcopy --strip-debug "$bin" "$dir/usr/local/bin/$(basename "$bin")"
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
      mkdir -p "$dir/$(dirname "$lib")"
      cp -L "$lib" "$dir/$lib"
    done
  done
}

pack() { python3 "$root/e2e/images/oci.py" "$@"; }

rootfs "$work/server" "$target/vecshard-server" "$target/vecshardctl"
pack "$work/server" "$out/vecshard-server.tar" --entrypoint /usr/local/bin/vecshard-server \
  --user 65532:65532 --tag docker.io/vecshard/vecshard-server:e2e \
  --tag docker.io/vecshard/vecshard-server:e2e-next

rootfs "$work/operator" "$target/vecshard-operator"
pack "$work/operator" "$out/vecshard-operator.tar" --entrypoint /usr/local/bin/vecshard-operator \
  --user 65532:65532 --tag docker.io/vecshard/vecshard-operator:e2e

# kind brings its own pause image: e2e/kind.sh sets VECSHARD_IMAGES_NO_PAUSE=1 (no Go needed).
if [ -n "${VECSHARD_IMAGES_NO_PAUSE:-}" ]; then
  ls -l "$out"/*.tar >&2
  exit 0
fi
pause_c=$(cd "$root/e2e/tools/kubernetes" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
mkdir -p "$work/pause"
gcc -Os -static -DVERSION=e2e -o "$work/pause/pause" "$pause_c"
strip "$work/pause/pause"
pack "$work/pause" "$out/pause.tar" --entrypoint /pause --user 65535:65535 \
  --tag registry.k8s.io/pause:e2e

ls -l "$out"/*.tar >&2
