"""Training stages: pretrain_weights, pretrain_one_task, train, train_catchup."""
from __future__ import annotations

from pathlib import Path

import torch

from hypersal.config import options
from hypersal.data.provider import BatchAndTaskProvider, MultitaskBatchProvider
from hypersal.errors import UserError
from hypersal.models.hyper import HyperSaliency
from hypersal.stages import stage
from hypersal.train.actions import FreezeHNETForCatchup
from hypersal.train.checkpoint import load
from hypersal.train.episodic import EpisodicTrainStep
from hypersal.train.fit import Fit, make_trainer, summary
from hypersal.train.losses import weighted
from hypersal.train.steps import WeightsBatch, WeightsTrainStep


def model_for(job, tasks: list[str]) -> HyperSaliency:
    """The model the stage trains: the one earlier stages left, or a new one for `tasks`."""
    if job.model is None:
        job.model = job.new_model(tasks)
    return job.model


def all_parameters(model: HyperSaliency) -> list:
    return model.shared_parameters() + (model.hnet.task_parameters() if model.hnet is not None else [])


def needs_hypernet(model: HyperSaliency, stage_name: str) -> None:
    if model.hnet is None:
        raise UserError(f"stage {stage_name} needs a hypernetwork, but model.hypernet.generate is none",
                        key="pipeline", fix=f"remove {stage_name} from the pipeline, or generate decoder weights")


def multitask_provider(job, cfg, model, tasks: list[str], arrays=None) -> MultitaskBatchProvider:
    arrays = arrays if arrays is not None else job.arrays("train", tasks)
    return MultitaskBatchProvider(arrays, [model.task_index(t) for t in tasks], cfg.batch_size,
                                  cfg.batches_per_task, seed=job.cfg.seed, aug=job.augment(),
                                  rank=job.rank, world_size=job.world_size)


@stage("train", changes_model=True)
def train(job) -> dict:
    """The main stage: every training task, batches of one task each, in turn."""
    cfg = job.cfg.train
    tasks = job.train_tasks()
    model = model_for(job, tasks)
    reporter = [job.trial.reporter()] if job.trial is not None else []   # an adaptive sweep's trial
    trainer = make_trainer(job, "train", cfg, Fit(model, multitask_provider(job, cfg, model, tasks),
                                                  all_parameters(model), val_tasks=tasks, actions=reporter,
                                                  step=episodic_step(job, cfg, model)))
    trainer.fit()
    return summary(trainer)


def episodic_step(job, cfg, model: HyperSaliency):
    """train.episodic's step when its weight or encoder_weight is > 0 (None: the usual multitask step)."""
    if not options.episodes(cfg):
        return None
    needs_hypernet(model, "train with episodic.weight or encoder_weight > 0")
    if cfg.episodic.encoder_weight > 0 and model.task_encoder is None:   # options.encoder_weight_needs_encoder
        raise UserError("encoder_weight > 0 trains the task encoder, but the model has none",
                        key="train.episodic.encoder_weight", fix="give it a width, e.g. model.task_encoder.width: 64")
    if job.world.active:     # fp32 and whole batches: hypersal.config.options' rule, checked before any stage
        raise UserError("episodic training runs one process, fp32, whole batches", key="train.episodic.weight",
                        fix="train episodically on one process")
    return EpisodicTrainStep(weighted(cfg.loss, key="train.loss"), cfg.episodic, cfg.clip_grad)


@stage("pretrain_one_task", changes_model=True)
def pretrain_one_task(job) -> dict:
    """Prime the model on one task (the seed primed on AIM) before the multitask stage."""
    cfg = job.cfg.pretrain_one_task
    tasks = job.train_tasks()
    task = cfg.task or tasks[0]
    if task not in tasks:
        raise UserError(f"task '{task}' is not a training task", key="pretrain_one_task.task",
                        fix=f"use one of: {', '.join(tasks)}")
    model = model_for(job, tasks)
    arrays = job.arrays("train", [task])
    provider = BatchAndTaskProvider(arrays, model.task_index(task), cfg.batch_size, seed=job.cfg.seed,
                                    aug=job.augment(), rank=job.rank, world_size=job.world_size)
    trainer = make_trainer(job, "pretrain_one_task", cfg, Fit(model, provider, all_parameters(model), val_tasks=[task]))
    trainer.fit()
    return {"task": task, **summary(trainer)}


@stage("train_catchup", changes_model=True)
def train_catchup(job) -> dict:
    """Every shared parameter frozen (hypernet and main network): only the task embeddings (and
    each task's BatchNorm statistics) learn, so tasks that lag behind catch up."""
    cfg = job.cfg.train_catchup
    tasks = job.train_tasks()
    model = model_for(job, tasks)
    needs_hypernet(model, "train_catchup")
    trainer = make_trainer(job, "train_catchup", cfg, Fit(model, multitask_provider(job, cfg, model, tasks),
                                                          all_parameters(model), val_tasks=tasks,
                                                          actions=[FreezeHNETForCatchup(None)]))
    trainer.fit()
    return summary(trainer)


class WeightsProvider:
    """pretrain_weights' batches: the tasks in turn, each with its target parameters."""

    def __init__(self, targets: dict[int, dict]):
        self.order = sorted(targets)
        self.targets = targets
        self.batch_size = 1

    def batch(self, step: int) -> WeightsBatch:
        task = self.order[step % len(self.order)]
        return WeightsBatch(task, self.targets[task])


def load_targets(model: HyperSaliency, weights_dir: Path, tasks: list[str]) -> dict[int, dict]:
    """Each task's <task>.pth (a plain MainNet state dict): its generated parameters become the
    targets; its BatchNorm statistics go straight into the task's row of the bank."""
    missing = [t for t in tasks if not (Path(weights_dir) / f"{t}.pth").is_file()]
    if missing:
        raise UserError(f"no weight file for task(s) {', '.join(missing)}", file=weights_dir,
                        key="pretrain_weights.weights_dir", fix="add <task>.pth for every training task")
    targets = {}
    for name in tasks:
        state = load(Path(weights_dir) / f"{name}.pth")
        task = model.task_index(name)
        try:
            targets[task] = {n: state[n].float() for n in model.generated}
        except KeyError as e:
            raise UserError(f"{name}.pth has no parameter {e}", file=Path(weights_dir) / f"{name}.pth",
                            fix="use state dicts of a MainNet with the same encoder cutoff and decoder") from None
        if model.bn_bank is not None:
            with torch.no_grad():
                for buf, value in model.bn_bank.for_task(task).items():
                    value.copy_(state[buf])
    return targets


@stage("pretrain_weights", changes_model=True)
def pretrain_weights(job) -> dict:
    """Fit the hypernetwork's output for each task to given main-network weights (the seed
    pretrained towards its distilled per-task models)."""
    cfg = job.cfg.pretrain_weights
    tasks = job.train_tasks()
    model = model_for(job, tasks)
    needs_hypernet(model, "pretrain_weights")
    provider = WeightsProvider(load_targets(model, cfg.weights_dir, tasks))
    trainer = make_trainer(job, "pretrain_weights", cfg, Fit(model, provider, all_parameters(model),
                                                             step=WeightsTrainStep(), prefetch=False))
    trainer.fit()
    return summary(trainer)
