"""fewshot_study: every arm of the few-shot study on one fold (hypersal/study/).

After `train` on the fold's training tasks (study.protocol), in two phases:
1. budgets: for each trained arm and k, every learning rate of `study.lrs[arm]` is run to the
   largest of `study.steps` on the selection tasks (held-out members of the *training*
   families), k pairs drawn from their val images and scored on their other val images; the
   (lr, steps) with the best mean CC is kept. No test image is seen.
2. scores: for each test task (the held-out family's members, then the seen families' new
   members with `seen_arms`), k and draw, each arm with its budget: k pairs drawn from the
   task's val images (images the model never trained on; the draw's seed depends on
   study.draw_seed, the draw, k and the task, never on the model seed), scored by mean CC
   on the first `test_images` test images against their maps at original size, as `test`
   does. The seen families' members: `seen_arms` at `seen_shots`.
Results go to <run>/study.json as they come (a restarted job goes on where it stopped); a stop
signal is obeyed between units of work (each learning rate of a budget, each arm's draws).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
import zlib

import numpy as np
import torch

from hypersal.config import options
from hypersal.data.cache import read_map
from hypersal.errors import UserError
from hypersal.log import say
from hypersal.stages import stage
from hypersal.stages.evaluate import trained_model
from hypersal.study import arms as A, protocol, vectorised as V
from hypersal.train import signals
from hypersal.train.losses import weighted
from hypersal.train.steps import images_to_input, maps_to_target
from hypersal.yamlio import write_text_atomic


def draw(n: int, k: int, seed: list) -> np.ndarray:
    if k > n:
        raise UserError(f"k = {k} pairs but only {n} val images", key="study.shots",
                        fix="lower the largest k or add images (data.synth.n)")
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def task_seed(task: str) -> int:
    return zlib.crc32(task.encode()) % 100_000


class Fold:
    """The fold's data as tensors: per split, the images, their features and each task's maps."""

    def __init__(self, job, model, task: int, tasks: list[str]):
        self.job, self.model, self.task = job, model, task
        self.images, self.maps, self.originals = {}, {}, {}
        for split in ("val", "test"):
            arrays = job.arrays(split, tasks)
            x = images_to_input(torch.from_numpy(np.array(arrays.images)).permute(0, 3, 1, 2), job.device)
            with torch.no_grad():
                encoded = tuple(torch.cat(parts) if parts[0] is not None else None for parts in zip(
                    *[model(x[i:i + 64], task=task, encode_only=True) for i in range(0, len(x), 64)]))
            self.images[split] = A.Images(x, encoded)
            for i, name in enumerate(tasks):
                self.maps[split, name] = maps_to_target(torch.from_numpy(np.array(arrays.maps[i])).unsqueeze(1),
                                                        job.device)
        self.index = job.dataset()

    def originals_of(self, name: str) -> torch.Tensor:
        """The test maps of a task at their original size (N, H, W)."""
        if name not in self.originals:
            maps = [read_map(p).astype(np.float32) for p in self.index.map_files("test", name)]
            if len({m.shape for m in maps}) != 1:
                raise UserError("the study needs test maps of one size", key="data",
                                fix="use a dataset whose images share a size (hypersal.data.synth)")
            self.originals[name] = torch.from_numpy(np.stack(maps))
        return self.originals[name]


@stage("fewshot_study")
def fewshot_study(job) -> dict:
    cfg = job.cfg.study
    check(cfg)
    base = trained_model(job, "fewshot_study")
    if base.hnet is None:
        raise UserError("the study adapts a hypernetwork, but model.hypernet.generate is none", key="pipeline",
                        fix="train a hypernetwork before fewshot_study")
    options.enforce({"pipeline": ["fewshot_study"], "study": cfg.to_dict(),
                     "model": {"task_encoder": {"width": 64 if base.task_encoder is not None else 0}}},
                    options.study_arms_can_run)       # the arms this model can run, each with its lrs
    torch.set_grad_enabled(True)
    model = copy.deepcopy(base).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    new = model.add_task("new task")
    select, tests, seen = protocol.selection_tasks(cfg), protocol.test_tasks(cfg), protocol.seen_tasks(cfg)
    fold = Fold(job, model, new, select + tests + seen)
    record_file = job.folder.path / "study.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    record.setdefault("family", cfg.family)
    record.setdefault("budgets", {})
    record.setdefault("scores", {})
    record.setdefault("adapt_ms", {})          # per score: the milliseconds its arm took to adapt
    mnet_args = job.model_args(base.task_names)["mnet"]
    loss_fn = weighted(cfg.loss, key="study.loss")
    started = time.monotonic()

    n_budgets, n_scores = totals(cfg, tests, seen)

    def save():
        write_text_atomic(record_file, json.dumps(record, indent=1, sort_keys=True) + "\n")
        job.progress(f"study: budgets {len(record['budgets'])}/{n_budgets}, scores {len(record['scores'])}/{n_scores}")

    def setting(name: str, k: int, d: int, split: str) -> A.Setting:
        val = fold.images["val"]
        idx = draw(len(val), k, [cfg.draw_seed, d, k, task_seed(name)])
        if split == "val":            # selection: scored on the other val images
            rest = np.setdiff1d(np.arange(len(val)), idx)[: cfg.select_images]
            query, query_y = val.take(torch.from_numpy(rest)), fold.maps["val", name][rest][:, 0]
        else:                         # the first test_images test images, their maps at original size
            n = cfg.test_images or len(fold.images["test"])
            query, query_y = fold.images["test"].take(slice(0, n)), fold.originals_of(name)[:n]
        return A.Setting(model, new, val.take(torch.from_numpy(idx)), fold.maps["val", name][idx], query, query_y,
                         loss_fn, cfg.batch_size, seed=job.cfg.seed * 1000 + d, pull=cfg.pull, starts=cfg.starts,
                         lora_rank=cfg.lora_rank)

    steps = sorted(cfg.steps)
    for arm in budget_arms(cfg):
        for k in cfg.shots:
            key = protocol.budget_key(arm, k)
            if key in record["budgets"]:
                continue
            tried = {}
            settings = [setting(name, k, d, "val") for name in select for d in range(cfg.select_draws)]
            pulls = pull_grid(cfg, arm)
            for lr, pull in [(lr, pull) for lr in cfg.lrs[arm] for pull in pulls]:
                signals.check()           # a stop (SIGTERM, USR2) between units of work: what is saved stays
                these = with_pull(settings, arm, pull)
                if cfg.vectorise and V.applies(arm, job.device, these[0].weight_pull):
                    runs = V.run_draws(arm, these, steps, lr, mnet_args)
                else:
                    runs = [A.run(arm, one, steps, lr, mnet_args) for one in these]
                for step in steps:
                    tried[protocol.tried_key(lr, step, pull)] = float(np.mean([r[step] for r in runs]))
            best = max(tried, key=tried.get)
            lr, step, pull = protocol.parse_tried(best)
            record["budgets"][key] = {"lr": lr, "steps": step, "val_cc": tried[best], "tried": tried,
                                      **({} if pull is None else {"pull": pull})}
            save()
            say(f"study budget {key}: lr {lr}, {step} steps" + ("" if pull is None else f", pull {pull}")
                + f" (val CC {tried[best]:.3f}; {time.monotonic() - started:.0f} s)")

    for group, names, arm_list, shots in (("family", tests, cfg.arms, cfg.shots),
                                          ("seen", seen, cfg.seen_arms, cfg.seen_shots)):
        for name in names:
            for k in shots:
                if all(protocol.score_key(name, k, d, arm) in record["scores"]
                       for d in range(cfg.draws) for arm in arm_list):
                    continue
                tested = [setting(name, k, d, "test") for d in range(cfg.draws)]
                for arm in arm_list:
                    budget = record["budgets"].get(protocol.budget_key(arm, k), {"lr": 0.0, "steps": 1})
                    settings = with_pull(tested, arm, budget.get("pull"))
                    keys = [protocol.score_key(name, k, d, arm) for d in range(cfg.draws)]
                    missing = [d for d, key in enumerate(keys) if key not in record["scores"]]
                    if missing and cfg.vectorise and V.applies(arm, job.device, settings[0].weight_pull) \
                            and len(settings) > 1:
                        # every draw again, not the missing ones alone: a row's rounding may depend
                        # on the batch it is in, and a resumed run gives the uninterrupted one's numbers
                        scores, ms = V.timed_draws(arm, settings, [budget["steps"]], budget["lr"], mnet_args)
                        timed = {d: (scores[d], ms) for d in missing}                # ms: per draw of the batch
                    else:
                        timed = {d: A.timed(arm, settings[d], [budget["steps"]], budget["lr"], mnet_args)
                                 for d in missing}
                    for d in missing:
                        record["scores"][keys[d]] = timed[d][0][budget["steps"]]
                        record["adapt_ms"][keys[d]] = timed[d][1]
                    if missing:
                        save()
                        signals.check()
                save()
                means = {arm: np.mean([record["scores"][protocol.score_key(name, k, d, arm)] for d in range(cfg.draws)])
                         for arm in arm_list}
                say(f"study {group} {name} k={k}: " + ", ".join(f"{a} {v:.3f}" for a, v in means.items())
                    + f" ({time.monotonic() - started:.0f} s)")
    record["groups"] = {"family": tests, "seen": seen}
    save()
    return summary(record, cfg)


def check(cfg) -> None:
    """What the config's tables (hypersal.config.choices: family, arm names) cannot say alone."""
    protocol.check(cfg)
    if set(cfg.seen_shots) - set(cfg.shots):
        raise UserError("seen_shots must be some of shots (their budgets are chosen for those)",
                        key="study.seen_shots", fix=f"use some of {list(cfg.shots)}")
    if not cfg.steps or min(cfg.steps) < 1:
        raise UserError("steps must list budgets of at least 1 step", key="study.steps", fix="e.g. [10, 25, 50]")


def pull_grid(cfg, arm: str) -> list:
    """The pulls an arm's budget is chosen among: study.pulls for the saliency arms (the weight
    on their offsets), study.weight_pulls for the full fine-tuning arms (L2-SP: the weight on
    every weight's squared distance to the start's); [None] where there is no grid."""
    if cfg.pulls and arm in A.PULL_ARMS:
        return list(cfg.pulls)
    if cfg.weight_pulls and arm in A.WEIGHT_PULL_ARMS:
        return list(cfg.weight_pulls)
    return [None]


def with_pull(settings: list, arm: str, pull: float | None) -> list:
    """The settings with the arm's pull set to `pull` (a budget's, from pull_grid), or as they
    are (study.pull; no weight pull) for None."""
    if pull is None:
        return settings
    field = "weight_pull" if arm in A.WEIGHT_PULL_ARMS else "pull"
    return [dataclasses.replace(one, **{field: pull}) for one in settings]


def budget_arms(cfg) -> list[str]:
    """The arms whose budgets the stage chooses: the trained ones of arms and seen_arms, in order."""
    return [a for a in dict.fromkeys([*cfg.arms, *cfg.seen_arms]) if a in A.TRAINED]


def totals(cfg, tests: list[str], seen: list[str]) -> tuple[int, int]:
    """(budgets, scores) the stage writes in all: its progress in `experiment.py status`."""
    n_budgets = len(budget_arms(cfg)) * len(cfg.shots)
    per_draw = len(tests) * len(cfg.shots) * len(cfg.arms) + len(seen) * len(cfg.seen_shots) * len(cfg.seen_arms)
    return n_budgets, per_draw * cfg.draws


def summary(record: dict, cfg) -> dict:
    """The mean CC of each arm over the held-out family's tasks and draws, per k."""
    values: dict[str, list] = {}
    for key, value in record["scores"].items():
        name, k, _, arm = protocol.parse_key(key)
        if name in record["groups"]["family"]:
            values.setdefault(f"k{k}/{arm}", []).append(value)
    return {"family": record["family"], **{key: float(np.mean(v)) for key, v in sorted(values.items())}}
