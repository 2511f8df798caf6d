"""A one-binary OCI image archive (the node's pause image), written without a registry or a
container engine: a layer tar, a config and a manifest in an OCI image layout, as a tar that
`ctr images import` reads."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def _blob(archive: tarfile.TarFile, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    _add(archive, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    archive.addfile(info, io.BytesIO(data))


def single_binary_image(binary: Path, reference: str, archive_path: Path) -> Path:
    """`reference` (registry/name:tag) holding only `binary` as /pause, its entrypoint."""
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w") as layer:
        _add(layer, "pause", binary.read_bytes(), mode=0o755)
    layer_bytes = layer_buffer.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"]},
        },
        sort_keys=True,
    ).encode()
    with tarfile.open(archive_path, mode="w") as archive:
        layer_desc = _blob(archive, layer_bytes)
        config_desc = _blob(archive, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
            },
            sort_keys=True,
        ).encode()
        manifest_desc = _blob(archive, manifest)
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_desc,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": reference,
                        "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[1],
                    },
                }
            ],
        }
        _add(archive, "index.json", json.dumps(index, sort_keys=True).encode())
        _add(archive, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    return archive_path
