"""The graph memory: GCN layers over the operator DAG, pooled into one embedding per graph."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn
from torch_geometric.nn import GCNConv, global_max_pool, global_mean_pool


class GCNMemory(nn.Module):
    def __init__(
        self, in_dim: int, hidden_dims: Sequence[int] = (64, 64), out_dim: int = 32, dropout: float = 0.0
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden_dims, out_dim]
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in pairwise(dims))
        self.dropout = nn.Dropout(dropout)
        self.out_dim = 2 * out_dim  # mean and max pooled side by side

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        for conv in self.convs[:-1]:
            x = self.dropout(torch.relu(conv(x, edge_index)))
        x = self.convs[-1](x, edge_index)
        # Mean says how the graph is overall, max where its worst operator is.
        return torch.cat([global_mean_pool(x, batch), global_max_pool(x, batch)], dim=1)
