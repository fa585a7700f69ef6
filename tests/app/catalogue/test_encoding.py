"""The encoder process (app/catalogue/encoding.py, app/catalogue/encoder_process.py): the same vectors as
in-process encoding, and every failure a prompt 503 (process down, dying, slow, busy)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.api.errors import Unavailable
from app.catalogue.encoding import EncoderClient
from model.encoders.factory import create_encoder

TEXT = "Red enamel mug 350 ml. kitchen > drinkware. Dishwasher safe, stackable."


def photo(seed: int = 0, size: tuple[int, int] = (300, 200)) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture(scope="module")
def client() -> Iterator[EncoderClient]:
    c = EncoderClient.own_process(threads=1, timeout_s=120, max_pending=4)
    yield c
    c.close()


def test_vectors_equal_in_process_encoding(client: EncoderClient) -> None:
    import torch

    torch.set_num_threads(1)  # the process's budget; same kernels -> same floats
    for name, value in (("minilm-l6-v2", TEXT), ("efficientnet-lite0", photo())):
        local = create_encoder(name).encode([value])
        remote = client.encoder(name).encode([value])
        assert remote.dtype == np.float32 and remote.shape == local.shape
        np.testing.assert_array_equal(remote, local.astype(np.float32))


def test_a_dead_process_is_a_503_then_it_is_restarted(client: EncoderClient) -> None:
    sup = client.supervisor
    assert sup is not None and sup.pid is not None
    want = client.encode("minilm-l6-v2", TEXT)  # the process is up and holds a connection
    os.kill(sup.pid, signal.SIGKILL)
    time.sleep(0.2)
    with pytest.raises(Unavailable, match="content encoder") as err:
        client.encode("minilm-l6-v2", TEXT)
    assert err.value.status_code == 503 and "Retry-After" in err.value.headers
    deadline = time.monotonic() + 60
    while True:  # a new process within a few seconds; requests meanwhile are 503s
        try:
            got = client.encode("minilm-l6-v2", TEXT)
            break
        except Unavailable:
            assert time.monotonic() < deadline, "encoder process not restarted"
            time.sleep(0.2)
    assert sup.restarts == 1
    np.testing.assert_array_equal(got, want)


def test_slow_answer_is_a_503_and_does_not_leak_into_the_next_call(
    client: EncoderClient,
) -> None:
    impatient = EncoderClient(client.address, client.authkey, timeout_s=0.001, max_pending=2)
    with pytest.raises(Unavailable, match="did not answer within"):
        impatient.encode("efficientnet-lite0", photo(1, (900, 900)))
    impatient.timeout_s = 120
    np.testing.assert_array_equal(
        impatient.encode("minilm-l6-v2", TEXT), client.encode("minilm-l6-v2", TEXT)
    )
    impatient.close()


def test_a_full_queue_is_a_503_at_once(client: EncoderClient) -> None:
    busy = EncoderClient(client.address, client.authkey, timeout_s=120, max_pending=1)
    assert busy._slots.acquire(blocking=False)  # one encoding in flight
    # "At once" = without waiting for the held slot: the call must end while the slot is
    # still held (a call that waited would only end after the release below).
    errors: list[BaseException] = []

    def call() -> None:
        try:
            busy.encode("minilm-l6-v2", TEXT)
        except BaseException as err:
            errors.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    caller.join(30)
    ended_while_held = not caller.is_alive()
    busy._slots.release()
    caller.join()
    assert ended_while_held
    assert len(errors) == 1 and isinstance(errors[0], Unavailable)
    assert "already being encoded" in str(errors[0])
    assert busy.encode("minilm-l6-v2", TEXT).shape == (384,)


def test_encoder_errors_are_value_errors_and_a_wrong_key_is_refused(
    client: EncoderClient,
) -> None:
    with pytest.raises(ValueError, match="unknown encoder"):
        client.encode("no-such-encoder", TEXT)
    stranger = EncoderClient(client.address, b"x" * 32, timeout_s=5, max_pending=1)
    with pytest.raises(Exception):  # noqa: B017 - AuthenticationError or a 503
        stranger.encode("minilm-l6-v2", TEXT)
    assert client.encode("minilm-l6-v2", TEXT).shape == (384,)  # still serving


def test_the_process_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed with SIGKILL runs no clean-up; the orphaned encoder must not live on."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "from app.catalogue.encoding import EncoderSupervisor\n"
        "if __name__ == '__main__':  # the spawned child imports this file too\n"
        "    sup = EncoderSupervisor(1)\n"
        "    sup.start()\n"
        "    print(sup.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[3]
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60  # it checks its parent once a second; a busy box
    while alive(child):
        assert time.monotonic() < deadline, "orphaned encoder process still running"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """Running (an exited process not yet reaped by init is a zombie: not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class CountingEncoder:
    """FAKE encoder: records each ``encode`` call's batch; "bad" inputs raise."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()

    def encode(self, inputs: list[str], **_: object) -> np.ndarray:
        self.gate.wait(10)  # hold the first batch so the others queue up behind it
        self.calls.append(list(inputs))
        if "bad" in inputs:
            raise ValueError("cannot encode 'bad'")
        return np.array([[float(len(x)), 1.0] for x in inputs], dtype=np.float32)


def test_waiting_requests_are_encoded_as_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.catalogue import encoder_process
    from model.encoders import records

    fake = CountingEncoder()
    monkeypatch.setattr(records, "encoder_from_spec", lambda spec: fake)
    batcher = encoder_process.Batcher()
    texts = ["a", "bb", "bad", "dddd", "eeeee"]
    results: dict[str, object] = {}

    def ask(text: str) -> None:
        header = {"encoder": "minilm-l6-v2", "kind": "text"}
        try:
            results[text] = batcher.encode(header, [text.encode()])
        except ValueError as err:
            results[text] = err

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    deadline = time.monotonic() + 10
    while not batcher._queues or any(batcher._queues.values()):  # the first one is taken
        assert time.monotonic() < deadline
        time.sleep(0.01)
    others = [threading.Thread(target=ask, args=(t,)) for t in texts]
    for t in others:
        t.start()
    while len(batcher._queues[next(iter(batcher._queues))]) < len(texts):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    fake.gate.set()
    for t in [first, *others]:
        t.join(10)
    assert fake.calls[0] == ["first"]
    assert sorted(fake.calls[1]) == sorted(texts)  # everything that waited: one call
    # the batch failed on "bad": retried one by one, only "bad" gets the error
    assert isinstance(results["bad"], ValueError)
    for text in ["first", *texts]:
        if text != "bad":
            np.testing.assert_array_equal(results[text], [float(len(text)), 1.0])
