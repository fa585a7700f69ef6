"""Constants and small helpers shared by the serving benchmark's modules (bench/serve.py)
and the scripts built from its parts (bench/serve_ab.py, bench/recommend_inprocess.py).

Importing this module puts the repository root on ``sys.path`` (unless ``PYTHONPATH``
says which source tree to use), so the other modules can import ``app`` and ``model``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if "PYTHONPATH" not in os.environ and str(ROOT) not in sys.path:
    # (Processes started by the benchmark get PYTHONPATH = the source tree under test.)
    sys.path.insert(0, str(ROOT))

API_KEY = "bench-serve-key-0123456789"
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MICREC_TORCH_THREADS": "1",
    "MICREC_FAISS_THREADS": "1",
}
RECOMMEND_TYPES = ("known", "inductive", "cross")
REGISTER_TYPES = ("reg_text", "reg_image")
TYPES = RECOMMEND_TYPES + REGISTER_TYPES
PAD_SEED = 0
HISTORY_LEN = 20
STORED_PER_USER = 5


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fmt_n(n: int) -> str:
    e = round(float(np.log10(n)))
    return f"1e{e}" if 10**e == n else f"{n:,}"
