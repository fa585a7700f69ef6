"""The bundle registry (model/registry.py): versions, the current pointer, history,
rollback order, refusals, the lock, and crash safety with real SIGKILLed processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from model.registry import BundleRegistry, RegistryError, UnusableVersion
from tests.model.checked_bundle import make_bundle

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(tmp_path: Path) -> BundleRegistry:
    return BundleRegistry(tmp_path / "registry")


@pytest.fixture
def three(registry: BundleRegistry, tmp_path: Path) -> list[str]:
    return [
        registry.add(make_bundle(tmp_path / f"src-{k}", version=f"m-{k}"), meta={"k": k})
        for k in range(3)
    ]


def statuses(registry: BundleRegistry) -> dict[str, str]:
    return {v.version: v.status for v in registry.list()}


def test_add_copies_a_complete_bundle_as_the_next_version(
    registry: BundleRegistry, tmp_path: Path
) -> None:
    src = make_bundle(tmp_path / "src", version="m-a")
    v1 = registry.add(src, meta={"source": "test"})
    v2 = registry.add(src)
    assert (v1, v2) == ("v0001", "v0002")
    info = registry.show(v1)
    assert info.status == "candidate" and info.model_version == "m-a"
    assert info.meta == {"source": "test"}
    assert sorted(p.name for p in registry.path(v1).iterdir()) == sorted(
        p.name for p in src.iterdir()
    )
    assert registry.current() is None
    # the source is copied, not moved
    assert (src / "manifest.json").is_file()
    assert [e["event"] for e in registry.history()] == ["add", "add"]


def test_add_refuses_what_is_not_a_bundle(registry: BundleRegistry, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match=r"manifest\.json missing"):
        registry.add(tmp_path / "empty")
    assert registry.list() == []
    assert not list(registry.root.glob(".incoming-*"))


def test_promote_switches_current_and_records_history(
    registry: BundleRegistry, three: list[str]
) -> None:
    a, b, _ = three
    assert registry.promote(a, "first", metrics={"ndcg": 0.3}) is None
    assert registry.promote(b, "better") == a
    assert registry.current() == b
    assert os.readlink(registry.root / "current") == "versions/v0002/bundle"
    assert (registry.root / "current" / "manifest.json").is_file()  # usable as a bundle path
    assert statuses(registry) == {a: "retired", b: "promoted", "v0003": "candidate"}
    promote = [e for e in registry.history() if e["event"] == "promote"]
    assert [(e["version"], e["previous"], e["reason"]) for e in promote] == [
        (a, None, "first"),
        (b, a, "better"),
    ]
    assert promote[0]["metrics"] == {"ndcg": 0.3}
    # promoting the current version again changes nothing
    assert registry.promote(b, "again") == b
    assert len(registry.history()) == 5


def test_rollback_walks_back_through_promotions(registry: BundleRegistry, three: list[str]) -> None:
    a, b, c = three
    for v in (a, b, c):
        registry.promote(v, "step")
    assert registry.promotions() == [a, b, c]
    assert registry.rollback() == b
    assert registry.promotions() == [a, b]
    assert registry.rollback("bad") == a
    assert registry.current() == a
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.current() == a
    # a new promotion after rollbacks: rollback returns to where it was promoted from
    registry.promote(c, "retry")
    assert registry.rollback() == a


def test_rollback_needs_a_promotion(registry: BundleRegistry, three: list[str]) -> None:
    with pytest.raises(RegistryError, match="no version was promoted"):
        registry.rollback()


def test_refused_version_is_never_current(registry: BundleRegistry, three: list[str]) -> None:
    a, b, c = three
    registry.promote(a, "first")
    registry.refuse(b, {"reason": "ndcg 0.20 < 0.30", "candidate": 0.2})
    assert registry.show(b).status == "refused"
    assert registry.show(b).refused["report"]["candidate"] == 0.2  # type: ignore[index]
    with pytest.raises(RegistryError, match=r"v0002 was refused \(ndcg 0.20 < 0.30\)"):
        registry.promote(b, "try")
    assert registry.current() == a
    # rollback skips a version refused after it was served
    registry.promote(c, "next")
    registry.refuse(a, {"reason": "found bad later"})
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.current() == c
    # the current version cannot be refused; force promotes a refused one
    with pytest.raises(RegistryError, match="current version"):
        registry.refuse(c)
    assert registry.promote(b, "operator override", force=True) == c
    assert registry.show(b).status == "promoted"
    assert registry.history()[-1]["forced"] is True


def test_promote_requires_the_bundle_to_verify(registry: BundleRegistry, three: list[str]) -> None:
    a, b, _ = three
    registry.promote(a, "first")
    (registry.path(b) / "weights.safetensors").write_bytes(b"truncated")
    with pytest.raises(RegistryError, match=r"v0002 does not load: .*does not match its sha256"):
        registry.promote(b, "broken")
    assert registry.current() == a


def test_unknown_and_malformed_versions(registry: BundleRegistry, three: list[str]) -> None:
    with pytest.raises(RegistryError, match=r"no version v0009 .* known: v0001, v0002, v0003"):
        registry.promote("v0009", "x")
    for bad in ("../v0001", "v1", "current"):
        with pytest.raises(RegistryError, match="not a version name"):
            registry.path(bad)


def test_version_of_maps_bundle_paths(registry: BundleRegistry, three: list[str]) -> None:
    assert registry.version_of(registry.path("v0002")) == "v0002"
    assert registry.version_of(registry.root / "elsewhere" / "bundle") is None
    assert registry.version_of("/tmp/v0002/bundle") is None


def test_open_without_create_refuses_a_non_registry(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not a bundle registry"):
        BundleRegistry(tmp_path / "typo", create=False)
    assert not (tmp_path / "typo").exists()


# --- processes: lock and kill -9 ---------------------------------------------------------
def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_lock_makes_another_process_wait(registry: BundleRegistry, three: list[str]) -> None:
    holder = _python(
        """
        import sys
        from model.registry import BundleRegistry
        with BundleRegistry(sys.argv[1]).locked():
            print("locked", flush=True)
            sys.stdin.readline()
        """,
        str(registry.root),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done = threading.Event()

        def promote() -> None:
            registry.promote("v0001", "waits")
            done.set()

        t = threading.Thread(target=promote)
        t.start()
        assert not done.wait(0.5)  # blocked while the other process holds the lock
        assert registry.current() is None
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        t.join(30)
        assert done.is_set() and registry.current() == "v0001"
    finally:
        holder.kill()
        holder.wait()


def test_kill_during_add_leaves_nothing_listed(
    registry: BundleRegistry, three: list[str], tmp_path: Path
) -> None:
    registry.promote("v0002", "serving")
    src = make_bundle(tmp_path / "big", version="m-big", files=20)
    # The child copies one file per stdin line, so the kill lands mid-copy for sure.
    child = _python(
        """
        import shutil, sys
        from model.registry import BundleRegistry
        real = shutil.copy2
        def slow(src, dst, **kw):
            print("copying", flush=True)
            sys.stdin.readline()
            return real(src, dst, **kw)
        shutil.copy2 = slow
        BundleRegistry(sys.argv[1]).add(sys.argv[2])
        """,
        str(registry.root),
        str(src),
    )
    assert child.stdout is not None and child.stdin is not None
    for _ in range(5):
        assert child.stdout.readline().strip() == "copying"
        child.stdin.write("\n")
        child.stdin.flush()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert [p.name for p in registry.root.glob(".incoming-*")], "the kill left no partial copy"
    assert [v.version for v in registry.list()] == ["v0001", "v0002", "v0003"]
    assert registry.current() == "v0002"
    # the next add cleans up the dead writer's directory and numbers on
    assert registry.add(src) == "v0004"
    assert not list(registry.root.glob(".incoming-*"))
    assert len(list(registry.path("v0004").iterdir())) == 23


def test_kill_between_switch_and_history_is_repaired(
    registry: BundleRegistry, three: list[str]
) -> None:
    registry.promote("v0001", "first")
    child = _python(
        """
        import os, signal, sys
        from model.registry import BundleRegistry
        reg = BundleRegistry(sys.argv[1])
        def die(*args, **kw):
            os.kill(os.getpid(), signal.SIGKILL)
        reg.events.append = die
        reg.promote("v0002", "dies before writing history")
        """,
        str(registry.root),
    )
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert registry.current() == "v0002"  # the switch happened
    assert [e["event"] for e in registry.history()][-1] == "promote"  # of v0001
    # the next mutation records the recovered promotion, so rollback order stays right
    assert registry.rollback() == "v0001"
    assert [e["event"] for e in registry.history()][-2:] == ["recovered", "rollback"]


def test_torn_history_line_is_skipped(registry: BundleRegistry, three: list[str]) -> None:
    registry.promote("v0001", "first")
    with open(registry.root / "history.jsonl", "a") as f:
        f.write('{"event": "promote", "vers')  # a crash mid-append
    registry.promote("v0002", "second")
    assert [e["event"] for e in registry.history()][-2:] == ["promote", "promote"]


def test_a_version_directory_linked_out_of_the_registry_is_refused(
    registry: BundleRegistry, three: list[str], tmp_path: Path
) -> None:
    """A version directory planted as a symlink to a bundle outside the registry (a valid
    one, with its version.json) is neither listed nor promoted; the next add skips its
    name."""
    outside = tmp_path / "outside-version"
    make_bundle(outside / "bundle", version="planted")
    (outside / "version.json").write_text('{"added_at": 0, "meta": {}, "refused": null}')
    (registry.versions_dir / "v0004").symlink_to(outside)
    with pytest.raises(UnusableVersion, match=r"versions/v0004 is a link out of the registry"):
        registry.promote("v0004", "attack")
    with pytest.raises(UnusableVersion, match="link out of the registry"):
        registry.path("v0004")
    assert registry.current() is None
    assert [v.version for v in registry.list()] == three
    assert registry.add(make_bundle(tmp_path / "src-next")) == "v0005"


def test_a_version_whose_bundle_links_out_of_the_registry_is_refused(
    registry: BundleRegistry, three: list[str], tmp_path: Path
) -> None:
    bundle = registry.versions_dir / three[0] / "bundle"
    make_bundle(tmp_path / "planted", version="planted")
    os.rename(bundle, tmp_path / "moved")
    bundle.symlink_to(tmp_path / "planted")
    with pytest.raises(UnusableVersion, match=r"versions/v0001/bundle is a link out"):
        registry.promote(three[0], "attack")
    registry.promote(three[1], "ok")
    assert registry.current() == three[1]


def test_add_refuses_a_bundle_with_a_file_linked_out_of_it(
    registry: BundleRegistry, tmp_path: Path
) -> None:
    """``add`` copies the source (links followed): a link out of the source bundle would
    copy in whatever file it names, so the add is refused and nothing is listed."""
    src = make_bundle(tmp_path / "src")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a bundle file")
    (src / "extra.bin").symlink_to(secret)
    with pytest.raises(RegistryError, match=r"extra\.bin is a link to a file outside"):
        registry.add(src)
    assert registry.list() == []
    assert not list(registry.root.glob(".incoming-*"))
