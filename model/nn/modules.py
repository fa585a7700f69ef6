"""Small building blocks: modality aggregation, propagation, alignment head, losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ModalityAggregator(nn.Module):
    """Item content vector h_i from frozen encoder features (METHOD.md 2).

    Per modality m a linear projection W_m x + b_m (shared across domains, so all domains
    live in one semantic space), then a softmax-weighted mean over the modalities the item
    actually has (masked), so a missing image does not drag the vector toward zero.
    """

    def __init__(self, in_dims: dict[str, int], dim: int) -> None:
        super().__init__()
        self.modalities = sorted(in_dims)
        self.proj = nn.ModuleDict({m: nn.Linear(in_dims[m], dim) for m in self.modalities})
        self.logits = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(
        self, feats: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """feats[m]: [n, in_dims[m]], masks[m]: [n] bool -> h: [n, dim] (zero rows without content)."""
        hs = torch.stack([self.proj[m](feats[m]) for m in self.modalities], dim=1)  # [n, M, d]
        mask = torch.stack([masks[m] for m in self.modalities], dim=1).float()  # [n, M]
        w = torch.exp(self.logits - self.logits.max()) * mask  # [n, M]
        w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return (w.unsqueeze(-1) * hs).sum(dim=1)


def propagate(adjacency: torch.Tensor, e0: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """LightGCN layers E^(0..L) with E^(l+1) = A_hat E^(l); each [n_nodes, d]."""
    layers = [e0]
    for _ in range(n_layers):
        layers.append(torch.sparse.mm(adjacency, layers[-1]))
    return layers


class AlignmentHead(nn.Module):
    """Projection head g for the cross-domain contrastive loss (shared by all domains)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [b, d] -> q: [b, d], L2-normalised."""
        return F.normalize(self.net(z), dim=-1)


class TransferMap(nn.Module):
    """f_{A->B} of the hidden-history transfer loss: a user's normalised vector in domain A
    -> a query in domain B's item space, [b, d] -> [b, d] (a linear map plus a residual
    one-hidden-layer MLP whose last layer starts at zero).

    Trained inside the backbone (``MICRecConfig.transfer_weight``): the user's B history is
    hidden (their A vector is built from A alone) and the query has to rank their B items,
    so B's item vectors are shaped to be predictable from A, which the cross-domain map
    fitted after training (model.nn.bridge) then serves.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.residual = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        last = self.residual[2]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.normalize(z, dim=-1)
        return self.linear(x) + self.residual(x)


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """mean softplus(s(u,j) - s(u,i)) for positive scores ``pos`` and negatives ``neg`` ([b])."""
    return F.softplus(neg - pos).mean()


def symmetric_info_nce(qa: torch.Tensor, qb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives; row k of qa and qb is the same person.

    qa, qb: [b, d] L2-normalised. Returns
    -1/(2b) sum_u [log softmax(qa_u . qb / tau)[u] + log softmax(qb_u . qa / tau)[u]].
    """
    logits = qa @ qb.T / temperature
    target = torch.arange(len(qa), device=qa.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
