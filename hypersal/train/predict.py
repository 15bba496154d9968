"""A model's saliency maps for a split's arrays, batch by batch (the test stage, maps_tracker)."""
from __future__ import annotations

import numpy as np
import torch

from hypersal.data.provider import sequential
from hypersal.train import signals
from hypersal.train.steps import Precision, images_to_input


@torch.no_grad()
def predict(model, arrays, array_task: int | None, task: int, batch_size: int, device,
            precision: Precision = Precision()) -> np.ndarray:
    """Saliency probabilities (N, H, W) at the training size, float32 on the CPU."""
    model.eval()
    out = []
    for batch in sequential(arrays, array_task, task, batch_size):
        signals.check()
        with precision.autocast(device):
            logits = model(images_to_input(batch.images, device), task=task)
        out.append(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
    return np.concatenate(out)
