"""adapt: a model for a new task from k image-map pairs (the seed's goal: a few pairs in, a
model for that task out).

With a hypernetwork, the new task gets an embedding (starting at the mean of the trained
ones) and its own BatchNorm statistics; only the embedding learns, so the k pairs choose a
point in the space of tasks the hypernetwork has learned. Optionally the shared parameters are
then fine-tuned at a small learning rate. A plain model (generate: none) is fine-tuned whole.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hypersal.data.cache import SplitArrays
from hypersal.data.provider import BatchAndTaskProvider
from hypersal.errors import UserError, shorten
from hypersal.models.hyper import HyperSaliency
from hypersal.stages import stage
from hypersal.stages.training import all_parameters, model_for
from hypersal.train.actions import FreezeHNETForCatchup
from hypersal.train.fit import Fit, make_trainer, section_with, summary


class NewTaskEmbedding(nn.Module):
    """The model with the new task's embedding as its own parameter: only it is optimised,
    and the other tasks' embeddings are not touched (not even by weight decay)."""

    def __init__(self, model: HyperSaliency, task: int, keep_bn: bool = False):
        super().__init__()
        self.model, self.task, self.keep_bn = model, task, keep_bn
        self.embedding = nn.Parameter(model.hnet.task_embeddings.detach()[task].clone())   # (E,)

    def train(self, mode: bool = True) -> "NewTaskEmbedding":
        """adapt.bn_stats: keep: BatchNorm in eval mode while adapting: the new task's
        statistics (the trained tasks' mean) are used, never re-estimated from k images."""
        super().train(mode)
        if self.keep_bn:
            for m in self.model.mnet.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.model(x, task=self.task, embedding=self.embedding)

    def task_index(self, name) -> int:
        return self.model.task_index(name)

    def shared_parameters(self) -> list:
        """Everything but the new embedding (frozen while the embedding alone learns)."""
        return self.model.shared_parameters() + self.model.hnet.task_parameters()

    def commit(self) -> None:
        """Write the learned embedding into the model's table."""
        with torch.no_grad():
            self.model.hnet.task_embeddings[self.task].copy_(self.embedding)


def shots(arrays: SplitArrays, k: int, seed: int, key: str) -> SplitArrays:
    """k image-map pairs of the split, drawn without replacement (seeded), in memory."""
    if not 1 <= k <= len(arrays):
        raise UserError(f"shots must be between 1 and the {len(arrays)} training images of the task, got {k}",
                        key=key, fix="lower adapt.shots or add images")
    idx = np.sort(np.random.default_rng(seed).choice(len(arrays), k, replace=False))
    return SplitArrays(images=np.ascontiguousarray(arrays.images[idx]),
                       maps=[np.ascontiguousarray(m[idx]) for m in arrays.maps], tasks=arrays.tasks,
                       stems=[arrays.stems[i] for i in idx], sizes=[arrays.sizes[i] for i in idx],
                       paths=[arrays.paths[i] for i in idx])


def new_task_name(job) -> str:
    """adapt.task, the task adapt learns from k pairs: one of the dataset's tasks."""
    name, found = job.cfg.adapt.task, job.dataset().tasks
    if name not in found:
        raise UserError(f"the new task must be one of the dataset's tasks, got {shorten(name)}", key="adapt.task",
                        fix=f"set adapt.task to one of: {', '.join(found)}")
    return name


@stage("adapt", changes_model=True)
def adapt(job) -> dict:
    cfg = job.cfg.adapt
    name = new_task_name(job)
    model = model_for(job, job.train_tasks())
    if name not in model.task_names:
        model.add_task(name)
    task = model.task_index(name)
    data = shots(job.arrays("train", [name]), cfg.shots, cfg.shot_seed, "adapt.shots")
    provider = BatchAndTaskProvider(data, task, min(cfg.batch_size, cfg.shots), seed=job.cfg.seed,
                                    aug=job.augment(), rank=job.rank, world_size=job.world_size)
    val = [name] if cfg.val_batches > 0 else []
    result = {"task": name, "shots": cfg.shots, "images": data.stems}
    if model.hnet is None:  # a plain model: fine-tune everything on the k pairs
        trainer = make_trainer(job, "adapt", cfg, Fit(model, provider, all_parameters(model), val_tasks=val))
        trainer.fit()
        return {**result, **summary(trainer)}

    wrapper = NewTaskEmbedding(model, task, keep_bn=cfg.bn_stats == "keep")
    trainer = make_trainer(job, "adapt", cfg, Fit(wrapper, provider, [wrapper.embedding], val_tasks=val,
                                                  actions=[FreezeHNETForCatchup(None)]))
    trainer.fit()
    wrapper.commit()
    result.update(summary(trainer))
    if cfg.finetune_epochs > 0:
        finetune = section_with(cfg, epochs=cfg.finetune_epochs, optim={"lr": cfg.finetune_lr})
        tuner = make_trainer(job, "adapt_finetune", finetune,
                             Fit(wrapper, provider, [wrapper.embedding] + model.shared_parameters(), val_tasks=val))
        tuner.fit()
        wrapper.commit()
        result["finetune"] = summary(tuner)
    return result
