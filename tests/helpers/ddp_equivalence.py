"""Helper for test_distributed.py: train a few steps with the real providers, model, DDP and
global BatchNorm, as rank RANK of 2 (or alone without RANK), and save the weights after each step.

    python tests/helpers/ddp_equivalence.py CACHE_DIR OUT_DIR DTYPE STEPS
"""
import os
import sys
import warnings

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from hypersal.data import cache, layout, synth
from hypersal.data.provider import Augment, MultitaskBatchProvider
from hypersal.models.hyper import HyperSaliency, MainNet
from hypersal.train import distributed as D
from hypersal.train.steps import images_to_input, maps_to_target


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    cache_dir, out_dir, dtype, steps = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3]), int(sys.argv[4])
    rank = int(os.environ.get("RANK", -1))
    world = 2 if rank >= 0 else 1
    data = synth.make(os.path.join(cache_dir, "ddp-data"), n=20, size=(48, 64), tasks=["frequency_tuned", "center_bias"],
                      quiet=True, workers=1)
    index = layout.scan(data / "images", data / "maps")
    arrays = cache.load_split(index, "train", index.tasks, (32, 32), cache_dir, quiet=True)
    torch.manual_seed(0)
    model = HyperSaliency(MainNet(cutoff=7), index.tasks, hypernet_options=dict(
        embedding_dim=8, hidden=[16], chunk_size=1024, chunk_embedding_dim=8)).to(dtype)
    forward = model
    if rank >= 0:
        D.init(D.World(rank, rank, 2), torch.device("cpu"))
        D.sync_batchnorm(model.mnet, torch.device("cpu"))
        model.to(dtype)
        forward = DDP(model, broadcast_buffers=False, find_unused_parameters=True)
    provider = MultitaskBatchProvider(arrays, [0, 1], 8, 1, seed=0, aug=Augment(hflip=0.5), rank=max(rank, 0), world_size=world)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    for step in range(steps):
        batch = provider.batch(step)
        x = images_to_input(batch.images, torch.device("cpu")).to(dtype)
        y = maps_to_target(batch.maps, torch.device("cpu")).to(dtype)
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(forward(x, task=batch.task), y).backward()
        opt.step()
        if rank <= 0:
            torch.save(torch.cat([p.detach().flatten() for p in model.parameters()]),
                       os.path.join(out_dir, f"w{world}_{step}.pt"))
    D.shutdown(D.World(max(rank, 0), max(rank, 0), world))


if __name__ == "__main__":   # synth spawns processes, which import this module again
    main()
