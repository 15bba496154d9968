"""train.py: run one run folder's pipeline (compute node).

    python train.py --config RUN_DIR/config.yaml [--skip stage,stage] [KEY.PATH=VALUE ...]
    python train.py --sweep EXP_DIR     (in a job array: the run of SLURM_ARRAY_TASK_ID)
    python train.py --trial EXP_DIR     (an adaptive sweep's job array: ask the study, then train)
    python train.py --worker EXP_DIR [--slots P]   (run the sweep's runs one after another, P at
                                        once, until none is left: hypersal/runner/worker.py)

KEY.PATH=VALUE items override config.yaml for this start only (e.g. test.split=val), checked
like the file; a `train.K` also reaches the training stages that inherited train's K.

Writes into the run folder (the folder of config.yaml) and resumes by itself when started
again: finished stages are skipped, an unfinished one continues from its checkpoint.
Exit status: 0 done, 1 failed, 2 a mistake in the input (one paragraph says which).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import traceback
from pathlib import Path

from hypersal import config as config_mod
from hypersal.config import options, stagelist
from hypersal.errors import RunFailure, UserError
from hypersal.files import probe_writable
from hypersal.log import say, set_rank
from hypersal.runfolder import Damaged, RunFolder, now
from hypersal.train import signals
from hypersal.train.signals import Pruned, Stopped

# torch, torchvision and the stages are imported in run(), after the config is checked: their
# import takes ~4 s on 2 cores, and a mistake in the input is said before it (in well under 1 s).

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Run the stage pipeline of one run folder.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="RUN_DIR/config.yaml")
    where.add_argument("--sweep", type=Path, help="an experiment folder; the run is SLURM_ARRAY_TASK_ID's")
    where.add_argument("--trial", type=Path, help="an adaptive sweep's folder: this job's trial (hypersal/search/__init__.py)")
    where.add_argument("--worker", type=Path, metavar="EXP_DIR",
                       help="a plain sweep's folder: run its runs that no one holds, until none is left")
    p.add_argument("--slots", type=int, default=None, help="with --worker: runs at once (each gets CPUs / slots)")
    p.add_argument("--lease-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --worker: a lease not renewed for this long is stale (default 120)")
    p.add_argument("--index", type=int, help="with --trial: the run index (default: SLURM_ARRAY_TASK_ID + offset)")
    p.add_argument("--skip", default="", help="comma-separated stages not to run this time")
    p.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE",
                   help="config values for this start, read as YAML (e.g. test.split=val)")
    return p


def array_index(flag: str, outside: str) -> int:
    """This array task's run index. A sweep larger than the cluster's MaxArraySize goes as
    several arrays: task id + offset (HYPERSAL_ARRAY_OFFSET, set by experiment.py)."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task is None or not task.isdigit():
        raise UserError(f"{flag} needs SLURM_ARRAY_TASK_ID (it runs inside a job array)", fix=outside)
    return int(task) + int(os.environ.get("HYPERSAL_ARRAY_OFFSET") or 0)


def config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return args.config.absolute()
    index = array_index("--sweep", "use --config RUN_DIR/config.yaml outside an array")
    task = os.environ["SLURM_ARRAY_TASK_ID"]
    runs = {int(p.name.split("_")[1]): p for p in args.sweep.glob("run_*") if p.name.split("_")[1].isdigit()}
    if index not in runs:
        raise UserError(f"no run folder for array task {task} (run {index})", file=args.sweep,
                        fix="submit the array with `experiment.py submit` (it maps tasks to runs)")
    return runs[index] / "config.yaml"


def wants_requeue(cfg, signal_name: str | None) -> bool:
    """Requeue on the time-limit warning only (SIGUSR2); SIGTERM means scancel or preemption,
    which Slurm handles itself (a preempted job with --requeue comes back on its own)."""
    if signal_name != "SIGUSR2" or not cfg.preemption.requeue or "SLURM_JOB_ID" not in os.environ:
        return False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restarts >= cfg.preemption.max_requeues:
        say(f"not requeueing: the job has restarted {restarts} times (preemption.max_requeues "
            f"{cfg.preemption.max_requeues}); resubmit with `experiment.py resume`")
        return False
    return True


def this_job() -> str:
    """This job's id for scontrol: an array task as ARRAYID_TASK. Its bare SLURM_JOB_ID can equal
    the array's id, and `scontrol requeue ARRAYID` requeues every task of the array, running,
    finished or failed (seen on Slurm 22.05: a task's time-limit warning restarted its sibling)."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def requeue() -> bool:
    """`scontrol requeue` this job; it goes back to the queue and resumes when it runs again."""
    job = this_job()
    proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        say(f"scontrol requeue {job} failed: {' '.join(proc.stderr.split())}")
        return False
    say(f"job {job} requeued: it resumes from its checkpoint when it runs again")
    return True


def check_writable(folder: RunFolder) -> None:
    """A run folder that cannot take a file (read-only, full) is said at once, not mid-stage."""
    try:
        probe_writable(folder.path)
    except OSError as e:
        raise UserError(f"cannot write in the run folder ({e.strerror or e})", file=folder.path,
                        fix="check the folder's permissions, its file system (read-only?) and free space") from None


def _check_before_start(folder: RunFolder, path: Path, skip: list[str], cli: list[str] = ()):
    """The config and the stage list, before anything opens; the error goes to state.json too
    (so `experiment.py status` can say why the run failed)."""
    check_writable(folder)
    try:   # read without it, every finished stage would run again: said, and the file left as it is
        folder.state()
    except Damaged as e:
        e.fix = ("restore it from a backup, or delete it to run every stage again (a stage's checkpoints "
                 "are kept: an unfinished stage resumes where it was)")
        raise
    try:
        cfg = config_mod.load(path, cli=cli)
        stagelist.check(list(cfg.pipeline), skip, cfg)
        options.check(cfg.to_dict())
        return cfg
    except UserError as e:
        if e.file is None:
            e.file = path
        folder.write_state({"state": "failed", "error": e.render(), "updated": now(),
                            **{k: v for k, v in folder.state().items() if k not in ("state", "error", "updated")}})
        raise


def run(path: Path, skip: list[str], cli: list[str] = (), trial_run=None) -> dict:
    folder = RunFolder(path.parent)
    cfg = _check_before_start(folder, path, skip, cli)
    from hypersal.runner import gpu_share, pipeline
    from hypersal.runner.job import Job, pick_device, seed_everything
    from hypersal.tracking import Tracker
    from hypersal.train import distributed
    from hypersal.train.cpus import use_job_cpus
    seed_everything(cfg.seed, cfg.deterministic)
    world = distributed.from_environment()
    set_rank(world.rank, world.size)
    device = distributed.device_for(world, cfg.device) if world.active else pick_device(cfg.device)
    threads = use_job_cpus()
    share = gpu_share.apply(device)
    distributed.init(world, device)
    info = folder.run_info()
    tracker = Tracker(folder, cfg.comet, info, active=world.is_main)
    job = Job(cfg=cfg, folder=folder, tracker=tracker, device=device, world=world, trial=trial_run)
    say(f"run {folder.path} on {device} ({threads} CPU thread{'s' * (threads > 1)}"
        f"{f', rank {world.rank} of {world.size}' if world.active else ''}"
        f"{f', {share:.0%} of its memory' if share else ''})" + (f", Comet key {info['comet_key']}" if info.get("comet_key") else ""))
    say(f"code: {Path(__file__).resolve().parents[2]}")
    try:
        tracker.log_params(cfg.to_dict())
        if cfg.notes:
            tracker.log_other("notes", cfg.notes)
        if cli:
            say(f"command-line overrides: {' '.join(cli)}")
            tracker.log_other("overrides", " ".join(cli))
        for key, value in info.get("sampled", {}).items():
            tracker.log_other(f"sampled/{key}", value)
        results = pipeline.run(job, skip)
        distributed.shutdown(world)
        return results
    except BaseException as e:
        if not world.is_main:   # rank 0 keeps the run's state
            raise
        state = folder.state()
        if isinstance(e, Pruned):    # the pruner's call, not a failure: exit 0, checkpoint kept
            state.update(state="pruned", pruned_epoch=e.epoch, stage=None, updated=now())
            folder.write_state(state)
            trial_run.tell(pruned=True)
            raise
        word = "stopped" if isinstance(e, (Stopped, KeyboardInterrupt)) else "failed"
        state.update(state=word, error=f"{e.__class__.__name__}: {e}", updated=now())
        if isinstance(e, Stopped) and wants_requeue(cfg, signals.requested()):
            state["state"] = "requeued"
            folder.write_state(state)     # before asking: Slurm may end this process at once
            if not requeue():
                state["state"] = "stopped"
        folder.write_state(state)
        raise
    finally:
        tracker.close()


def _worker(args: argparse.Namespace) -> int:
    """A worker runs each run as its config.yaml says, as a job of its own would."""
    if args.overrides or args.skip:
        raise UserError("--worker runs each run as its config.yaml says: KEY=VALUE overrides and --skip "
                        "do not apply", fix="put the values in the sweep (experiment.py KEY=VALUE), or run "
                                            "one run with --config RUN_DIR/config.yaml")
    from hypersal.runner import worker
    timeout = args.lease_timeout if args.lease_timeout is not None else worker.L.TIMEOUT_S
    return worker.main(args.worker, args.slots if args.slots is not None else 1, timeout)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signals.install()
    try:
        if args.worker is not None:
            return _worker(args)
        if args.slots is not None or args.lease_timeout is not None:
            raise UserError("--slots and --lease-timeout go with --worker EXP_DIR",
                            fix="leave them out, or run a sweep's runs with --worker")
        trial_run = None
        if args.trial is not None:
            index = args.index if args.index is not None else array_index(
                "--trial", "submit with experiment.py, or pass --index N")
            from hypersal.runner import trial
            path, trial_run = trial.prepare(args.trial, index)
        else:
            path = config_path(args)
        run(path, [s for s in args.skip.split(",") if s], args.overrides, trial_run)
    except UserError as e:
        print(f"hypersal: error: {e}", file=sys.stderr)
        return 2
    except RunFailure as e:
        print(f"hypersal: error: {e}", file=sys.stderr)
        return 1
    except Pruned as e:
        say(f"{e}: the study's pruner stopped this trial (its checkpoint is kept)")
        return 0
    except (KeyboardInterrupt, Stopped) as e:
        say(f"{e or 'interrupted'}: the run can resume from its last checkpoint")
        return 143 if isinstance(e, Stopped) else 130
    except Exception:
        traceback.print_exc()
        return 1
    say("done")
    return 0
