"""``micrec bundles``: list / show / add / promote / rollback / refuse, the announcement in
the store, one-line errors and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.cli import main
from app.store.sqlite import SQLiteStore
from model.registry import BundleRegistry
from tests.model.checked_bundle import make_bundle


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("MICREC_") and key != "MICREC_THREADS":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MICREC_STORE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setenv("MICREC_REGISTRY_DIR", str(tmp_path / "registry"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["bundles", *args])
    out, err = capsys.readouterr()
    return code, out, err


def wanted(tmp_path: Path) -> str | None:
    store = SQLiteStore(tmp_path / "state.db")
    try:
        got = store.get_bundle_version()
        return None if got is None else got.version
    finally:
        store.close()


def test_add_promote_rollback_announce(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_bundle(tmp_path / "a", version="m-a")
    b = make_bundle(tmp_path / "b", version="m-b")
    code, out, _ = run(capsys, "add", str(a), "--promote")
    assert code == 0 and "added v0001" in out and "promoted v0001" in out
    assert wanted(tmp_path) == "v0001"
    assert run(capsys, "add", str(b))[0] == 0
    assert wanted(tmp_path) == "v0001"  # added, not promoted

    code, out, _ = run(capsys, "promote", "v0002", "--reason", "better on the gate")
    assert (code, out.strip()) == (
        0,
        f"promoted v0002 (was v0001); announced in sqlite:///{tmp_path / 'state.db'}",
    )
    assert wanted(tmp_path) == "v0002"

    code, out, _ = run(capsys, "list")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[:3] for r in rows] == [["v0001", "retired", rows[0][2]], ["*", "v0002", "promoted"]]

    code, out, _ = run(capsys, "rollback")
    assert code == 0 and out.startswith("rolled back to v0001 (was v0002)")
    assert wanted(tmp_path) == "v0001"

    code, out, _ = run(capsys, "show", "v0002")
    shown = json.loads(out)
    assert shown["status"] == "retired" and shown["model_version"] == "m-b"
    assert [e["event"] for e in shown["history"]] == ["add", "promote", "rollback"]
    assert shown["history"][1]["reason"] == "better on the gate"


def test_list_json_and_registry_option_after_the_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    BundleRegistry(other).add(make_bundle(tmp_path / "a"))
    code, out, _ = run(capsys, "list", "--json", "--registry", str(other))
    assert code == 0 and [v["version"] for v in json.loads(out)] == ["v0001"]


def test_refused_version_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "add", str(make_bundle(tmp_path / "a")), "--promote")
    run(capsys, "add", str(make_bundle(tmp_path / "b")))
    assert run(capsys, "refuse", "v0002", "--reason", "worse on the window")[0] == 0
    code, out, err = run(capsys, "promote", "v0002")
    assert code == 2 and out == ""
    assert err.strip() == (
        "micrec bundles: error: v0002 was refused (worse on the window); "
        "promote it with force to serve it anyway"
    )
    assert wanted(tmp_path) == "v0001"
    assert run(capsys, "promote", "v0002", "--force")[0] == 0
    assert wanted(tmp_path) == "v0002"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "v0009"], "no version v0009"),
        (["promote", "latest"], "'latest' is not a version name"),
        (["rollback"], "nothing to roll back to"),
        (["show", "v0003"], "no version v0003"),
    ],
)
def test_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    run(capsys, "add", str(make_bundle(tmp_path / "a")), "--promote")
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_broken_bundle_is_not_promoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "add", str(make_bundle(tmp_path / "a")), "--promote")
    run(capsys, "add", str(make_bundle(tmp_path / "b")))
    (tmp_path / "registry/versions/v0002/bundle/catalogue.json").write_text("{}")
    code, _, err = run(capsys, "promote", "v0002")
    assert code == 2 and "v0002 does not load" in err and "catalogue.json" in err
    assert wanted(tmp_path) == "v0001"


def test_not_a_bundle_or_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "add", str(tmp_path / "empty"))
    assert code == 2 and "not a bundle (manifest.json missing)" in err
    code, _, err = run(capsys, "list", "--registry", str(tmp_path / "nowhere"))
    assert code == 2 and "is not a bundle registry" in err
    assert not (tmp_path / "nowhere").exists()


def test_store_down_after_the_switch_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "add", str(make_bundle(tmp_path / "a")), "--promote")
    run(capsys, "add", str(make_bundle(tmp_path / "b")))
    # nothing listens on port 1: the announcement fails, the registry switch stands
    monkeypatch.setenv("MICREC_STORE_URL", "redis://127.0.0.1:1/0")
    code, out, err = run(capsys, "promote", "v0002")
    assert code == 1 and out == ""
    assert "v0002 is current" in err and "could not be told" in err
    assert BundleRegistry(tmp_path / "registry").current() == "v0002"


def test_no_registry_configured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MICREC_REGISTRY_DIR")
    code, _, err = run(capsys, "list")
    assert code == 2 and "pass --registry DIR or set MICREC_REGISTRY_DIR" in err


def test_serve_refuses_an_empty_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    BundleRegistry(tmp_path / "registry")
    assert main(["serve", "--registry", str(tmp_path / "registry")]) == 2
    assert "has no promoted version" in capsys.readouterr().err


def test_canary_start_status_promote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        run(capsys, "add", str(make_bundle(tmp_path / name, version=f"m-{name}")))
    assert run(capsys, "promote", "v0001")[0] == 0
    code, out, _ = run(capsys, "promote", "v0002", "--canary", "10%")
    assert code == 0 and "canary v0002 for 10 % of users (current v0001)" in out, out
    assert wanted(tmp_path) == "v0001"  # the current version is not switched
    code, out, _ = run(capsys, "canary", "status")
    status = json.loads(out)
    assert status["canary"]["version"] == "v0002" and status["canary"]["salt"] == "(hidden)"
    assert status["candidate"]["model_version"] == "m-b"
    code, out, _ = run(capsys, "canary", "promote")
    assert code == 0 and "canary v0002 promoted" in out
    assert wanted(tmp_path) == "v0002"
    code, _, err = run(capsys, "canary", "abort")
    assert code == 2 and "no canary runs" in err
    code, _, err = run(capsys, "promote", "v0001", "--canary", "half")
    assert code == 2 and "10% or 0.1" in err
