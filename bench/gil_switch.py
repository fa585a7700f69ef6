"""Experiment: how long does content encoding take next to a busy Python thread, by GIL
switch interval?

    python bench/gil_switch.py [--bundle artifacts/demo-bundle] [--repeats 15]

Every torch call releases the GIL and has to win it back. When another thread runs pure
Python (as a saturated event loop does), each hand-back waits up to the switch interval
(``sys.setswitchinterval``, 5 ms by default), and an encoder forward makes hundreds of
them. This times ``InferenceEngine.encode_content`` (text + a 512x512 image, 1 torch
thread) alone and next to one spinning Python thread at 5 / 1 / 0.5 ms and prints p50/p90.

Result (2026-11-23, 2-core AMD EPYC, quiet): alone 65-70 ms at every interval; next to a
busy thread 1,300 ms (5 ms), 367 ms (1 ms), 234 ms (0.5 ms). The service sets 1 ms
(``MICREC_GIL_SWITCH_INTERVAL_MS``); docs/results/serve-steps has the server-level runs.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.lifecycle.engine import load_engine  # noqa: E402


def spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(2000))  # pure Python: holds the GIL between checks


def measure(engine: object, image: Image.Image, interval_s: float, busy: int, repeats: int) -> str:
    sys.setswitchinterval(interval_s)
    stop = threading.Event()
    threads = [threading.Thread(target=spin, args=(stop,)) for _ in range(busy)]
    for t in threads:
        t.start()
    times = []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            engine.encode_content(text="a red ceramic coffee mug", image=image)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - t0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    ms = np.asarray(times) * 1000
    return (
        f"switch interval {interval_s * 1000:.1f} ms, {busy} busy thread(s): "
        f"p50 {np.percentile(ms, 50):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--bundle", default=str(ROOT / "artifacts" / "demo-bundle"))
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    engine = load_engine(Path(args.bundle))
    image = Image.new("RGB", (512, 512), "gray")
    for _ in range(3):  # load and warm the encoders
        engine.encode_content(text="warm-up", image=image)
    for interval_s in (0.005, 0.001, 0.0005):
        for busy in (0, 1):
            print(measure(engine, image, interval_s, busy, args.repeats), flush=True)


if __name__ == "__main__":
    main()
