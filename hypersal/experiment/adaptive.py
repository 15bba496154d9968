"""Planning and writing an adaptive sweep (experiment.search, hypersal/search/__init__.py).

Nothing is drawn at submission: each job asks the study for its values when it starts. So the
experiment folder holds, besides summary.yaml and the job array's script:

    search/space.yaml     the layered trainer tree, its sample specs kept: the search space
    search/study.journal  the Optuna study (JournalStorage in a file)
    search/shared/        hash.txt, env.yaml that each job copies into its run folder
    diff.patch            when the code is dirty, once for the sweep (each hash.txt names it)
    run_000/ ...          made empty here (Slurm writes each task's log into its folder); the job
                          writes config.yaml, exp_i.yaml, run.yaml (trial number) and the rest

A search is one job array with %parallelism, whatever experiment.mode says: separate jobs could
not be held to the parallelism. On workers (experiment.workers: N) it is N worker jobs instead
(an array or jobs, as experiment.mode says), each taking the next run folder no one holds: the
run then asks its trial as a job would (docs/workers.md).
"""
from __future__ import annotations

import uuid

from hypersal import search as search_mod, tree as T, yamlio
from hypersal.config import choices, options, schema, stagelist
from hypersal.errors import UserError
from hypersal.experiment.plan import Plan, Run
from hypersal.experiment.render import Template
from hypersal.experiment.spec import ExperimentSpec


def make(spec: ExperimentSpec, template: Template, seed: int) -> Plan:
    """One Run per trial, each holding the search space; checked as far as the login node can:
    the space, the budget, and a probe config (every spec at its first candidate)."""
    search, file = spec.search, spec.file
    if len(spec.runs) != 1 or spec.runs[0].repeat != 1 or spec.repeat != 1:
        raise UserError("a search takes exactly one run entry, without repeat: its sample specs are the "
                        "search space and experiment.search.trials the number of runs", file=file, key="runs",
                        fix="merge the entries into one (sample the key that told them apart), or drop the search")
    entry = spec.runs[0]
    trainer = T.merge(T.merge(T.merge(spec.defaults, spec.config), entry.trainer), spec.cli_trainer)
    if spec.no_comet:
        trainer["comet"] = {**trainer["comet"], "mode": "disabled"}
    sbatch = T.merge(T.merge(spec.sbatch, entry.sbatch), spec.cli_sbatch)
    template.check_values(spec.sbatch, "sbatch", file=file)
    template.check_values(entry.sbatch, "runs[0].sbatch", file=file)
    template.check_values(spec.cli_sbatch, "sbatch", file="command line")
    if any(T.is_leaf_mapping(v) for _, v in T.leaves(sbatch)):
        raise UserError("a search samples trainer values only, not sbatch values", file=file, key="runs[0].sbatch",
                        fix="give the job's resources as plain values")
    found = search_mod.space(trainer, search, file=file, prefix=("runs", 0, "trainer"))
    if search.sampler == "grid" and search.trials > len(search_mod.grid_points(found)):
        raise UserError(f"the grid has {len(search_mod.grid_points(found))} combinations, fewer than the "
                        f"{search.trials} trials", file=file, key="experiment.search.trials",
                        fix=f"set trials to at most {len(search_mod.grid_points(found))}")
    _check_budget(trainer, search, file)
    probe = schema.inherit(T.map_leaves(trainer, lambda p, v: v["from"][0] if T.is_leaf_mapping(v) else v))
    where = dict(file=file, prefix=("runs", 0, "trainer"))
    schema.check(probe, spec.schema, **where)
    choices.check(probe, **where)
    stagelist.check(probe["pipeline"], cfg=probe, prefix="runs[0].trainer.", file=file)
    options.check(probe, **where)
    plan = Plan(spec=spec, seed=seed, template=template)
    plan.search = {"section": search.as_dict(), "space": trainer, "keys": sorted(found)}
    for i in range(search.trials):
        plan.runs.append(Run(index=i, entry=0, trainer=trainer, sbatch=sbatch, comet=dict(entry.comet),
                             sampled={}, comet_key=uuid.uuid4().hex))
    if not spec.workers:   # on workers, experiment.mode says how the worker jobs go (parallelism: refused)
        spec.mode, spec.parallelism = "array", search.parallelism
    return plan


def _check_budget(trainer: dict, search, file) -> None:
    if "train" not in (trainer.get("pipeline") or []):
        raise UserError("a search scores the train stage's epochs, but the pipeline has no train stage",
                        file=file, key="runs[0].trainer.pipeline", fix="add train to the pipeline")
    epochs = trainer["train"]["epochs"]
    if T.is_leaf_mapping(epochs):
        raise UserError("a search cannot sample train.epochs: it is the pruners' budget", file=file,
                        key="runs[0].trainer.train.epochs", fix="give it a plain value")
    if search.min_epochs > epochs:
        raise UserError(f"min_epochs {search.min_epochs} is more than the {epochs} epochs a run trains",
                        file=file, key="experiment.search.min_epochs",
                        fix=f"lower it to at most {epochs}, or raise train.epochs")
    if search.metric.startswith("val_loss") and trainer["train"]["val_batches"] == 0:
        raise UserError(f"metric {search.metric} is never logged: train.val_batches is 0", file=file,
                        key="experiment.search.metric", fix="set train.val_batches >= 1, or use train_loss")


def write_files(plan: Plan, exp_dir, shared: dict) -> None:
    """The search's own files (the caller writes summary.yaml, array.sh and the run folders)."""
    folder = exp_dir / search_mod.FOLDER
    (folder / "shared").mkdir(parents=True)
    for name, text in shared.items():
        (folder / "shared" / name).write_text(text, encoding="utf-8")
    yamlio.dump(plan.search["space"], folder / search_mod.SPACE)
    yamlio.dump({"sbatch": plan.runs[0].sbatch, "comet": plan.runs[0].comet}, folder / search_mod.ENTRY)
    section = plan.spec.search
    found = search_mod.space(plan.search["space"], section)
    search_mod.study(exp_dir, section, found, plan.seed, 0, plan.search["space"]["train"]["epochs"], create=True)
