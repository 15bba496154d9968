"""What every stage of a run shares: config, run folder, tracker, device, data and the model."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hypersal.config import stagelist
from hypersal.config import Config
from hypersal.data import cache, layout, synth
from hypersal.data.provider import Augment
from hypersal.errors import UserError
from hypersal.log import say
from hypersal.models.hyper import HyperSaliency, MainNet
from hypersal.runfolder import RunFolder
from hypersal.study import protocol
from hypersal.train.checkpoint import load, save_atomic
from hypersal.train.cpus import worker_count
from hypersal.train.distributed import World, barrier, sync_batchnorm
from hypersal.tracking import Tracker


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda, but this machine has no usable GPU", key="device",
                        fix="use device: auto, or ask Slurm for a GPU (sbatch gpus: 1)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device '{name}'", key="device", fix="use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass
class Job:
    cfg: Config
    folder: RunFolder
    tracker: Tracker
    device: torch.device
    world: World = field(default_factory=World)
    model: HyperSaliency | None = None
    collective: bool = False   # True during stages every rank runs (barriers must pair up)
    trial: Any = None          # an adaptive sweep's trial (runner/trial.py): the train stage reports to it
    _index: layout.DatasetIndex | None = field(default=None, repr=False)
    _arrays: dict = field(default_factory=dict, repr=False)

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def world_size(self) -> int:
        return self.world.size

    def main_first(self, fn):
        """fn() on rank 0, then on the others (which then find its files: caches, datasets).
        Only in stages every rank runs; in rank 0's own stages it is just fn()."""
        if not (self.world.active and self.collective):
            return fn()
        result = fn() if self.is_main else None
        barrier(self.world)
        return result if self.is_main else fn()

    # --- data -------------------------------------------------------------------------------
    def dataset(self) -> layout.DatasetIndex:
        """The dataset index; generated (once, shared through the cache folder) without images_dir."""
        if self._index is None:
            data = self.cfg.data
            images_dir, maps_dir = data.images_dir, data.maps_dir
            if images_dir is None:
                images_dir, maps_dir = self.main_first(self._synth)
            elif maps_dir is None:
                raise UserError("data.images_dir is set but data.maps_dir is not", key="data.maps_dir",
                                fix="point it at the folder with one subfolder of maps per task")
            self._index = layout.scan(images_dir, maps_dir, None, data.fixations_dir, data.task_images)
        return self._index

    def _synth(self) -> tuple[Path, Path]:
        s = self.cfg.data.synth
        names = '-'.join(s.tasks)
        if len(names) > 120:          # a file name's limit is 255 bytes: many tasks, their hash
            names = f"{len(s.tasks)}tasks-" + hashlib.sha1(names.encode()).hexdigest()[:12]
        key = f"synth-{s.n}-{s.size[0]}x{s.size[1]}-{s.seed}-{names}"
        if s.images_dir:
            key += "-" + hashlib.sha1(str(s.images_dir).encode()).hexdigest()[:8]
        out = Path(self.cfg.data.cache_dir or cache.default_cache_dir()) / key
        say(f"generating the dataset in {out}" if not out.exists() else f"using the dataset in {out}")
        synth.make(out, s.n, tuple(s.size), list(s.tasks), s.seed, s.images_dir,
                   workers=worker_count(self.cfg.data.workers), quiet=not self.is_main)
        return out / "images", out / "maps"

    def train_tasks(self) -> list[str]:
        """`tasks` (or, when empty, the few-shot study's fold's training tasks if study.family is
        set, else every task of the dataset), minus the task adapt holds out."""
        found = self.dataset().tasks
        wanted = list(self.cfg.tasks) or (protocol.training_tasks(self.cfg.study) if self.cfg.study.family
                                          else found)
        unknown = [t for t in wanted if t not in found]
        if unknown:
            raise UserError(f"no maps for task(s) {', '.join(unknown)}", key="tasks",
                            fix=f"the dataset has: {', '.join(found)}")
        held_out = stagelist.held_out_task(self.cfg)
        return [t for t in wanted if t != held_out]

    def arrays(self, split: str, tasks: list[str] | None) -> cache.SplitArrays:
        key = (split, tuple(tasks or ()))
        if key not in self._arrays:
            data = self.cfg.data
            index = self.dataset()
            self._arrays[key] = self.main_first(lambda: cache.load_split(
                index, split, tasks, tuple(data.size), data.cache_dir, worker_count(data.workers),
                quiet=not self.is_main, skip_bad=data.skip_bad_images))
        return self._arrays[key]

    def augment(self) -> Augment:
        return Augment(hflip=self.cfg.data.hflip, crop_scale=tuple(self.cfg.data.crop_scale))

    def progress(self, text: str) -> None:
        """What `experiment.py status` shows in its progress column (state.json)."""
        if self.is_main:
            state = self.folder.state()
            if state:
                state["progress"] = text
                self.folder.write_state(state)

    # --- model ------------------------------------------------------------------------------
    def model_args(self, task_names: list[str]) -> dict:
        m = self.cfg.model
        h = m.hypernet
        options = dict(embedding_dim=h.embedding_dim, hidden=list(h.hidden))
        if h.name == "chunked":
            options.update(chunk_size=h.chunk_size, chunk_embedding_dim=h.chunk_embedding_dim)
        return dict(mnet=dict(cutoff=m.encoder.cutoff, weights=m.encoder.weights,
                              weights_path=m.encoder.weights_path, decoder=m.decoder.name,
                              width=m.decoder.width, skip=m.decoder.skip, prior=m.decoder.prior),
                    task_names=list(task_names), generate=h.generate, encoder_from=h.encoder_from,
                    hypernet=h.name, hypernet_options=options, per_task_bn=h.per_task_bn,
                    start=h.start, task_encoder=dict(width=m.task_encoder.width, grid=m.task_encoder.grid))

    def new_model(self, task_names: list[str]) -> HyperSaliency:
        return self._place(build_model(self.model_args(task_names)))

    def _place(self, model: HyperSaliency) -> HyperSaliency:
        """On this process's device; BatchNorm over the global batch when there are several."""
        if self.world.active and self.cfg.distributed.sync_bn:
            sync_batchnorm(model.mnet, self.device)
        return model.to(self.device)

    def save_model(self, tag: str) -> Path:
        """The whole model after a stage: what later stages (and a restarted job) start from."""
        path = self.folder.path / "models" / f"{tag}.pt"
        if self.is_main:
            path.parent.mkdir(exist_ok=True)
            args = {**self.model_args(self.model.task_names), "n_trained": self.model.n_trained}
            save_atomic({"args": args, "state": self.model.state_dict()}, path)
        return path

    def load_model(self, tag: str) -> HyperSaliency:
        path = self.folder.path / "models" / f"{tag}.pt"
        saved = load(path)
        args = {**saved["args"], "mnet": {**saved["args"]["mnet"], "weights": None, "weights_path": None}}
        model = build_model(args)  # the state below holds every weight: no file to read again
        model.load_state_dict(saved["state"])
        self.model = self._place(model)
        return self.model


def build_model(args: dict) -> HyperSaliency:
    args = dict(args)
    return HyperSaliency(MainNet(**args.pop("mnet")), **args)
