"""export: one plain main network per task, usable with no hypernetwork and no hypersal config.

    <run>/export/<task>.pth     a MainNet state dict (generated weights and the task's BN statistics)
    <run>/export/mainnet.yaml   the MainNet arguments (encoder cutoff, decoder, width)

Load one with `hypersal.stages.export.load_exported(folder, task)`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from hypersal import yamlio
from hypersal.models.hyper import MainNet
from hypersal.stages import stage
from hypersal.stages.evaluate import trained_model
from hypersal.train.checkpoint import save_atomic


def mainnet_args(job) -> dict:
    args = dict(job.model_args(job.model.task_names)["mnet"])
    args.update(weights=None, weights_path=None)   # every weight is in the .pth
    return args


@stage("export")
def export(job) -> dict:
    cfg = job.cfg.export
    model = trained_model(job, "export")
    tasks = list(cfg.tasks) or list(model.task_names)
    folder = job.folder.path / "export"
    if job.is_main:
        folder.mkdir(exist_ok=True)
        yamlio.dump(mainnet_args(job), folder / "mainnet.yaml")
        for task in tasks:
            save_atomic(model.export(task), folder / f"{task}.pth")
    return {"folder": str(folder), "tasks": tasks}


def load_exported(folder: Path | str, task: str, device: str = "cpu") -> MainNet:
    """A plain MainNet for one task from an export folder, in eval mode."""
    folder = Path(folder)
    net = MainNet(**yamlio.load(folder / "mainnet.yaml"))
    net.load_state_dict(torch.load(folder / f"{task}.pth", map_location=device, weights_only=True))
    return net.to(device).eval()
