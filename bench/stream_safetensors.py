"""A safetensors file written a chunk at a time: the header first (every tensor's dtype,
shape and byte range), then each tensor's bytes filled through a writable memory map.

``safetensors.torch.save_file`` needs every tensor in memory at once; the padded benchmark
bundles at 1e7 items hold ~18 GB of per-item tensors per domain, so they are written here
row range by row range instead. The layout is the one the format specifies and
``safetensors`` itself writes (8-byte little-endian header length, JSON header padded with
spaces to a multiple of 8, tensors contiguous in order of decreasing alignment, then name),
and the files are read back by the maintained library (``safe_open`` / ``load_file``, the
bundle loader's path), which checks that layout when it opens them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64", np.dtype("float16"): "F16"}


class SafetensorsWriter:
    """``specs``: name -> (numpy dtype, shape). The file is created at its full size;
    :meth:`array` maps one tensor's bytes for writing (rows may be filled in any order)."""

    def __init__(self, path: Path, specs: Mapping[str, tuple[np.dtype | str, tuple[int, ...]]]):
        self.path = Path(path)
        self.specs = {
            k: (np.dtype(dt), tuple(int(x) for x in shape)) for k, (dt, shape) in specs.items()
        }
        order = sorted(self.specs, key=lambda k: (-self.specs[k][0].itemsize, k))
        header: dict[str, dict[str, object]] = {}
        self.offsets: dict[str, int] = {}
        pos = 0
        for name in order:
            dt, shape = self.specs[name]
            if dt not in DTYPES:
                raise ValueError(f"{name}: dtype {dt} not supported here")
            size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            header[name] = {
                "dtype": DTYPES[dt],
                "shape": list(shape),
                "data_offsets": [pos, pos + size],
            }
            self.offsets[name] = pos
            pos += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.data_start = 8 + len(raw)
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            f.truncate(self.data_start + pos)

    def array(self, name: str) -> np.memmap:
        """The tensor ``name`` as a writable memory map of its bytes in the file."""
        dt, shape = self.specs[name]
        if 0 in shape:  # nothing to map (np.memmap refuses a zero-length map)
            return np.empty(shape, dtype=dt).view(np.memmap)
        return np.memmap(
            self.path, dtype=dt, mode="r+", offset=self.data_start + self.offsets[name], shape=shape
        )

    def write(self, name: str, value: np.ndarray) -> None:
        """A whole (small) tensor at once."""
        out = self.array(name)
        out[...] = value
        out.flush()
