"""The TOML run configuration of ``micrec train``.

Sections and defaults (``micrec train --print-config`` prints them; configs/micrec.toml
is the commented reference). Unknown sections or keys are rejected, so a typo never
silently trains with a default. Every problem raises :class:`ConfigError`, one line naming
the section and key (``[features] text = '': unknown encoder ''; choose from ...``); types
are checked by pydantic against the dataclasses' annotations, ranges by the dataclasses
themselves (``__post_init__`` / ``SplitConfig.validate``).

    [data]      the split (model.data.split.SplitConfig) + ``domains`` (restrict; [] = all)
    [features]  text / image encoder names ("none" disables), cache_dir, batch_size
    [model]     model.nn.config.MICRecConfig + ``variant`` (an ablation name, default "micrec")
    [train]     model.nn.config.TrainConfig
    [blend]     model.nn.config.BlendConfig (the served score blend, fitted on validation)
    [bridge]    model.nn.config.BridgeConfig (the cross-domain mapping, model.bridgefit)
    [item_map]  model.nn.config.ItemMapConfig (content -> item vectors, model.itemmapfit)
    [tune]      model.nn.config.TuneConfig (the per-dataset search of model.tuning)
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from model.data.split import SplitConfig
from model.encoders.factory import BUILTIN_MODALITY, OPENCLIP
from model.nn.config import (
    ABLATIONS,
    BlendConfig,
    BridgeConfig,
    ItemMapConfig,
    MICRecConfig,
    TrainConfig,
    TuneConfig,
)

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid run configuration; ``str(err)`` is one line naming the section and key."""


def check_device(device: str) -> None:
    """Raise ValueError unless ``device`` is a torch device string ("cpu", "cuda:1"...)."""
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device (cpu, cuda, cuda:N)") from err


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
    clip_model: str = ""
    """openclip: the architecture name or a local JSON config file."""
    clip_weights: str = ""
    """openclip: the local weights file (its sha256 goes into the bundle)."""

    def __post_init__(self) -> None:
        for modality in ("text", "image"):
            name = getattr(self, modality)
            names = [n for n, m in BUILTIN_MODALITY.items() if m == modality]
            names += [OPENCLIP, "none"]
            if name not in names:
                raise ValueError(
                    f"{modality} = {name!r}: unknown encoder {name!r}; choose from {', '.join(names)}"
                )
            if name == OPENCLIP and not (self.clip_model and self.clip_weights):
                raise ValueError(f"{modality} = 'openclip' needs clip_model and clip_weights")

    def encoder_args(self, modality: str) -> dict[str, str]:
        """``create_encoder`` keyword arguments of the ``modality`` encoder."""
        name = getattr(self, modality)
        if name != OPENCLIP:
            return {"name": name, "device": self.device}
        return {
            "name": name,
            "device": self.device,
            "model_name": self.clip_model,
            "weights_path": self.clip_weights,
            "modality": modality,
        }
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_device(self.device)


@dataclass
class RunConfig:
    data: SplitConfig = field(default_factory=SplitConfig)
    domains: list[str] = field(default_factory=list)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: MICRecConfig = field(default_factory=MICRecConfig)
    variant: str = "micrec"
    train: TrainConfig = field(default_factory=TrainConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    item_map: ItemMapConfig = field(default_factory=ItemMapConfig)
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
            "bridge": asdict(self.bridge),
            "item_map": asdict(self.item_map),
            "tune": asdict(self.tune),
        }


def _section(d: dict[str, Any], name: str) -> dict[str, Any]:
    values = d.get(name, {})
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}] must be a table of keys, got {values!r}")
    return dict(values)


def _strict(
    cls: type, values: dict[str, Any], section: str, allow: tuple[str, ...] = ()
) -> dict[str, Any]:
    known = {f.name for f in fields(cls)} | set(allow)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"[{section}] unknown keys {unknown}; known: {sorted(known - {'extra'})}")
    return values


def _build(cls: type[T], values: dict[str, Any], section: str) -> T:
    """``cls(**values)`` with pydantic's type checks; every failure is a ConfigError."""
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as err:
        e = err.errors(include_url=False)[0]
        msg = e["msg"].removeprefix("Value error, ")
        if e["loc"]:  # a type error: name the key and the value
            key = ".".join(str(p) for p in e["loc"])
            raise ConfigError(f"[{section}] {key} = {e['input']!r}: {msg}") from None
        raise ConfigError(f"[{section}] {msg}") from None  # a range check names its key


def run_config_from_dict(d: dict[str, Any]) -> RunConfig:
    """A validated RunConfig; raises :class:`ConfigError` (one line) on any problem."""
    sections = ("data", "features", "model", "train", "blend", "bridge", "item_map", "tune")
    unknown = sorted(set(d) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config sections {unknown}; known: {', '.join(sections)}")
    data = dict(_strict(SplitConfig, _section(d, "data"), "data", ("domains",)))
    domains = data.pop("domains", [])
    if not isinstance(domains, list) or not all(isinstance(x, str) for x in domains):
        raise ConfigError(f"[data] domains = {domains!r}: must be a list of domain names")
    feats = _strict(FeatureConfig, _section(d, "features"), "features")
    model = dict(_strict(MICRecConfig, _section(d, "model"), "model", ("variant",)))
    variant = model.pop("variant", "micrec")
    if variant not in ABLATIONS:
        raise ConfigError(
            f"[model] variant = {variant!r}: unknown; choose from {', '.join(sorted(ABLATIONS))}"
        )
    train = _strict(TrainConfig, _section(d, "train"), "train")
    if "extra" in train:
        raise ConfigError("[train] unknown key 'extra'")
    train_config = _build(TrainConfig, train, "train")
    try:
        check_device(train_config.device)
    except ValueError as err:
        raise ConfigError(f"[train] {err}") from None
    split = _build(SplitConfig, data, "data")
    try:
        split.validate()
    except ValueError as err:
        raise ConfigError(f"[data] {err}") from None
    return RunConfig(
        data=split,
        domains=list(domains),
        features=_build(FeatureConfig, feats, "features"),
        model=_build(MICRecConfig, model, "model"),
        blend=_build(BlendConfig, _strict(BlendConfig, _section(d, "blend"), "blend"), "blend"),
        bridge=_build(
            BridgeConfig, _strict(BridgeConfig, _section(d, "bridge"), "bridge"), "bridge"
        ),
        item_map=_build(
            ItemMapConfig, _strict(ItemMapConfig, _section(d, "item_map"), "item_map"), "item_map"
        ),
        tune=_build(TuneConfig, _strict(TuneConfig, _section(d, "tune"), "tune"), "tune"),
        variant=variant,
        train=train_config,
    )


def load_run_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML file (None = all defaults) and apply ``overrides`` {section: {key: v}}.

    Raises :class:`ConfigError` (one line) for an unreadable file or any invalid value."""
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            d = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{p}: invalid TOML ({err})") from None
        except OSError as err:
            raise ConfigError(f"{p}: cannot read ({err.strerror or err})") from None
    for section, values in (overrides or {}).items():
        d[section] = {**_section(d, section), **values}
    return run_config_from_dict(d)
