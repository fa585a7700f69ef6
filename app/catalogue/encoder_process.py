"""The encoder process: content encoding (MiniLM text, EfficientNet image, open_clip) for
item registrations and queries, outside the request workers (app/catalogue/encoding.py is its client side).

One process per machine (``micrec serve`` starts it before the workers) or per app (an
app started without one, e.g. in tests), with its own torch thread count
(``encoder_threads``), so an encoding neither holds a worker's GIL nor competes with its
recommends for the interpreter. Workers connect over a Unix socket with an auth key
(``multiprocessing.connection``: HMAC challenge, so only processes given the key connect).

Wire format, both directions: ``send_bytes`` frames only, never ``send``/``recv`` (which
pickle): a JSON header, then one raw frame per array or image. A request names the encoder
(a built-in's name or the spec a bundle's record resolved to: model.encoders.records)
and carries a text or an RGB image's pixels; the answer is a float32 vector or an error.
Each connection is served by its own thread; encoders are created once per process
(model.encoders.factory) and shared.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from typing import Any

import numpy as np

log = logging.getLogger("micrec.encoder")


def send_message(conn: Connection, header: dict[str, Any], frames: list[bytes]) -> None:
    conn.send_bytes(json.dumps({**header, "frames": len(frames)}).encode())
    for frame in frames:
        conn.send_bytes(frame)


def recv_message(conn: Connection, max_frame: int) -> tuple[dict[str, Any], list[bytes]]:
    header = json.loads(conn.recv_bytes(max_frame))
    if not isinstance(header, dict):
        raise ValueError("message header is not an object")
    frames = [conn.recv_bytes(max_frame) for _ in range(int(header.get("frames", 0)))]
    return header, frames


def encode_one(header: dict[str, Any], frames: list[bytes]) -> np.ndarray:
    """The encoder's output ([dim] float32) for one request: the same call the worker
    would make in-process (``encoder.encode([input])[0]``)."""
    from model.encoders.records import encoder_from_spec

    spec = header["encoder"]  # a built-in's name or a spec (model.encoders.records)
    encoder = encoder_from_spec(spec if isinstance(spec, dict) else str(spec))
    if header["kind"] == "text":
        value: Any = frames[0].decode("utf-8")
    else:
        from PIL import Image

        width, height = (int(v) for v in header["size"])
        value = Image.frombytes("RGB", (width, height), frames[0])
    return np.ascontiguousarray(encoder.encode([value])[0], dtype=np.float32)


def _serve_connection(conn: Connection, max_frame: int) -> None:
    with conn:
        while True:
            try:
                header, frames = recv_message(conn, max_frame)
            except (EOFError, OSError):
                return
            try:
                vec = encode_one(header, frames)
                send_message(conn, {"ok": True, "dim": int(vec.shape[0])}, [vec.tobytes()])
            except (EOFError, OSError):
                return
            except Exception as err:  # reported to the caller, the process keeps serving
                try:
                    send_message(conn, {"ok": False, "error": f"{type(err).__name__}: {err}"}, [])
                except (EOFError, OSError):
                    return


def _exit_with_parent(parent: int) -> None:
    """End this process when the one that started it is gone (even killed with SIGKILL,
    when multiprocessing's own clean-up of daemon children never runs)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def serve(
    address: str, authkey: bytes, threads: int, max_frame: int, parent: int, nice: int = 0
) -> None:
    """Process entry point: listen on ``address`` until killed or orphaned."""
    if nice:
        try:  # before torch starts its threads, which inherit it
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as err:  # raising priority needs CAP_SYS_NICE
            log.warning("encoder process priority %d not set: %s", nice, err)
    import torch

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with Listener(address, family="AF_UNIX", authkey=authkey) as listener:
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError, AuthenticationError):  # failed the auth challenge
                continue
            threading.Thread(target=_serve_connection, args=(conn, max_frame), daemon=True).start()
