"""The few-shot study's small parts for unit tests: a small hypernetwork model with a task
encoder, a new task's Setting on random images, a batch, and what a train step reads of the trainer."""
from __future__ import annotations

import torch

from hypersal.models.hyper import HyperSaliency, MainNet
from hypersal.study import arms as A
from hypersal.train.losses import weighted

BCE = weighted("bce", key="loss")


def small(start="learned", prior=2, tasks=3, encoder=8, generate="decoder") -> HyperSaliency:
    """A small hypernetwork model with a task encoder (`encoder`: its width; 0: none);
    decoder+film generates the BatchNorm scales and shifts of encoder blocks 4 to 6 too."""
    torch.manual_seed(0)
    mnet = MainNet(cutoff=7, width=8, skip=4, prior=prior)
    return HyperSaliency(mnet, [f"t{i}" for i in range(tasks)], hypernet_options=dict(
        embedding_dim=4, hidden=[8], chunk_size=512, chunk_embedding_dim=4), per_task_bn=False, start=start,
        task_encoder={"width": encoder, "grid": 4}, generate=generate,
        encoder_from=4 if generate != "decoder" else None)


class Trainer:
    """What a train step reads of the trainer."""
    def __init__(self, model, params):
        self.model, self.device, self.scheduler = model, torch.device("cpu"), None
        self.optimizer = torch.optim.Adam(params, lr=1e-2)


class Batch:
    def __init__(self, n=6, task=1):
        torch.manual_seed(1)
        self.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
        self.maps = torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8)
        self.task = task


def setting(model, lr_seed=0) -> A.Setting:
    """A new task on random images: 4 pairs to adapt on, 5 images to score on."""
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    task = model.add_task("new")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 3, 32, 32, generator=gen)
    y = torch.rand(9, 1, 32, 32, generator=gen)
    with torch.no_grad():
        images = A.Images(x, model(x, task=task, encode_only=True))
    return A.Setting(model, task, images.take(slice(0, 4)), y[:4], images.take(slice(4, 9)), y[4:, 0] * 7,
                     BCE, batch_size=3, seed=lr_seed, pull=0.1, starts=2)


MNET = dict(cutoff=7, width=8, skip=4, prior=2, decoder="light")


def episode(model: HyperSaliency, **episodic) -> tuple[torch.Tensor, set[str]]:
    """One EpisodicTrainStep on Batch() with train.episodic's keys (defaults below, `episodic`
    over them): (its loss, the names of the parameters it changed)."""
    from hypersal.config import Config
    from hypersal.train.episodic import EpisodicTrainStep
    cfg = Config({"weight": 1.0, "inner_steps": 2, "inner_lr": 0.5, "support": 0.5, "encoder_weight": 0.0, **episodic})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = EpisodicTrainStep(BCE, cfg)(Trainer(model, list(model.parameters())), Batch())
    return loss, {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
