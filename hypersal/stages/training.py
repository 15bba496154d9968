"""Training stages on image / saliency-map pairs."""
from __future__ import annotations

from hypersal.data.provider import MultitaskBatchProvider
from hypersal.stages import stage
from hypersal.train.fit import make_trainer, summary


def _model(job, tasks: list[str]):
    if job.model is None:
        job.model = job.new_model(tasks)
    return job.model


@stage("train", changes_model=True)
def train(job) -> dict:
    """The main stage: every training task, batches of one task each, in turn."""
    cfg = job.cfg.train
    tasks = job.train_tasks()
    model = _model(job, tasks)
    arrays = job.arrays("train", tasks)
    provider = MultitaskBatchProvider(arrays, [model.task_index(t) for t in tasks], cfg.batch_size,
                                      cfg.batches_per_task, seed=job.cfg.seed, aug=job.augment(),
                                      rank=job.rank, world_size=job.world_size)
    params = model.shared_parameters() + (model.hnet.task_parameters() if model.hnet is not None else [])
    trainer = make_trainer(job, "train", cfg, model, provider, params, val_tasks=tasks)
    trainer.fit()
    return summary(trainer)
