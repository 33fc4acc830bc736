#!/usr/bin/env python3
"""Seed corpora for the layer_apply and archive_load fuzz targets.

Writes fuzz/corpus/layer_apply/* and fuzz/corpus/archive_load/*: small layers
with every entry type and the hostile shapes the targets watch for (names and
links leaving the root, whiteouts, PAX and GNU long names, devices), and
docker-archive / OCI archive tars. The first byte of each seed is the target's
mode byte (see the targets' doc comments). Run from the repository root.
"""
import hashlib
import io
import json
import os
import tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def tar_of(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            kind, name = e[0], e[1]
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            data = b""
            if kind == "file":
                data = e[2]
                ti.size = len(data)
                ti.mode = 0o644
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = e[2] if len(e) > 2 else 0o755
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e[2]
            elif kind == "hard":
                ti.type = tarfile.LNKTYPE
                ti.linkname = e[2]
            elif kind == "chr":
                ti.type = tarfile.CHRTYPE
                ti.devmajor, ti.devminor = 1, 3
            elif kind == "blk":
                ti.type = tarfile.BLKTYPE
                ti.devmajor, ti.devminor = 7, 0
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            if len(e) > 3 and isinstance(e[3], dict):
                ti.pax_headers = e[3]
            t.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


LAYERS = {
    "plain": [("dir", "etc"), ("file", "etc/hostname", b"box\n"), ("sym", "bin", "usr/bin"),
              ("dir", "usr"), ("dir", "usr/bin"), ("file", "usr/bin/sh", b"#!")],
    "rel_symlink_escape": [("sym", "up", "../outside"), ("file", "up/file", b"pwn")],
    "abs_symlink_escape": [("sym", "abs", "/tmp/kiln-fuzz-outside"), ("file", "abs/file", b"pwn"),
                           ("dir", "abs/sub"), ("file", "abs/sub/new", b"pwn")],
    "dotdot_names": [("file", "../outside/file", b"pwn"), ("file", "a/../../outside/x", b"pwn")],
    "hardlink_escape": [("hard", "h", "../outside/file"), ("sym", "s", "/tmp/kiln-fuzz-outside/file"),
                        ("hard", "h2", "s")],
    "whiteouts": [("dir", "d"), ("file", "d/a", b"a"), ("file", "d/.wh.a", b""),
                  ("file", "d/.wh..wh..opq", b""), ("sym", "w", "../outside"),
                  ("file", "w/.wh.file", b""), ("file", "w/.wh..wh..opq", b""), ("file", ".wh...", b"")],
    "pax": [("file", "x" * 150 + "/long", b"long", {"SCHILY.xattr.user.k": "v", "mtime": "1.5"}),
            ("sym", "l" * 120, "t" * 200), ("file", "p", b"p", {"path": "../outside/file"})],
    "specials": [("chr", "dev/null"), ("blk", "dev/loop0"), ("fifo", "run/fifo"),
                 ("dir", "ro", 0o555), ("file", "ro/f", b"x"), ("dir", "none", 0o000)],
    "replace": [("dir", "a"), ("file", "a/b", b"1"), ("file", "a", b"now a file"),
                ("sym", "a", "b"), ("dir", "a"), ("hard", "c", "a")],
}


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


for name, entries in LAYERS.items():
    t = tar_of(entries)
    write("layer_apply", name, bytes([0]) + t)
    write("layer_apply", name + "-gzip-overlay", bytes([3]) + t)
    write("layer_apply", name + "-gnu", bytes([4]) + tar_of(entries, tarfile.GNU_FORMAT)
          if name != "pax" else bytes([4]) + t)


def file_tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for path, data in files:
            if isinstance(data, tuple):  # symlink
                ti = tarfile.TarInfo(path)
                ti.type = tarfile.SYMTYPE
                ti.linkname = data[1]
                t.addfile(ti)
                continue
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


layer = tar_of(LAYERS["plain"])
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": [sha(layer), sha(layer)]}},
                    separators=(",", ":")).encode()
docker = file_tar([
    ("111/layer.tar", layer), ("222/layer.tar", ("sym", "../111/layer.tar")),
    ("cfg.json", config),
    ("manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": ["fuzz:1"],
                                   "Layers": ["111/layer.tar", "222/layer.tar"]}]).encode()),
    ("repositories", b'{"fuzz":{"1":"222"}}'),
])
write("archive_load", "docker-archive", bytes([0]) + docker)
write("archive_load", "docker-archive-gzip", bytes([2]) + docker)

manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
               "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer),
                "size": len(layer)}] * 2,
}, separators=(",", ":")).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
    "size": len(manifest),
    "annotations": {"io.containerd.image.name": "docker.io/library/fuzz:2",
                    "org.opencontainers.image.ref.name": "2"}}]}).encode()
oci = file_tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)] +
               [("blobs/sha256/" + sha(b)[7:], b) for b in (manifest, config, layer)])
write("archive_load", "oci-archive", bytes([0]) + oci)
docker_names = json.dumps([{"Config": "blobs/sha256/" + sha(config)[7:], "RepoTags": ["fuzz:3"],
                             "Layers": ["blobs/sha256/" + sha(layer)[7:]] * 2}]).encode()
write("archive_load", "oci-archive-with-docker-manifest", bytes([1]) + file_tar(
    [("manifest.json", docker_names), ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
     ("index.json", index)] + [("blobs/sha256/" + sha(b)[7:], b) for b in (manifest, config, layer)]))
write("archive_load", "empty-manifest", bytes([0]) + file_tar([("manifest.json", b"[]")]))
