"""Settings: defaults, parsing, start-up validation, and the documented example file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_origin

import pytest

from app.settings import GROUPS, Settings, SettingsError, load_settings, unknown_env_keys

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "service.example.env"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MICREC_"):
            monkeypatch.delenv(key)


def test_defaults_are_the_documented_ones() -> None:
    s = Settings()
    assert s.store_url == "sqlite:///artifacts/state.db"
    assert s.history_cap == 200
    assert s.max_n == 500
    assert s.max_batch == 1000
    assert s.fallback_chain == ["popular", "latest"]
    assert s.replica_sync_interval_s == 0.2
    assert s.request_threads == 4
    assert s.api_keys == [] and not s.auth_enabled
    assert s.require_key_for_reads is False


def test_lists_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICREC_API_KEYS", "key-one-123, key-two-456")
    monkeypatch.setenv("MICREC_FALLBACK_CHAIN", '["latest"]')
    s = load_settings()
    assert [k.get_secret_value() for k in s.api_keys] == ["key-one-123", "key-two-456"]
    assert s.fallback_chain == ["latest"]
    assert "key-one-123" not in repr(s)  # secrets never printed


@pytest.mark.parametrize(
    "name",
    [n for n, f in Settings.model_fields.items() if get_origin(f.annotation) is list],
)
def test_every_list_key_takes_a_comma_separated_value(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Each group parses its own list keys (a validator of one group must not shadow
    another's of the same name: MICREC_FALLBACK_CHAIN was once refused that way)."""
    values = {
        "fallback_chain": "latest, popular",
        "feedback_events": "impression, click, add-to-cart, purchase",
        "feedback_positive": "click, purchase",
    }
    monkeypatch.setenv(f"MICREC_{name.upper()}", values.get(name, "value-one-1,value-two-2"))
    got = getattr(load_settings(), name)
    shown = [v.get_secret_value() if hasattr(v, "get_secret_value") else v for v in got]
    assert shown == values.get(name, "value-one-1,value-two-2").replace(" ", "").split(",")


def test_every_key_is_in_one_group_and_documented() -> None:
    fields = [n for group in GROUPS for n in group.model_fields]
    assert sorted(fields) == sorted(Settings.model_fields)  # each key in exactly one group
    assert all(f.description for f in Settings.model_fields.values())


def test_unknown_environment_key_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICREC_MAX_NN", "5")
    monkeypatch.setenv("MICREC_THREADS", "2")  # the library's own key is allowed
    assert unknown_env_keys() == ["MICREC_MAX_NN"]
    with pytest.raises(SettingsError, match="MICREC_MAX_NN"):
        load_settings()


def test_unknown_key_in_env_file_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "svc.env"
    f.write_text("MICREC_MAX_N=20\nMICREC_TYPO=1\n")
    with pytest.raises(SettingsError, match="MICREC_TYPO: unknown key"):
        load_settings(env_file=f)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("MICREC_MAX_N", "0", "MICREC_MAX_N"),
        ("MICREC_FALLBACK_CHAIN", "popular,random", "MICREC_FALLBACK_CHAIN"),
        ("MICREC_FALLBACK_CHAIN", "popular,popular", "twice"),
        ("MICREC_API_KEYS", "short", "8 characters"),
        ("MICREC_REPLICA_SYNC_INTERVAL_S", "-1", "MICREC_REPLICA_SYNC_INTERVAL_S"),
        ("MICREC_SERVING_CACHE_VERIFY", "sometimes", "MICREC_SERVING_CACHE_VERIFY"),
        ("MICREC_SERVING_CACHE_KEEP", "-1", "MICREC_SERVING_CACHE_KEEP"),
    ],
)
def test_invalid_values_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, match: str
) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=match):
        load_settings()


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(env_file=tmp_path / "nope.env")


def test_example_file_documents_every_key_with_its_default() -> None:
    text = EXAMPLE.read_text()
    keys = set(re.findall(r"^#? ?(MICREC_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert keys == {"MICREC_" + name.upper() for name in Settings.model_fields}
    # Loading the example as-is gives exactly the defaults.
    assert load_settings(env_file=EXAMPLE) == Settings()


def test_serving_cache_root(tmp_path: Path) -> None:
    """One root for every registry version (so pruning reaches old versions' caches)."""
    bundle = tmp_path / "reg" / "versions" / "v0001" / "bundle"
    assert Settings().serving_cache_root(bundle) == bundle / "serving-cache"
    assert Settings(registry_dir=tmp_path / "reg").serving_cache_root(bundle) == (
        tmp_path / "reg" / "serving-cache"
    )
    own = tmp_path / "cache"
    s = Settings(registry_dir=tmp_path / "reg", serving_cache_dir=own)
    assert s.serving_cache_root(bundle) == own
    assert Settings(serving_cache=False).serving_cache_root(bundle) is None


def test_index_backend_is_checked_in_one_line() -> None:
    assert Settings().index_backend == "faiss"
    with pytest.raises(SettingsError, match=r"^invalid settings: MICREC_INDEX_BACKEND: .*faiss"):
        load_settings(index_backend="annoy")
    with pytest.raises(SettingsError, match="needs MICREC_MILVUS_URI"):
        load_settings(index_backend="milvus")
    with pytest.raises(SettingsError, match="opened by one process"):
        load_settings(index_backend="milvus", milvus_uri="/tmp/x.db", workers=2)
    ok = load_settings(index_backend="milvus", milvus_uri="http://milvus:19530", workers=2)
    assert ok.milvus_index == "FLAT" and ok.milvus_consistency == "Strong"
