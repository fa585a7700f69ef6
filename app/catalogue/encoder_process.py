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
Each connection is served by its own thread; the requests waiting for the same encoder
at the same moment are encoded as one batch (:class:`Batcher`); encoders are created once
per process (model.encoders.factory) and shared.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
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


def decode_input(header: dict[str, Any], frames: list[bytes]) -> Any:
    """The text (str) or RGB image a request carries."""
    if header["kind"] == "text":
        return frames[0].decode("utf-8")
    from PIL import Image

    width, height = (int(v) for v in header["size"])
    return Image.frombytes("RGB", (width, height), frames[0])


@dataclass
class _Pending:
    value: Any
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: Exception | None = None


class Batcher:
    """The requests waiting for one encoder at the same moment, encoded as one batch.

    One thread per (encoder, kind) takes everything queued (at most ``max_batch``) and
    makes one ``encode`` call: a text forward for 8 short texts costs about a third of 8
    single ones per text (docs/results/query-start.md), which is what lets concurrent
    queries and registrations of every worker share the process. A request alone is a
    batch of one: ``encoder.encode([input])``, the call a worker makes in-process. A batch
    that fails is retried one request at a time, so only the request at fault gets the
    error.
    """

    def __init__(self, max_batch: int = 32) -> None:
        self.max_batch = max_batch
        self._cv = threading.Condition()
        self._queues: dict[str, list[_Pending]] = {}
        self._threads: dict[str, threading.Thread] = {}

    def encode(self, header: dict[str, Any], frames: list[bytes]) -> np.ndarray:
        key = json.dumps([header["encoder"], header["kind"]], sort_keys=True)
        pending = _Pending(decode_input(header, frames))
        with self._cv:
            self._queues.setdefault(key, []).append(pending)
            if key not in self._threads:
                spec = header["encoder"]
                t = threading.Thread(target=self._run, args=(key, spec), daemon=True)
                self._threads[key] = t
                t.start()
            self._cv.notify_all()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _run(self, key: str, spec: Any) -> None:
        from model.encoders.records import encoder_from_spec

        encoder: Any = None
        while True:
            with self._cv:
                while not self._queues[key]:
                    self._cv.wait()
                batch = self._queues[key][: self.max_batch]
                del self._queues[key][: self.max_batch]
            try:
                if encoder is None:
                    encoder = encoder_from_spec(spec if isinstance(spec, dict) else str(spec))
                values = [p.value for p in batch]
                out = encoder.encode(values, batch_size=len(values))
                for p, vec in zip(batch, out, strict=True):
                    p.result = np.ascontiguousarray(vec, dtype=np.float32)
            except Exception as err:
                if encoder is None or len(batch) == 1:
                    for p in batch:
                        p.error = err
                else:
                    for p in batch:  # one bad input must not fail the others
                        try:
                            one = encoder.encode([p.value])[0]
                            p.result = np.ascontiguousarray(one, dtype=np.float32)
                        except Exception as single:
                            p.error = single
            finally:
                for p in batch:
                    p.done.set()


def _serve_connection(conn: Connection, max_frame: int, batcher: Batcher) -> None:
    with conn:
        while True:
            try:
                header, frames = recv_message(conn, max_frame)
            except (EOFError, OSError):
                return
            try:
                vec = batcher.encode(header, frames)
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
    batcher = Batcher()
    with Listener(address, family="AF_UNIX", authkey=authkey) as listener:
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError, AuthenticationError):  # failed the auth challenge
                continue
            args = (conn, max_frame, batcher)
            threading.Thread(target=_serve_connection, args=args, daemon=True).start()
