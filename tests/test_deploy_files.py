"""Deployment files are well-formed (no Docker engine runs here, so they are not built)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [
        ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith(("#", " "))
    ]
    assert instructions.count("FROM") == 2
    assert "USER" in instructions and "HEALTHCHECK" in instructions
    assert "/healthz" in text
    assert "torch==2.13.0" in text and "TORCH_INDEX" in text
    # every instruction is a known Dockerfile keyword
    known = {"FROM", "ENV", "WORKDIR", "RUN", "COPY", "EXPOSE", "HEALTHCHECK", "CMD", "USER", "ARG"}
    assert set(instructions) <= known, set(instructions) - known


def test_compose_has_redis_with_aof_and_two_replicas() -> None:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = spec["services"]
    assert "--appendonly" in services["redis"]["command"]
    replicas = [s for s in services if s.startswith("micrec")]
    assert len(replicas) == 2
    for name in replicas:
        env = services[name]["environment"]
        assert env["MICREC_STORE_URL"].startswith("redis://redis")
    assert {services[n]["ports"][0] for n in replicas} == {"8001:8000", "8002:8000"}


def test_compose_offers_milvus_behind_a_profile() -> None:
    """The Milvus services start only with `--profile milvus`; replicas know its URI."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    milvus = {n: s for n, s in services.items() if n.startswith("milvus")}
    assert set(milvus) == {"milvus", "milvus-etcd", "milvus-minio"}
    assert all(s["profiles"] == ["milvus"] for s in milvus.values())
    for name in (n for n in services if n.startswith("micrec")):
        env = services[name]["environment"]
        assert env["MICREC_MILVUS_URI"] == "http://milvus:19530"
        assert env["MICREC_INDEX_BACKEND"] == "${MICREC_INDEX_BACKEND:-faiss}"
