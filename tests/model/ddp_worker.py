"""Worker for tests/model/test_distributed.py: run under torchrun, trains the toy split
for two epochs and writes a digest of its final weights per rank."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.nn.config import MICRecConfig, TrainConfig
from model.training import Trainer
from tests.model.toy import toy_split


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    split, feats = toy_split(n_users=120)
    tr = Trainer(
        split, feats, MICRecConfig(dim=8), TrainConfig(batch_size=128, epochs=2, patience=5)
    )
    tr.fit(progress=False)
    h = hashlib.sha256()
    for k, v in sorted(tr.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    (out / f"rank{tr.rank}.txt").write_text(f"{tr.world} {h.hexdigest()}\n")


if __name__ == "__main__":
    main()
