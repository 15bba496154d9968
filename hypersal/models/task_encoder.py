"""The task encoder (model.task_encoder): k (image, map) pairs in, a new task's embedding and
offsets on its generated saliency tensors out, in one forward pass and no gradient step.

Each pair is described by what the shared encoder sees and where the map puts its mass:

    [ map-weighted mean of the encoder's features (C),   what is salient
      mean of the features (C),                          what is there
      the map averaged on a grid x grid (grid^2) ]       where it is salient

A small MLP reads each pair's description (layer-normalised: the features' scale drifts while
the networks train); the pairs are mean-pooled, so any k works and their order does not
matter; two linear heads give the embedding's change from the start (model.hypernet.start)
and the offsets on the generated head and output (HyperSaliency.saliency_names), both zero at
initialisation, so an untrained encoder gives the start embedding (the k0_start arm).
It is trained in train.episodic's episodes (encoder_weight): support pairs in, query loss out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TaskEncoder(nn.Module):
    def __init__(self, channels: int, embedding_dim: int, offsets: dict[str, torch.Size],
                 width: int = 64, grid: int = 8):
        super().__init__()
        self.grid = grid
        self.names, self.shapes = list(offsets), [torch.Size(s) for s in offsets.values()]
        n_in = 2 * channels + grid * grid
        self.pair = nn.Sequential(nn.LayerNorm(n_in), nn.Linear(n_in, width), nn.ReLU(),
                                  nn.Linear(width, width), nn.ReLU())
        self.to_embedding = nn.Linear(width, embedding_dim)
        self.to_offsets = nn.Linear(width, sum(s.numel() for s in self.shapes)) if self.shapes else None
        for head in (self.to_embedding, self.to_offsets):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def describe(self, features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """(k, C, h, w) features and (k, 1, H, W) maps in [0, 1] -> (k, 2C + grid^2)."""
        maps = maps.to(features.dtype)
        mass = F.adaptive_avg_pool2d(maps, features.shape[-2:])                        # (k, 1, h, w)
        weights = mass / mass.sum((2, 3), keepdim=True).clamp_min(1e-6)
        salient = (features * weights).sum((2, 3))                                      # (k, C)
        where = F.adaptive_avg_pool2d(maps, self.grid).flatten(1)                       # (k, grid^2)
        return torch.cat([salient, features.mean((2, 3)), where], 1)

    def forward(self, features: torch.Tensor, maps: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(the task's embedding (E,), {generated tensor name: offset}) for k >= 1 pairs."""
        pooled = self.pair(self.describe(features, maps)).mean(0)                       # (width,)
        embedding = start + self.to_embedding(pooled)
        if self.to_offsets is None:
            return embedding, {}
        pieces = self.to_offsets(pooled).split([s.numel() for s in self.shapes])
        return embedding, {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes)}
