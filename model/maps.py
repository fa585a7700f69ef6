"""The parts trained after the backbone, on its frozen vectors: the cross-domain maps
(model.bridgefit) and the item maps (model.itemmapfit). One call, so ``micrec train``,
every tuning trial and the benchmarks fit them the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.bridgefit import content_rows, fit_bridges, serving_embedders
from model.data.split import InductiveSplit
from model.encoders.base import ItemFeatures
from model.itemmapfit import fit_item_maps
from model.nn.blend import ContentReducer
from model.nn.bridge import Bridges
from model.nn.config import BridgeConfig, ItemMapConfig
from model.nn.itemmap import ItemMaps
from model.nn.micrec import MICRec


@dataclass
class Maps:
    bridges: Bridges | None = None
    item_maps: ItemMaps | None = None
    report: dict[str, Any] = field(default_factory=dict)
    """{"bridge": per domain pair, "item_map": per domain}: anchors, epochs, seconds."""


def fit_maps(
    model: MICRec,
    split: InductiveSplit,
    features: ItemFeatures | None,
    bridge: BridgeConfig | None = None,
    item_map: ItemMapConfig | None = None,
    reducer: ContentReducer | None = None,
) -> Maps:
    """``reducer``: the blend's content PCA (model.blendfit.fit_reducer), which the
    cross-domain maps read content profiles through when ``[bridge] content`` is on."""
    # one forward pass over every domain's graph serves both fits
    wanted = (bridge is None or bridge.enabled) or (item_map is None or item_map.enabled)
    embedders = serving_embedders(model, split, features) if wanted else None
    content = None
    if bridge is not None and bridge.enabled and bridge.content and reducer is not None:
        content = content_rows(reducer, split, features)
    bridges, bridge_report = fit_bridges(
        model, split, features, bridge, embedders=embedders, content=content
    )
    item_maps, item_report = fit_item_maps(model, split, features, item_map, embedders=embedders)
    return Maps(bridges, item_maps, {"bridge": bridge_report, "item_map": item_report})
