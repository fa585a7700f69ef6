"""Content encoding for registrations, off the request workers (the worker side).

:class:`EncoderSupervisor` starts the encoder process (app/catalogue/encoder_process.py) and starts
it again when it dies. :class:`EncoderClient` is a worker's handle on it: the engine asks
it for encoders by spec (``InferenceEngine(encoder_provider=client.encoder)``) and gets
:class:`RemoteEncoder` objects with the ``encode([input])`` call of a local encoder, so
which modalities are encoded, and how the outputs are used, stays the engine's decision
and the results are the in-process ones (tests/app/catalogue/test_encoding.py).

Bounded and never hanging: at most ``encoder_queue`` encodings per worker wait for or run
in the process (one more is a 503 at once); an answer that takes longer than
``encoder_timeout_s``, a process that is down or restarting, or one that dies mid-request
are 503s with Retry-After, never a blocked worker thread.

``micrec serve`` starts one process per machine before the workers and hands its address
and key to them in the environment (:data:`ADDRESS_ENV`, :data:`KEY_ENV`); an app started
without them (tests, an embedded app) starts its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import numpy as np

from app.api.errors import Unavailable
from app.catalogue.encoder_process import recv_message, send_message, serve
from app.settings import Settings
from model.encoders.records import EncoderSpec

log = logging.getLogger("micrec.service")

ADDRESS_ENV = "MICREC_ENCODER_ADDRESS"
KEY_ENV = "MICREC_ENCODER_KEY"
"""Set by ``micrec serve`` for its workers (not settings: an address and a secret)."""

MAX_FRAME = 64 * 1024 * 1024
"""Largest message frame: an RGB image of the largest accepted size fits."""


class EncoderSupervisor:
    """Runs the encoder process and restarts it when it exits (checked twice a second)."""

    def __init__(self, threads: int, nice: int = -5) -> None:
        self.threads = threads
        self.nice = nice
        # created (mode 0700: only this user can connect) when the process is started
        self._dir = Path(tempfile.gettempdir()) / f"micrec-encoder-{secrets.token_hex(8)}"
        self.address = str(self._dir / "encoder.sock")
        self.authkey = secrets.token_bytes(32)
        self._proc: Any = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.restarts = 0

    def start(self, wait_s: float = 120.0) -> None:
        """Start the process and wait until it listens (at most ``wait_s``: importing torch
        on a busy machine takes a while; a process that dies meanwhile ends the wait)."""
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="micrec-encoder", daemon=True)
        self._monitor.start()
        deadline = time.monotonic() + wait_s
        while not Path(self.address).exists() and time.monotonic() < deadline:
            if not self._proc.is_alive():
                break
            time.sleep(0.02)

    @property
    def started(self) -> bool:
        return self._proc is not None

    def _spawn(self) -> None:
        self._dir.mkdir(mode=0o700, exist_ok=True)
        Path(self.address).unlink(missing_ok=True)
        ctx = multiprocessing.get_context("spawn")
        self._proc = ctx.Process(
            target=serve,
            args=(self.address, self.authkey, self.threads, MAX_FRAME, os.getpid(), self.nice),
            name="micrec-encoder",
            daemon=True,
        )
        self._proc.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            if self._proc is not None and not self._proc.is_alive():
                log.error("encoder process exited (%s); restarting it", self._proc.exitcode)
                self.restarts += 1
                self._spawn()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def env(self) -> dict[str, str]:
        """What a worker process needs to connect."""
        return {ADDRESS_ENV: self.address, KEY_ENV: self.authkey.hex()}

    def stop(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)


class EncoderClient:
    """A worker's connections to the encoder process (one per concurrent encoding)."""

    def __init__(
        self,
        address: str,
        authkey: bytes,
        *,
        timeout_s: float,
        max_pending: int,
        supervisor: EncoderSupervisor | None = None,
    ) -> None:
        self.address = address
        self.authkey = authkey
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.supervisor = supervisor
        """Set when this client owns the process: started on the first encoding (an app
        that never encodes, e.g. over a test engine, never starts one)."""
        self._slots = threading.BoundedSemaphore(max_pending)
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def own_process(
        cls, *, threads: int, timeout_s: float, max_pending: int, nice: int = -5
    ) -> EncoderClient:
        sup = EncoderSupervisor(threads, nice)
        return cls(
            sup.address, sup.authkey, timeout_s=timeout_s, max_pending=max_pending, supervisor=sup
        )

    @classmethod
    def from_env(cls, *, timeout_s: float, max_pending: int) -> EncoderClient | None:
        address, key = os.environ.get(ADDRESS_ENV), os.environ.get(KEY_ENV)
        if not address or not key:
            return None
        return cls(address, bytes.fromhex(key), timeout_s=timeout_s, max_pending=max_pending)

    def encoder(self, spec: EncoderSpec) -> RemoteEncoder:
        """The engine's encoder provider: a stand-in for ``encoder_from_spec(spec)``."""
        return RemoteEncoder(self, spec)

    def _connect(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self.supervisor is not None and not self.supervisor.started:
                self.supervisor.start()
        try:
            return Client(self.address, family="AF_UNIX", authkey=self.authkey)
        except (OSError, EOFError) as err:
            raise Unavailable(
                f"the content encoder is not running (restarting?): {type(err).__name__}; "
                "retry shortly",
                retry_after_s=2,
            ) from None

    def encode(self, spec: EncoderSpec, value: Any) -> np.ndarray:
        """The output of ``spec``'s encoder for one text (str) or RGB image: [dim] float32."""
        if isinstance(value, str):
            header: dict[str, Any] = {"encoder": spec, "kind": "text"}
            frames = [value.encode("utf-8")]
        else:
            image = value if value.mode == "RGB" else value.convert("RGB")
            header = {"encoder": spec, "kind": "image", "size": list(image.size)}
            frames = [image.tobytes()]
        if not self._slots.acquire(blocking=False):
            raise Unavailable(
                f"{self.max_pending} registrations are already being encoded by this worker "
                "(encoder_queue); retry shortly",
                retry_after_s=1,
            )
        try:
            return self._call(header, frames)
        finally:
            self._slots.release()

    def _call(self, header: dict[str, Any], frames: list[bytes]) -> np.ndarray:
        conn = self._connect()
        deadline = time.monotonic() + self.timeout_s
        try:
            send_message(conn, header, frames)
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                conn.close()  # the late answer must not reach the next caller
                raise Unavailable(
                    f"the content encoder did not answer within {self.timeout_s:g} s "
                    "(encoder_timeout_s); retry shortly",
                    retry_after_s=2,
                )
            answer, out = recv_message(conn, MAX_FRAME)
        except (OSError, EOFError):
            conn.close()
            raise Unavailable(
                "the content encoder stopped during the request (restarting); retry shortly",
                retry_after_s=2,
            ) from None
        with self._lock:
            self._idle.append(conn)
        if not answer.get("ok"):
            raise ValueError(str(answer.get("error", "encoding failed"))[:300])
        return np.frombuffer(out[0], dtype=np.float32).copy()

    def close(self) -> None:
        """Close the connections (and stop the process if this client owns it)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self.supervisor is not None:
            self.supervisor.stop()


def encoder_client(settings: Settings) -> EncoderClient | None:
    """The service's encoder client: the machine's process named in the environment (set
    by ``micrec serve``), else a process of this app's own; None with encoder_process off."""
    if not settings.encoder_process:
        return None
    kw: dict[str, Any] = {
        "timeout_s": settings.encoder_timeout_s,
        "max_pending": settings.encoder_queue,
    }
    return EncoderClient.from_env(**kw) or EncoderClient.own_process(
        threads=settings.encoder_threads, nice=settings.encoder_nice, **kw
    )


class RemoteEncoder:
    """``encode(inputs)`` of a local encoder, run by the encoder process."""

    def __init__(self, client: EncoderClient, spec: EncoderSpec) -> None:
        self.client = client
        self.spec = spec

    def encode(self, inputs: Sequence[Any], **_: Any) -> np.ndarray:
        return np.stack([self.client.encode(self.spec, x) for x in inputs])
