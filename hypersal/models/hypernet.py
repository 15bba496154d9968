"""Hypernetworks: a task embedding in, the generated main-network parameters out (flat).

Both emit `base + delta(embedding)`: `base` is the main network's own initialisation (shared,
learned), `delta` an MLP's output whose last layer starts near zero. Every task therefore
starts from a well-initialised network, whatever the MLP's scale (hypernetworks initialised
naively generate weights orders of magnitude off).

| name    | delta                                                                      |
|---------|----------------------------------------------------------------------------|
| chunked | (default) one MLP, fed [task embedding, chunk embedding], emits one chunk   |
|         | of `chunk_size` values per chunk embedding; chunks are concatenated        |
| simple  | one MLP from the task embedding to every value at once                     |

Parameters are split into `task` (the embeddings: one row per task) and `shared` (the rest),
which stages freeze separately (train_catchup trains the task embeddings only).
"""
from __future__ import annotations

import math

import torch

from hypersal.config import choices
from torch import nn


HYPERNETS = choices.HYPERNETS   # the names and where each lives: hypersal/config/choices.py
DELTA_INIT_STD = 1e-3


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    last = layers[-1]
    nn.init.normal_(last.weight, std=DELTA_INIT_STD)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers)


class Hypernet(nn.Module):
    def __init__(self, base: torch.Tensor, n_tasks: int, embedding_dim: int):
        super().__init__()
        self.n_outputs = base.numel()
        self.base = nn.Parameter(base.detach().clone().flatten())         # (N,)
        self.task_embeddings = nn.Parameter(torch.randn(n_tasks, embedding_dim))  # (T, E)

    def delta(self, embedding: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """(E,) task embedding -> (N,) parameters."""
        return self.base + self.delta(embedding)

    def task_parameters(self) -> list[nn.Parameter]:
        return [self.task_embeddings]

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "task_embeddings"]


class ChunkedHypernet(Hypernet):
    def __init__(self, base: torch.Tensor, n_tasks: int, embedding_dim: int = 8,
                 hidden: list[int] = (64, 64), chunk_size: int = 4096, chunk_embedding_dim: int = 8):
        super().__init__(base, n_tasks, embedding_dim)
        self.chunk_size = chunk_size
        n_chunks = math.ceil(self.n_outputs / chunk_size)
        self.chunk_embeddings = nn.Parameter(torch.randn(n_chunks, chunk_embedding_dim))  # (K, Ec)
        self.mlp = mlp([embedding_dim + chunk_embedding_dim, *hidden, chunk_size])

    def delta(self, embedding: torch.Tensor) -> torch.Tensor:
        n_chunks = self.chunk_embeddings.shape[0]
        task = embedding.expand(n_chunks, -1)                           # (K, E)
        chunks = self.mlp(torch.cat([task, self.chunk_embeddings], 1))  # (K, chunk_size)
        return chunks.flatten()[: self.n_outputs]                       # (N,)


class SimpleHypernet(Hypernet):
    def __init__(self, base: torch.Tensor, n_tasks: int, embedding_dim: int = 8,
                 hidden: list[int] = (64, 64)):
        super().__init__(base, n_tasks, embedding_dim)
        self.mlp = mlp([embedding_dim, *hidden, self.n_outputs])

    def delta(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.mlp(embedding)                                      # (N,)
