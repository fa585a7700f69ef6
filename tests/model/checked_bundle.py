"""A stand-in bundle for registry tests: passes ``model.bundle.verify_bundle`` (manifest
of the current format, sha256 of every listed file) without training anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def make_bundle(directory: Path, *, version: str = "m-1", files: int = 3) -> Path:
    """A directory that passes ``verify_bundle``: manifest + the files it lists."""
    directory.mkdir(parents=True)
    names = ["weights.safetensors", "catalogue.json", *[f"domain-{k}.bin" for k in range(files)]]
    sums = {}
    for k, name in enumerate(names):
        data = f"{version}:{name}:{k}".encode() * 100
        (directory / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    manifest = {
        "format_version": 1,
        "model_version": version,
        "domain_files": {f"d{k}": f"domain-{k}.bin" for k in range(files)},
        "sha256": sums,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory
