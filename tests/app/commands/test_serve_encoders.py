"""``micrec serve`` checks the bundle's encoder weights before starting any worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.commands.serve import check_encoders
from model.commands.runner import UserError
from tests.model.encoders.test_records import clip_record


def test_serve_refuses_wrong_weights_in_one_line(tmp_path: Path) -> None:
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"w")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = {"format_version": 1, "encoders": {"text": clip_record(weights)}}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    check_encoders(bundle, weights)  # right file
    check_encoders(bundle, None)  # not configured: serves, /readyz says so
    for wrong in (tmp_path / "nope.pt", bundle / "manifest.json"):
        with pytest.raises(UserError) as err:
            check_encoders(bundle, wrong)
        assert "MICREC_CLIP_WEIGHTS" in str(err.value) and "\n" not in str(err.value)
