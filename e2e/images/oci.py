#!/usr/bin/env python3
"""Pack a root filesystem directory into an image archive, without Docker.

    oci.py ROOTFS OUT.tar --tag docker.io/vecshard/vecshard-server:e2e [--tag …]
           --entrypoint /usr/local/bin/vecshard-server [--user 65532:65532] [--env K=V …]

The archive has the layout `docker save` writes since Docker 25: an OCI image layout
(`oci-layout`, `index.json`, `blobs/sha256/…`) plus the legacy `manifest.json`, so both
`ctr -n k8s.io images import` and `kind load image-archive` take it. One uncompressed layer;
every entry has owner root, mtime 0 and sorted names, so the same rootfs gives the same digest.
"""
import argparse
import hashlib
import io
import json
import os
import stat
import tarfile


def layer_tar(rootfs: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = os.path.join(dirpath, name)
                arcname = os.path.relpath(path, rootfs)
                info = tar.gettarinfo(path, arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if stat.S_ISREG(os.lstat(path).st_mode):
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rootfs")
    p.add_argument("out")
    p.add_argument("--tag", action="append", required=True,
                   help="full reference, e.g. docker.io/vecshard/vecshard-server:e2e")
    p.add_argument("--entrypoint", required=True)
    p.add_argument("--user", default="")
    p.add_argument("--env", action="append", default=[])
    a = p.parse_args()

    blobs = {}

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    layer = layer_tar(a.rootfs)
    layer_digest = blob(layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": [a.entrypoint],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + a.env,
            "User": a.user,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "vecshard e2e/images/oci.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = blob(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "annotations": {"io.containerd.image.name": tag,
                            "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1]},
        } for tag in a.tag],
    }
    path = lambda d: "blobs/sha256/" + d.split(":")[1]
    docker_manifest = [{"Config": path(config_digest),
                        "RepoTags": [t.removeprefix("docker.io/") for t in a.tag],
                        "Layers": [path(layer_digest)]}]
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
        "manifest.json": json.dumps(docker_manifest).encode(),
    }
    files.update({path(d): data for d, data in blobs.items()})
    with tarfile.open(a.out, "w") as tar:
        for name in ["blobs", "blobs/sha256"]:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
