"""Early stopping on a held-back loss for the small networks trained after the backbone
(model.bridgefit, model.itemmapfit): keep the best parameters, stop after ``patience``
checks without a better loss."""

from __future__ import annotations

import torch
from torch import nn


class BestState:
    """The best parameters of ``module`` seen so far, by a loss where lower is better."""

    def __init__(self, module: nn.Module, patience: int, min_delta: float = 1e-4) -> None:
        self.module, self.patience, self.min_delta = module, patience, min_delta
        self.best = float("inf")
        self._state: dict[str, torch.Tensor] | None = None
        self._stale = 0

    def start(self, loss: float) -> None:
        """Count the module as it is now, with ``loss``, as the best so far (a stage that
        continues from trained parameters then never ends worse than it began)."""
        self.best, self._stale = loss, 0
        self._state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def update(self, loss: float) -> bool:
        """Record one check's loss; True when training should stop."""
        if loss < self.best - self.min_delta:
            self.best, self._stale = loss, 0
            self._state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            return False
        self._stale += 1
        return self._stale >= self.patience

    def restore(self) -> None:
        """Put the best parameters back (no-op when no check was recorded)."""
        if self._state is not None:
            self.module.load_state_dict(self._state)
