"""The TOML run configuration of ``micrec train``.

Sections and defaults (``micrec train --print-config`` prints them; configs/micrec.toml
is the commented reference). Unknown sections or keys are rejected, so a typo never
silently trains with a default.

    [data]      the split (model.data.split.SplitConfig) + ``domains`` (restrict; [] = all)
    [features]  text / image encoder names ("none" disables), cache_dir, batch_size
    [model]     model.nn.config.MICRecConfig + ``variant`` (an ablation name, default "micrec")
    [train]     model.nn.config.TrainConfig
    [blend]     model.nn.config.BlendConfig (the served score blend, fitted on validation)
    [tune]      model.nn.config.TuneConfig (the per-dataset search of model.tuning)
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from model.data.split import SplitConfig
from model.nn.config import ABLATIONS, BlendConfig, MICRecConfig, TrainConfig, TuneConfig


@dataclass
class FeatureConfig:
    text: str = "minilm-l6-v2"
    """Text encoder name, or "none"."""
    image: str = "efficientnet-lite0"
    """Image encoder name, or "none"."""
    cache_dir: str = "artifacts/cache"
    """Feature cache directory (keyed by encoder, item id and content hash)."""
    batch_size: int = 64
    """Encoder batch size."""
    device: str = "cpu"
    """Device for the encoders."""


@dataclass
class RunConfig:
    data: SplitConfig = field(default_factory=SplitConfig)
    domains: list[str] = field(default_factory=list)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: MICRecConfig = field(default_factory=MICRecConfig)
    variant: str = "micrec"
    train: TrainConfig = field(default_factory=TrainConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def model_config(self) -> MICRecConfig:
        return self.model.ablate(self.variant)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": {**asdict(self.data), "domains": list(self.domains)},
            "features": asdict(self.features),
            "model": {**self.model.to_dict(), "variant": self.variant},
            "train": {k: v for k, v in asdict(self.train).items() if k != "extra"},
            "blend": asdict(self.blend),
            "tune": asdict(self.tune),
        }


def _strict(
    cls: type, values: dict[str, Any], section: str, allow: tuple[str, ...] = ()
) -> dict[str, Any]:
    known = {f.name for f in fields(cls)} | set(allow)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"[{section}] unknown keys {unknown}; known: {sorted(known - {'extra'})}")
    return values


def run_config_from_dict(d: dict[str, Any]) -> RunConfig:
    unknown = sorted(set(d) - {"data", "features", "model", "train", "blend", "tune"})
    if unknown:
        raise ValueError(
            f"unknown config sections {unknown}; known: data, features, model, train, blend, tune"
        )
    data = dict(_strict(SplitConfig, dict(d.get("data", {})), "data", ("domains",)))
    domains = list(data.pop("domains", []))
    feats = _strict(FeatureConfig, dict(d.get("features", {})), "features")
    model = dict(_strict(MICRecConfig, dict(d.get("model", {})), "model", ("variant",)))
    variant = str(model.pop("variant", "micrec"))
    if variant not in ABLATIONS:
        raise ValueError(f"[model] variant {variant!r} unknown; choose from {sorted(ABLATIONS)}")
    train = _strict(TrainConfig, dict(d.get("train", {})), "train")
    if "extra" in train:
        raise ValueError("[train] unknown key 'extra'")
    blend = _strict(BlendConfig, dict(d.get("blend", {})), "blend")
    tune = _strict(TuneConfig, dict(d.get("tune", {})), "tune")
    return RunConfig(
        blend=BlendConfig(**blend),
        tune=TuneConfig(**tune),
        data=SplitConfig(**data),
        domains=domains,
        features=FeatureConfig(**feats),
        model=MICRecConfig.from_dict(model),
        variant=variant,
        train=TrainConfig.from_dict(train),
    )


def load_run_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML file (None = all defaults) and apply ``overrides`` {section: {key: v}}."""
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            d = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{p}: invalid TOML ({err})") from err
    for section, values in (overrides or {}).items():
        d.setdefault(section, {}).update(values)
    return run_config_from_dict(d)
