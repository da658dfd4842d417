"""The action evaluator: how good a candidate scheme will be, from the graph embedding of
the candidate applied to the current state and its whole-graph summary features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Evaluator(nn.Module):
    def __init__(
        self, embedding_dim: int, candidate_dim: int, hidden_dims: Sequence[int] = (128, 64), dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = embedding_dim + candidate_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, embedding: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """(B, embedding_dim), (B, candidate_dim) -> (B,): the predicted (normalised) performance penalty."""
        return self.mlp(torch.cat([embedding, candidate], dim=1)).squeeze(-1)
