"""fewshot: how well a new task is learned from k image-map pairs, method against method.

After a multi-task stage, for the held-out task (`adapt.task`) and every k in `fewshot.shots`
(each drawn `len(shot_seeds)` times), three ways to get a model from the k pairs:

| method   | starting point                                  | learns                          |
|----------|-------------------------------------------------|---------------------------------|
| hnet     | the multi-task hypernetwork (a new embedding)   | the task embedding only         |
| finetune | a plain main network with the multi-task encoder | everything                     |
| scratch  | a plain main network, random weights            | everything                      |

Each is scored (CC, KLD, SIM) against the held-out task's maps of the test split. Finished
combinations are recorded at once (<run>/fewshot.json), so a restarted job skips them.
"""
from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import torch

from hypersal.config import Config
from hypersal.data.provider import BatchAndTaskProvider
from hypersal.errors import UserError
from hypersal.log import say
from hypersal.models.hyper import HyperSaliency, MainNet
from hypersal.stages import stage
from hypersal.stages.adapt import NewTaskEmbedding, new_task_name, shots
from hypersal.stages.evaluate import pick_split, predict, score_task, trained_model
from hypersal.train.actions import FreezeHNETForCatchup
from hypersal.train.fit import Fit, make_trainer, section_with
from hypersal.yamlio import write_text_atomic

METHODS = ("hnet", "finetune", "scratch")
SCORES = ["cc", "kld", "sim"]


def plain_from(job, base: HyperSaliency, task: str, keep_encoder: bool) -> HyperSaliency:
    """A plain main network of the run's architecture, for one task: with the base's encoder
    (its BatchNorm statistics averaged over the trained tasks) or freshly initialised."""
    args = {**job.model_args([task])["mnet"], "weights": None, "weights_path": None}
    fresh = MainNet(**args)
    if keep_encoder:
        state = fresh.state_dict()
        mine = base.mnet.state_dict()
        for name in state:
            if not name.startswith("encoder."):
                continue
            if base.bn_bank is not None and name in base.bn_bank.names:
                state[name] = base.bn_bank.mean_row(name)
            else:
                state[name] = mine[name]
        fresh.load_state_dict(state)
    return HyperSaliency(fresh, [task], generate="none", per_task_bn=False).to(job.device)


def section(job, lr: float, steps: int, batch: int) -> Config:
    """adapt's training options with this method's steps, batch and learning rate."""
    return section_with(job.cfg.adapt, epochs=1, steps_per_epoch=steps, batch_size=batch, val_batches=0,
                        actions=[], optim={"lr": lr}, checkpoint={"restore_best": False})


@stage("fewshot")
def fewshot(job) -> dict:
    cfg = job.cfg.fewshot
    base = trained_model(job, "fewshot")
    task = new_task_name(job)
    if task in base.task_names:
        raise UserError(f"the model was trained on '{task}': it is not held out", key="adapt.task",
                        fix="fewshot goes after a training stage that holds adapt.task out")
    for method in cfg.methods:
        if method not in METHODS:
            raise UserError(f"unknown method '{method}'", key="fewshot.methods", fix=f"use {', '.join(METHODS)}")
    index = job.dataset()
    split = pick_split(index, cfg.split)
    train_arrays = job.arrays("train", [task])
    test_arrays = job.arrays(split, [task])
    maps = index.map_files(split, task)
    record_file = job.folder.path / "fewshot.json"
    done = json.loads(record_file.read_text()) if record_file.exists() else {}
    lrs = {"hnet": cfg.hnet_lr, "finetune": cfg.finetune_lr, "scratch": cfg.scratch_lr}
    for k in cfg.shots:
        for seed in cfg.shot_seeds:
            data = shots(train_arrays, k, seed, "fewshot.shots")
            for method in cfg.methods:
                key = f"k{k}/seed{seed}/{method}"
                if key in done:
                    continue
                torch.manual_seed(job.cfg.seed * 1000 + seed)
                name = f"fewshot_{k}_{seed}_{method}"
                model, params, extra = prepare(job, method, base, task)
                task_index = extra.task if method == "hnet" else 0
                provider = BatchAndTaskProvider(data, task_index, min(cfg.batch_size, k), seed=job.cfg.seed + seed,
                                                aug=job.augment())
                trainer = make_trainer(job, name, section(job, lrs[method], cfg.steps, min(cfg.batch_size, k)),
                                       Fit(extra, provider, params,
                                           actions=[FreezeHNETForCatchup(None)] if method == "hnet" else []))
                trainer.fit()
                preds = predict(extra, test_arrays, 0, task_index, 32, job.device)
                done[key] = score_task(preds, maps, None, SCORES, seed)
                write_text_atomic(record_file, json.dumps(done, indent=1) + "\n")
                shutil.rmtree(job.folder.checkpoints / name, ignore_errors=True)
                say(f"fewshot {task} k={k} draw {seed} {method}: cc {done[key]['cc']:.3f}")
    return {"task": task, **summarise(done, cfg.shots, cfg.methods)}


def prepare(job, method: str, base: HyperSaliency, task: str):
    """(the model trained, its trainable parameters, what the trainer drives: adapt's wrapper
    for hnet, the model itself otherwise)."""
    if method == "hnet":
        model = copy.deepcopy(base)
        wrapper = NewTaskEmbedding(model, model.add_task(task))
        return model, [wrapper.embedding], wrapper
    model = plain_from(job, base, task, keep_encoder=method == "finetune")
    return model, model.shared_parameters(), model


def summarise(done: dict, shots_list, methods) -> dict:
    """Mean and spread over the draws, per k and method: {"k10": {"hnet": {"cc": .., "cc_std": ..}}}."""
    out = {}
    for k in shots_list:
        per = {}
        for method in methods:
            rows = [v for key, v in done.items() if key.startswith(f"k{k}/") and key.endswith(f"/{method}")]
            if rows:
                per[method] = {}
                for s in SCORES:
                    values = [r[s] for r in rows]
                    per[method][s] = float(np.mean(values))
                    per[method][f"{s}_std"] = float(np.std(values))
        out[f"k{k}"] = per
    return out
