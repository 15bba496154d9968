"""Writing an experiment folder: every run's reproducibility files, then the sweep summary.

    <base_dir>/<name>/
        summary.yaml        seed, files, runs and their sampled values (written last)
        jobs.tsv            one line per submission: run folder, job id (append-only)
        array.sh            array mode: the script submitted for the whole sweep
        workers.sh          experiment.workers: the script of each worker job (train.py --worker)
        workers/            the workers' records (<id>.json) and Slurm logs (docs/workers.md)
        diff.patch          `git diff HEAD` when dirty: once per sweep, each hash.txt names it
        run_000/
            config.yaml     the complete trainer config train.py reads
            exp_0.yaml      a one-run experiment file, every sampled value frozen: rerun it
            exp.sh          the rendered sbatch script
            run.yaml        what train.py needs besides the config: Comet key, tags, note
            hash.txt        git commit, "clean" or "dirty", "code <folder train.py runs from>", and
                            "diff <the sweep's diff.patch>" when dirty
            comet_url.txt   the Comet URL, known before the job starts
            env.yaml        who, where, when, with which packages
"""
from __future__ import annotations

import configparser
import multiprocessing
import os
import shutil
from pathlib import Path
from urllib.parse import quote

from hypersal import urls, yamlio
from hypersal.errors import UserError
from hypersal.files import probe_writable
from hypersal.experiment.plan import WORKER_LOGS, WORKERS_SH, Plan, Run, render
from hypersal.experiment import adaptive, snapshot as snapshot_mod
from hypersal.experiment.repro import CODE_ROOT, GitState

SUMMARY = "summary.yaml"
JOBS = "jobs.tsv"
DIFF = "diff.patch"


def check_base_dir(base_dir: Path, **where) -> None:
    """The base folder exists (created if need be) and takes files; `where` names the key that
    set it, for the error."""
    try:
        base_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(base_dir)
    except OSError as e:
        raise UserError(f"cannot write in the base folder {base_dir} ({e.strerror or e})",
                        fix="choose a folder you can write in, or fix its permissions", **where) from None


def claim_folder(base_dir: Path, name: str, **where) -> Path:
    """Create <base_dir>/<name>, or <name>_1, <name>_2 ... if taken: never reuse a folder.

    os.mkdir is atomic, so two experiment.py calls racing for one name get two folders. `where`
    names the experiment file's key that set base_dir, for errors.
    """
    check_base_dir(base_dir, **where)
    for n in range(10_000):
        candidate = base_dir / (name if n == 0 else f"{name}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"10,000 folders named {name}_N exist already in {base_dir}",
                    **dict(where, key="experiment.name"), fix="choose another experiment.name")


def comet_url(run: Run) -> str:
    return comet_url_for(run.trainer.get("comet", {}), run.comet_key)


def comet_url_for(comet: dict, key: str) -> str:
    """The Comet URL of an experiment key, known before the job starts (comet_url.txt)."""
    server, workspace = _comet_server_workspace(comet.get("workspace"))
    project = comet.get("project") or "general"
    return f"{server}/{quote(workspace, safe='') if workspace else '<workspace>'}/{quote(project, safe='')}/{key}\n"


_COMET_CONFIG: tuple | None = None


def _comet_server_workspace(workspace: str | None) -> tuple[str, str | None]:
    """Comet's web root and the default workspace, read once, the way comet_ml reads them:
    COMET_* variables, then ./.comet.config, then $COMET_CONFIG or ~/.comet.config ([comet]
    workspace, url_override). Read here rather than through comet_ml, whose import costs a
    second on every sweep. A url_override that is not http(s) is a UserError naming where it was
    set (it becomes a link on the sweep page)."""
    global _COMET_CONFIG
    if _COMET_CONFIG is None:
        settings = {"workspace": os.environ.get("COMET_WORKSPACE"), "url_override": os.environ.get("COMET_URL_OVERRIDE")}
        origin = {k: dict(file="the environment", key=f"COMET_{k.upper()}") for k, v in settings.items() if v}
        home = Path(os.environ.get("COMET_CONFIG") or Path.home() / ".comet.config").expanduser()
        for path in (Path(".comet.config"), home):
            parser = configparser.ConfigParser(interpolation=None)
            try:
                parser.read(path)
            except (configparser.Error, OSError, UnicodeDecodeError):
                continue   # comet_ml would complain when the job starts; the URL is a courtesy
            for key in settings:
                if not settings[key] and parser.get("comet", key, fallback=None):
                    settings[key] = parser.get("comet", key)
                    origin[key] = dict(file=path.absolute(), key=f"[comet] {key}")
        server = "https://www.comet.com"
        if settings["url_override"]:
            urls.check(settings["url_override"], **origin["url_override"])
            server = settings["url_override"].split("/clientlib")[0].rstrip("/")
        _COMET_CONFIG = (server, settings["workspace"])
    return _COMET_CONFIG[0], workspace or _COMET_CONFIG[1]


def exp_file(plan: Plan, run: Run) -> dict:
    """A complete experiment file for this run alone: passing it back reproduces config.yaml."""
    spec = plan.spec
    return rerun_file(name=spec.name, base_dir=spec.base_dir, exp_desc=spec.exp_desc, seed=plan.seed,
                      defaults=spec.defaults_file, rerun_of=run.dir,
                      code_snapshot=str(plan.code_dir) if plan.code_dir != CODE_ROOT else None,
                      sbatch=run.sbatch, comet=run.comet, trainer=run.trainer)


def rerun_file(*, name: str, base_dir, seed: int, rerun_of, code_snapshot: str | None, sbatch: dict,
               comet: dict, trainer: dict, exp_desc: str = "", defaults=None) -> dict:
    """The one-run experiment file (exp_i.yaml) of a run, as written for a plain sweep's runs and
    for an adaptive sweep's trials: a plain run, its trainer config complete."""
    return {
        "experiment": {"name": name, "base_dir": str(base_dir), "exp_desc": exp_desc, "seed": seed,
                       "defaults": str(defaults) if defaults else None, "mode": "jobs",
                       "rerun_of": str(rerun_of), "code_snapshot": code_snapshot},
        "sbatch": sbatch,
        "runs": [{"comet": comet, "trainer": trainer}],
    }


def exp_file_text(plan: Plan, run: Run, config_text: str) -> str:
    """exp_file() as YAML, reusing config.yaml's text for the trainer (the bulk of it, and the
    slow part of writing 1,000 runs): block YAML nests by indenting, so it is the same document."""
    doc = exp_file(plan, run)
    head = yamlio.dumps({k: doc[k] for k in ("experiment", "sbatch")})
    comet = yamlio.dumps({"comet": run.comet})
    trainer = "".join("    " + line if line.strip() else line for line in config_text.splitlines(True))
    return head + "runs:\n- " + comet.replace("\n", "\n  ").rstrip(" ") + "  trainer:\n" + trainer


def run_file(plan: Plan, run: Run) -> dict:
    return {"experiment": plan.spec.name, "exp_desc": plan.spec.exp_desc, "index": run.index,
            "comet_key": run.comet_key, "comet": run.comet, "sampled": run.sampled,
            "seed": plan.seed}


def summary(plan: Plan, git: GitState, template: Path) -> dict:
    return {
        "name": plan.exp_dir.name, "experiment_file": str(plan.spec.file), "template": str(template),
        "seed": plan.seed, "mode": plan.spec.mode, "parallelism": plan.spec.parallelism,
        "overrides": plan.spec.cli_items,
        **({"workers": plan.spec.workers, "runs_per_worker": plan.spec.runs_per_worker} if plan.spec.workers else {}),
        **({"search": plan.search["section"], "search_keys": plan.search["keys"]} if plan.search else {}),
        "git": {"commit": git.commit, "dirty": git.dirty},
        "code": {"folder": str(plan.code_dir), "snapshot": plan.code_dir != CODE_ROOT},
        "runs": [{"index": r.index, "dir": r.dir.name, "entry": r.entry, "comet_key": r.comet_key,
                  "sampled": r.sampled} for r in plan.runs],
    }


PARALLEL_FROM = 200   # runs; below this a second process costs more than it saves


def _write_run(plan: Plan, run: Run, shared: dict) -> None:
    run.dir.mkdir()
    config_text = yamlio.dumps(run.trainer)
    files = {
        "config.yaml": config_text,
        f"exp_{run.index}.yaml": exp_file_text(plan, run, config_text),
        "exp.sh": run.script,
        "run.yaml": yamlio.dumps(run_file(plan, run)),
        "comet_url.txt": comet_url(run),
        **shared,
    }
    for name, text in files.items():
        (run.dir / name).write_text(text, encoding="utf-8")
    os.chmod(run.dir / "exp.sh", 0o755)


_FORKED: tuple | None = None   # what forked writers inherit instead of pickling the plan


def _write_share(worker: int, workers: int) -> int:
    plan, shared = _FORKED
    runs = plan.runs[worker::workers]
    for run in runs:
        _write_run(plan, run, shared)
    return len(runs)


def write_runs(plan: Plan, shared: dict) -> None:
    """Every run folder. Writing YAML is CPU work: a large sweep is split over the cores, in
    forked processes (experiment.py never imports torch, so forking is safe)."""
    global _FORKED
    workers = min(os.cpu_count() or 1, 4)
    if len(plan.runs) < PARALLEL_FROM or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for run in plan.runs:
            _write_run(plan, run, shared)
        return
    _comet_server_workspace(None)   # read once here, inherited by the workers
    _FORKED = (plan, shared)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            written = pool.starmap(_write_share, [(w, workers) for w in range(workers)])
    finally:
        _FORKED = None
    assert sum(written) == len(plan.runs)


def write(plan: Plan, git: GitState, env: dict) -> Path:
    """Claim the experiment folder, render into it and write everything. On any failure the
    folder is removed again: an experiment is written whole or not at all. The code snapshot is
    copied first (once per distinct code; it stays for the next sweep of the same code)."""
    spec = plan.spec
    where = spec.base_dir_where
    _comet_server_workspace(None)   # a bad Comet setting is said before anything is written
    check_base_dir(spec.base_dir, **where)
    if plan.snapshot is not None:
        snapshot_mod.materialize(plan.snapshot, spec.base_dir, **where)
    exp_dir = claim_folder(spec.base_dir, spec.name, **where)
    try:
        render(plan, exp_dir)
        hash_txt = git.hash_txt() + f"code {plan.code_dir}\n"
        if git.dirty:   # once for the sweep: a large change copied into every run folder adds up
            (exp_dir / DIFF).write_text(git.patch(), encoding="utf-8")
            hash_txt += f"diff {exp_dir / DIFF}\n"
        shared = {"hash.txt": hash_txt, "env.yaml": yamlio.dumps(env)}
        if plan.search:   # each job writes its run folder when it starts (adaptive.py)
            for run in plan.runs:
                run.dir.mkdir()
            adaptive.write_files(plan, exp_dir, shared)
        else:
            write_runs(plan, shared)
        if plan.array_script:
            (exp_dir / "array.sh").write_text(plan.array_script, encoding="utf-8")
        if plan.worker_script:
            (exp_dir / WORKER_LOGS).mkdir()      # Slurm writes no log into a folder that is not there
            (exp_dir / WORKERS_SH).write_text(plan.worker_script, encoding="utf-8")
            os.chmod(exp_dir / WORKERS_SH, 0o755)
        (exp_dir / JOBS).touch()
        yamlio.dump(summary(plan, git, plan.template.path), exp_dir / SUMMARY)
    except BaseException:
        shutil.rmtree(exp_dir, ignore_errors=True)
        raise
    return exp_dir
