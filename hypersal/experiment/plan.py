"""From a validated experiment spec to the list of runs, every value drawn and every script
rendered, all in memory: nothing is written until the whole sweep is known to be good."""
from __future__ import annotations

import re
import secrets
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hypersal import tree as T
from hypersal.config import options, schema, stagelist
from hypersal.errors import UserError
from hypersal import sampling
from hypersal.experiment.lease import WORKERS
from hypersal.experiment.render import Template
from hypersal.experiment.repro import CODE_ROOT
from hypersal.experiment.snapshot import Snapshot
from hypersal.experiment.spec import ExperimentSpec


@dataclass
class Run:
    index: int
    entry: int             # index in the experiment file's `runs:`
    trainer: dict          # the complete trainer config (config.yaml)
    sbatch: dict           # template values
    comet: dict            # note and tags
    sampled: dict          # {"trainer.optim.lr": 0.01, ...}
    comet_key: str         # the Comet experiment key, assigned before the job starts
    dir: Path | None = None
    script: str = ""       # rendered exp.sh


@dataclass
class Plan:
    spec: ExperimentSpec
    seed: int
    template: Template
    runs: list[Run] = field(default_factory=list)
    exp_dir: Path | None = None
    array_script: str = ""  # array mode: the script submitted for the whole sweep
    worker_script: str = ""  # experiment.workers: the script each worker job runs (workers.sh)
    code_dir: Path = CODE_ROOT          # where exp.sh runs train.py from (a snapshot, normally)
    snapshot: Snapshot | None = None    # the snapshot to copy there before anything is written
    search: dict | None = None          # an adaptive sweep: section, space, keys (adaptive.py)

    @property
    def width(self) -> int:
        """Digits in run folder names: run_000 ... run_999, run_1000 ..."""
        return max(3, len(str(len(self.runs) - 1)))

    def run_dir_name(self, index: int) -> str:
        return f"run_{index:0{self.width}d}"


def choose_seed(spec: ExperimentSpec, seed: int | None) -> int:
    """The command line's seed, else the file's, else a drawn one (recorded in every file)."""
    return seed if seed is not None else spec.seed if spec.seed is not None else secrets.randbelow(2**31)


def make(spec: ExperimentSpec, template: Template, seed: int | None = None) -> Plan:
    """Draw every run of the sweep and check it. `seed` overrides the file's; with neither, one
    is drawn (and recorded in every file written)."""
    seed = choose_seed(spec, seed)
    plan = Plan(spec=spec, seed=seed, template=template)
    template.check_values(spec.sbatch, "sbatch", file=spec.file)
    template.check_values(spec.cli_sbatch, "sbatch", file="command line")
    for entry in spec.runs:
        template.check_values(entry.sbatch, f"runs[{entry.index}].sbatch", file=spec.file)
    base = T.merge(spec.defaults, spec.config)
    for entry in spec.runs:
        layered = {"trainer": T.merge(T.merge(base, entry.trainer), spec.cli_trainer),
                   "sbatch": T.merge(T.merge(spec.sbatch, entry.sbatch), spec.cli_sbatch)}
        repeat = entry.repeat * spec.repeat
        where = dict(file=spec.file, prefix=("runs", entry.index, "trainer"))
        # Every layer was checked as written (keys, types, names, ranges): what the runs of an
        # entry share is checked once, and per run only the values drawn, then the rules.
        options.check_ranges(schema.inherit(layered["trainer"]), **where)
        drawn_paths = [p[1:] for p, _ in sampling.specs(layered) if p[0] == "trainer"]
        for resolved, sampled in sampling.expand(layered, seed, entry.index, repeat):
            trainer = schema.inherit(resolved["trainer"])
            if spec.no_comet:
                trainer["comet"] = {**trainer["comet"], "mode": "disabled"}
            check_drawn(trainer, drawn_paths, spec.schema, **where)
            stagelist.check(trainer["pipeline"], cfg=trainer, prefix=f"runs[{entry.index}].trainer.", file=spec.file)
            options.check_rules(trainer, **where)
            plan.runs.append(Run(index=len(plan.runs), entry=entry.index, trainer=trainer,
                                 sbatch=resolved["sbatch"], comet=dict(entry.comet), sampled=sampled,
                                 comet_key=uuid.uuid4().hex))
    if spec.workers:
        _check_uniform_sbatch(plan, "a worker job runs any run of the sweep, so every run needs the same sbatch "
                                    "values", "experiment.workers", "remove experiment.workers (one job per run)")
    elif spec.mode == "array":
        _check_uniform_sbatch(plan, "array mode gives every run the same sbatch values", "experiment.mode",
                              "use mode: jobs (one job per run)")
    return plan


def check_drawn(trainer: dict, paths: list, tree_schema: dict, **where) -> None:
    """The drawn values of a run must fit the schema too (a list of strings for a float key, say),
    their names and ranges: checked as a layer holding them alone."""
    layer: dict = {}
    for path in paths:
        T.set_(layer, path, T.get(trainer, path))
    schema.check_trainer(layer, tree_schema, **where)     # keys and types, names, ranges


def _check_uniform_sbatch(plan: Plan, why: str, key: str, instead: str) -> None:
    first = plan.runs[0]
    for run in plan.runs[1:]:
        if run.sbatch != first.sbatch:
            keys = sorted(k for k in set(first.sbatch) | set(run.sbatch)
                          if first.sbatch.get(k) != run.sbatch.get(k))
            raise UserError(f"{why}, but run {run.index} differs from run 0 in {', '.join(keys)}",
                            file=plan.spec.file, key=key, fix=f"{instead}, or give all runs the same values")


def render(plan: Plan, exp_dir: Path) -> None:
    """Render every run's exp.sh (and the array script) for the experiment folder `exp_dir`."""
    plan.exp_dir = exp_dir
    name = plan.spec.name
    train_script = str(plan.code_dir / "train.py")
    for run in plan.runs:
        run.dir = exp_dir / plan.run_dir_name(run.index)
        job = dict(name=f"{name}-{run.index:0{plan.width}d}", dir=str(run.dir),
                   output=str(run.dir / "slurm-%j.out"), array=None, python=sys.executable,
                   args=[train_script, "--config", str(run.dir / "config.yaml")])
        run.script = plan.template.render(run.sbatch, job, file=plan.spec.file,
                                          key=f"runs[{run.entry}].sbatch")
    if plan.spec.workers:
        plan.worker_script = _worker_script(plan, exp_dir, train_script)
    elif plan.spec.mode == "array":
        job = dict(name=name, dir=str(exp_dir), array=array_spec(range(len(plan.runs)), plan.spec.parallelism),
                   output=str(exp_dir / f"run_%{plan.width}a" / "slurm-%A_%a.out"), python=sys.executable,
                   args=[train_script, "--trial" if plan.search else "--sweep", str(exp_dir)])
        plan.array_script = plan.template.render(plan.runs[0].sbatch, job, file=plan.spec.file,
                                                 key="sbatch")


WORKERS_SH = "workers.sh"
WORKER_LOGS = WORKERS        # the worker jobs' Slurm logs go beside their records
_TASKS = re.compile(r"^#SBATCH --(?:nodes|ntasks|ntasks-per-node)=(\d+)\s*$", re.M)


def _worker_script(plan: Plan, exp_dir: Path, train_script: str) -> str:
    """workers.sh: the template rendered with the runs' sbatch values (the same resources a run
    gets), running `train.py --worker EXP_DIR --slots P` from the sweep's code instead of one run.
    In array mode it is a job array of N tasks; else each of the N jobs runs it as it is."""
    spec = plan.spec
    array = spec.mode == "array"
    job = dict(name=f"{spec.name}-worker", dir=str(exp_dir),
               output=str(exp_dir / WORKER_LOGS / ("slurm-%A_%a.out" if array else "slurm-%j.out")),
               array=f"0-{spec.workers - 1}" if array else None, python=sys.executable,
               args=[train_script, "--worker", str(exp_dir), "--slots", str(spec.runs_per_worker)])
    script = plan.template.render(plan.runs[0].sbatch, job, file=spec.file, key="sbatch")
    tasks = [int(n) for n in _TASKS.findall(script)]
    if any(n > 1 for n in tasks):
        raise UserError("a worker runs its runs in one process on one node, but these runs ask for several tasks "
                        "or nodes (DDP)", **spec.workers_where,
                        fix="remove experiment.workers for runs over several GPUs or nodes, or give each run one "
                            "task (sbatch nodes: 1, gpus: 1)")
    return script


def array_spec(indices, parallelism: int | None) -> str:
    """Slurm's --array value for these run indices: "0-9", "2,5,7-9", with "%N" when limited."""
    indices = sorted(indices)
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ",".join(parts) + (f"%{parallelism}" if parallelism else "")
