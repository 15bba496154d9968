"""experiment.py: plan, write and submit a sweep; then status, cancel, collect, report, upload.

    python experiment.py --experiment=exp.yaml --template=templates/sbatch.sh [--dry-run]
                         [trainer.KEY=VALUE sbatch.KEY=VALUE experiment.KEY=VALUE ...]
    python experiment.py submit|resume|status|cancel|collect|report|upload DIR
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from hypersal.errors import UserError
from hypersal.log import forget_warnings, say
from hypersal.experiment import adaptive, collect as collect_mod, executors, plan as plan_mod, repro, snapshot, spec as spec_mod
from hypersal.experiment import status as status_mod, submit as submit_mod, write as write_mod
from hypersal.experiment.render import Template
from hypersal.experiment.table import to_json

DEFAULT_TEMPLATE = repro.CODE_ROOT / "templates" / "sbatch.sh"
COMMANDS = ("submit", "resume", "status", "cancel", "collect", "report", "upload")


def sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="experiment.py", description="Plan, write and submit a sweep of training runs.",
        epilog=f"Other commands: {', '.join(c + ' DIR' for c in COMMANDS)} (e.g. "
               "`experiment.py status ~/runs/demo`); `experiment.py schema [--trainer]`: the JSON Schema "
               "of the experiment file, for editors.")
    p.add_argument("--experiment", "-e", required=True, help="the experiment YAML file")
    p.add_argument("--template", "-t", default=str(DEFAULT_TEMPLATE),
                   help="the Jinja sbatch template (default: templates/sbatch.sh)")
    p.add_argument("--dry-run", action="store_true", help="write every file, submit nothing")
    p.add_argument("--executor", choices=("auto", "slurm", "local"), default="auto",
                   help="auto: Slurm when sbatch is on PATH, else this machine")
    p.add_argument("--mode", choices=spec_mod.MODES, help="one job per run, or one job array")
    p.add_argument("--parallelism", type=int,
                   help="at most N runs at once (a job array's %%N on Slurm; N at a time with --executor=local)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run the sweep on N worker jobs, each taking runs until none is left, instead of one "
                        "job per run (overrides experiment.workers; docs/workers.md)")
    p.add_argument("--seed", type=int, help="the sampling seed (overrides experiment.seed)")
    p.add_argument("--name", help="the experiment name (overrides experiment.name)")
    p.add_argument("--base-dir", help="where the experiment folder goes (overrides experiment.base_dir)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="run the live checkout's train.py instead of a copy of the code made now (a "
                        "queued or requeued job then runs whatever the checkout holds when it starts)")
    p.add_argument("--recorded-code", action="store_true",
                   help="rerunning an exp_i.yaml: run on the code snapshot it records "
                        "(experiment.code_snapshot) instead of the current code")
    p.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE",
                   help="one more layer after the run entries, values read as YAML: e.g. "
                        "trainer.train.epochs=2 sbatch.partition=debug "
                        "'trainer.train.optim.lr={sample: loguniform, from: [1e-4, 1e-2]}'")
    return p


def folder_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"experiment.py {command}")
    p.add_argument("dir", type=Path, help="the experiment folder (<base_dir>/<name>)")
    if command in ("submit", "resume", "status", "cancel"):
        p.add_argument("--executor", choices=("auto", "slurm", "local"), default="auto")
    if command == "status":
        p.add_argument("--watch", nargs="?", type=float, const=10.0, metavar="SECONDS",
                       help="redraw every SECONDS (default 10) until every run has ended")
    if command in ("collect", "report"):
        p.add_argument("--metric", help="the headline metric, a column of `collect --all` (default: the "
                                        "search metric, else test.mean.cc, else train.best_val_loss)")
    if command == "collect":
        p.add_argument("--all", action="store_true", help="every column (the table gets wide)")
        p.add_argument("--json", action="store_true", help="every column of every run as JSON on stdout")
    if command == "report":
        p.add_argument("--out", type=Path, help="the page to write (default: DIR/report.html)")
        p.add_argument("--best", type=int, default=3, help="runs whose test pictures the page shows (default 3)")
    if command == "submit":
        p.add_argument("--follow", action="store_true",
                       help="when sbatch refuses for a submit limit, wait for jobs to end and submit the "
                            "rest as room frees up (each run once)")
    return p


def run_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    started = time.perf_counter()
    overrides = {"name": args.name, "base_dir": args.base_dir and str(Path(args.base_dir).absolute()),
                 "mode": args.mode, "parallelism": args.parallelism, "workers": args.workers}
    spec = spec_mod.load(args.experiment, overrides, cli=args.overrides)
    template = Template(args.template)
    if spec.search:
        plan = adaptive.make(spec, template, seed=plan_mod.choose_seed(spec, args.seed))
    else:
        plan = plan_mod.make(spec, template, seed=args.seed)
    plan.code_dir, plan.snapshot = code_for(spec, args)
    # Render once against the intended folder, so template errors stop us before any write.
    plan_mod.render(plan, spec.base_dir / spec.name)
    if spec.dev_mode and not args.dry_run:
        say("experiment.dev_mode is set: a dry run")
        args.dry_run = True
    executor = None if args.dry_run else executors.choose(args.executor)
    shared = plan.snapshot is None or (plan.code_dir / snapshot.COMPLETE).is_file()
    exp_dir = write_mod.write(plan, repro.git_state(), repro.environment(argv))
    say(f"wrote {len(plan.runs)} run{'s' * (len(plan.runs) != 1)} to {exp_dir} (seed {plan.seed}, "
        f"{spec.mode} mode) in {time.perf_counter() - started:.2f} s")
    if spec.workers:
        say(f"on {spec.workers} worker job{'s' * (spec.workers > 1)} ({exp_dir / 'workers.sh'}), each taking runs "
            f"until none is left, {spec.runs_per_worker} at once")
    if plan.code_dir == repro.CODE_ROOT:
        say(f"code: the live checkout {repro.CODE_ROOT} (--no-snapshot: jobs run it as it is when they start)")
    else:
        say(f"code snapshot {plan.code_dir} ({'shared' if shared else 'new'})")
    if exp_dir.name != spec.name:
        say(f"{spec.base_dir / spec.name} exists already: this experiment is {exp_dir.name}")
    if args.dry_run:
        say(f"dry run: nothing submitted. Submit with: {_me()} submit {shlex.quote(str(exp_dir))}")
        return 0
    submit_mod.submit(exp_dir, executor)
    say(f"follow it with: {_me()} status {shlex.quote(str(exp_dir))}")
    return 0


def code_for(spec: spec_mod.ExperimentSpec, args: argparse.Namespace):
    """Where the runs' train.py comes from: (folder, snapshot to copy there or None)."""
    recorded = spec.code_snapshot
    if args.recorded_code:
        where = dict(file=spec.file, key="experiment.code_snapshot")
        if not recorded:
            raise UserError("--recorded-code, but this file records no code snapshot", **where,
                            fix="rerun without --recorded-code (the current code), or use an exp_i.yaml "
                                "of a sweep submitted with its code snapshot")
        if not (Path(recorded) / snapshot.COMPLETE).is_file():
            raise UserError(f"the recorded code snapshot {recorded} is gone", **where,
                            fix="rerun without --recorded-code to use the current code")
        say(f"rerun on the recorded code snapshot {recorded}")
        return Path(recorded), None
    if spec.rerun_of:
        say(f"rerun of {spec.rerun_of} on the current code" + (
            f" (it ran on {recorded}: --recorded-code reruns it there)" if recorded else ""))
    if args.no_snapshot:
        return repro.CODE_ROOT, None
    snap = snapshot.collect(max_mb=spec.snapshot_max_mb)
    return snap.folder(spec.base_dir), snap


def schema_command(argv: list[str]) -> int:
    """The JSON Schema of the experiment file (or, with --trainer, of a trainer config) on stdout,
    for editors: see hypersal/experiment/editor_schema.py."""
    p = argparse.ArgumentParser(prog="experiment.py schema", description=schema_command.__doc__)
    p.add_argument("--trainer", action="store_true", help="the schema of a trainer config (config.yaml)")
    args = p.parse_args(argv)
    from hypersal.experiment import editor_schema
    doc = editor_schema.trainer_document() if args.trainer else editor_schema.experiment_document()
    sys.stdout.write(editor_schema.dumps(doc))
    return 0


def run_command(command: str, argv: list[str]) -> int:
    args = folder_parser(command).parse_args(argv)
    exp_dir = args.dir.absolute()
    submit_mod.load_summary(exp_dir)  # a clear error if it is not an experiment folder
    if command == "submit":
        executor = executors.choose(args.executor)
        if args.follow:
            submit_mod.follow(exp_dir, executor)
        else:
            submit_mod.submit(exp_dir, executor)
    elif command == "resume":
        submit_mod.submit(exp_dir, executors.choose(args.executor), again=True)
    elif command == "status":
        if args.watch is not None:
            if args.watch <= 0:
                raise UserError("--watch takes a positive number of seconds", key="--watch", fix="e.g. --watch 5")
            status_mod.watch(exp_dir, _quiet_executor(args.executor), args.watch)
        else:
            print(status_mod.status(exp_dir, _quiet_executor(args.executor)), end="")
    elif command == "cancel":
        cancelled = status_mod.cancel(exp_dir, _quiet_executor(args.executor))
        say(f"cancelled {len(cancelled)} job(s): {' '.join(cancelled) or '-'}")
    elif command == "collect":
        table, full, csv_path = collect_mod.collect(exp_dir, args.metric, every_column=args.all)
        print(to_json(full) if args.json else table)
        say(f"written to {csv_path}")
    elif command == "report":
        from hypersal.experiment import report as report_mod   # plotly: only this command needs it
        page = report_mod.write(exp_dir, args.out, metric=args.metric, best=args.best)
        print(page)
        say(f"open {page.as_uri()}")
    elif command == "upload":
        uploaded = collect_mod.upload(exp_dir)
        say(f"uploaded {len(uploaded)} offline Comet archive(s)" if uploaded
            else "no offline Comet archive to upload")
    return 0


def _me() -> str:
    """How to call experiment.py again, from anywhere."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(repro.CODE_ROOT / 'experiment.py'))}"


def _quiet_executor(name: str):
    """status and cancel need squeue only when sbatch exists; say nothing about falling back."""
    import shutil
    if name == "local" or (name == "auto" and not shutil.which("squeue")):
        return executors.LocalExecutor()
    return executors.SlurmExecutor()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    forget_warnings()
    try:
        if argv and argv[0] == "schema":
            return schema_command(argv[1:])
        if argv and argv[0] in COMMANDS:
            return run_command(argv[0], argv[1:])
        return run_sweep(sweep_parser().parse_args(argv), argv)
    except UserError as e:
        print(f"hypersal: error: {e}", file=sys.stderr)
        return 2
    except (submit_mod.SweepSubmitError, executors.SubmitError) as e:
        print(f"hypersal: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hypersal: interrupted", file=sys.stderr)
        return 130
