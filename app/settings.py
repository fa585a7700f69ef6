"""Service configuration: every ``MICREC_*`` key, its default and its bounds.

The keys are grouped by the part of the service that reads them, one class per group
(app/settings_groups.py: model, index, caches, store, recommend, request limits;
app/settings_milvus.py: the index backend; app/settings_deploy.py: auth, server, registry
and retraining). :class:`Settings`
inherits them all, so every key keeps one flat name (``MICREC_MAX_N``,
``settings.max_n``), and adds the checks across groups.

Values come from the environment (prefix ``MICREC_``) or an env file
(``micrec serve --env-file``; see ``configs/service.example.env``, which documents every
key). They are validated when the service starts, so a typo or an out-of-range value stops
start-up with one line naming the key instead of surfacing on the first request.

Unknown keys are rejected: pydantic-settings already refuses unknown keys in an env file
(``extra="forbid"``); unknown ``MICREC_*`` *environment variables* are checked by
:func:`load_settings`, because pydantic-settings silently ignores those.

List values (``MICREC_API_KEYS``, ``MICREC_FALLBACK_CHAIN``, ``MICREC_CORS_ORIGINS``) are
comma-separated (``MICREC_API_KEYS=k1,k2``) or a JSON list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.settings_deploy import AuthSettings, RegistrySettings, ServerSettings
from app.settings_groups import (
    CacheSettings,
    FeedbackSettings,
    IndexSettings,
    LimitsSettings,
    ModelSettings,
    RecommendSettings,
    StoreSettings,
)
from app.settings_milvus import MilvusSettings
from model.runconfig import ConfigError

ENV_PREFIX = "MICREC_"


LIBRARY_ENV_KEYS = frozenset(
    {
        "MICREC_THREADS",
        "MICREC_ENV_FILE",
        "MICREC_DIST_BACKEND",
        "MICREC_ENCODER_ADDRESS",
        "MICREC_ENCODER_KEY",
    }
)
"""``MICREC_*`` variables read by the library/CLI rather than by the service settings
(the encoder ones are set by ``micrec serve`` for its workers, app/catalogue/encoding.py)."""

GROUPS: tuple[type, ...] = (
    ModelSettings,
    IndexSettings,
    MilvusSettings,
    CacheSettings,
    StoreSettings,
    RecommendSettings,
    FeedbackSettings,
    LimitsSettings,
    AuthSettings,
    ServerSettings,
    RegistrySettings,
)
"""The groups :class:`Settings` is made of (every key is in exactly one)."""


# Bases in reverse reading order: pydantic lists the fields of the last base first.
class Settings(
    RegistrySettings,
    ServerSettings,
    AuthSettings,
    LimitsSettings,
    FeedbackSettings,
    RecommendSettings,
    StoreSettings,
    CacheSettings,
    MilvusSettings,
    IndexSettings,
    ModelSettings,
    BaseSettings,
):
    """All service settings: the groups' fields, one flat ``MICREC_*`` namespace."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        env_file=None,
        frozen=True,
        validate_default=True,
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_n > self.max_n:
            raise ValueError(f"default_n ({self.default_n}) is larger than max_n ({self.max_n})")
        admin = {k.get_secret_value() for k in self.admin_keys}
        if admin & {k.get_secret_value() for k in self.api_keys}:
            raise ValueError("admin_keys must differ from api_keys")
        if self.index_backend == "milvus":
            if not self.milvus_uri:
                raise ValueError("MICREC_INDEX_BACKEND=milvus needs MICREC_MILVUS_URI")
            if self.milvus_uri.endswith(".db") and self.workers > 1:
                raise ValueError(
                    "a milvus-lite file (MICREC_MILVUS_URI=...db) is opened by one process: "
                    "with MICREC_WORKERS > 1 run `python -m milvus_lite server --data-dir DIR` "
                    "and set MICREC_MILVUS_URI=http://127.0.0.1:19530"
                )
        return self

    def serving_cache_root(self, bundle_path: Path) -> Path | None:
        """The serving cache directory for ``bundle_path`` (None: caching off). With a
        registry, one root for all its versions (not inside each version's bundle), so
        pruning removes the caches of versions no longer served."""
        if not self.serving_cache:
            return None
        if self.serving_cache_dir is not None:
            return self.serving_cache_dir
        if self.registry_dir is not None:
            return self.registry_dir / "serving-cache"
        return Path(bundle_path) / "serving-cache"

    @property
    def bundles_root(self) -> Path:
        """Where admin reloads may load from (bundles_dir, else bundle_path's parent)."""
        return self.bundles_dir if self.bundles_dir is not None else self.bundle_path.parent


class SettingsError(ConfigError):
    """Invalid configuration; ``str(err)`` names every offending key on one line (the CLI
    prints it as a config error, like a bad run config)."""


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if not e["loc"]:  # a check across keys (default_n vs max_n): its message names them
            parts.append(msg)
            continue
        parts.append(f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {msg}")
    return "invalid settings: " + "; ".join(parts)


def unknown_env_keys(environ: dict[str, str] | None = None) -> list[str]:
    """``MICREC_*`` environment variables that name no setting (typos)."""
    env = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known | LIBRARY_ENV_KEYS)


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (+ optional env file) with ``overrides`` on top.

    Raises :class:`SettingsError` (one line) for unknown keys or invalid values.
    """
    unknown = unknown_env_keys()
    if unknown:
        raise SettingsError(f"invalid settings: unknown environment keys {', '.join(unknown)}")
    if env_file is not None and not Path(env_file).is_file():
        raise SettingsError(f"env file not found: {env_file}")
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as err:
        raise SettingsError(_format_validation_error(err)) from None
