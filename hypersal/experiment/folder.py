"""The experiment folder's own files, read so that damage is said, never a traceback:
summary.yaml (the sweep: written whole by experiment.py, so damage there came from outside, and
nothing can be shown without it: an error naming the file, exit 2) and jobs.tsv (appended at each
submission: a torn or damaged line is skipped with a warning by status and collect, and stops
`submit`, which cannot tell whether that run was submitted)."""
from __future__ import annotations

import re
from pathlib import Path

from hypersal import yamlio
from hypersal.errors import UserError
from hypersal.experiment.spec import MODES
from hypersal.experiment.write import JOBS, SUMMARY
from hypersal.log import warn
from hypersal.runfolder import kind

RUN_DIR = re.compile(r"run_\d+")
WORKER_KEY = re.compile(r"worker_\d+")     # jobs.tsv's line for the k-th worker job submitted (docs/workers.md)
JOB_ID = re.compile(r"\d+(_\d+)?|local")
RESTORE = ("experiment.py writes it whole, so something else changed it: restore it from a backup (the run "
           "folders are untouched, and each run's exp_i.yaml reruns it alone)")
SEARCH_KEYS = ("sampler", "pruner", "metric", "direction", "trials", "parallelism", "min_epochs", "reduction_factor")


def load_summary(exp_dir: Path) -> dict:
    path = Path(exp_dir) / SUMMARY
    if not path.is_file():
        raise UserError("not an experiment folder (no summary.yaml)", file=exp_dir,
                        fix="pass the folder experiment.py printed, <base_dir>/<name>")
    try:
        summary = yamlio.load(path)
    except UserError as e:
        raise UserError(f"damaged: {e.message}", file=path, line=e.line, fix=RESTORE) from None
    problem = _summary_problem(summary)
    if problem:
        raise UserError(f"damaged: {problem}", file=path, fix=RESTORE)
    _unlisted(Path(exp_dir), summary)
    return summary


def _summary_problem(summary) -> str | None:
    """What makes summary.yaml unusable, in words; None if nothing."""
    if not isinstance(summary, dict):
        return "the file is empty" if summary is None else f"expected a mapping, got {kind(summary)}"
    runs = summary.get("runs")
    if not isinstance(runs, list) or not runs:
        return "it lists no runs (`runs:` is missing or empty: the file may have been cut short)"
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            return f"runs[{i}] is not a mapping"
        if not (isinstance(run.get("dir"), str) and RUN_DIR.fullmatch(run["dir"])):
            return f"runs[{i}].dir should be a run folder name (run_000), got {run.get('dir')!r}"
        if not isinstance(run.get("index"), int) or not isinstance(run.get("comet_key"), str):
            return f"runs[{i}] ({run['dir']}) lacks its index or comet_key (the file may have been cut short)"
        if not isinstance(run.get("sampled") or {}, dict):
            return f"runs[{i}].sampled is not a mapping"
    if summary.get("mode") not in MODES:
        return f"mode should be one of {', '.join(MODES)}, got {summary.get('mode')!r}"
    if summary.get("parallelism") is not None and not isinstance(summary["parallelism"], int):
        return f"parallelism should be a whole number, got {summary['parallelism']!r}"
    for key in ("workers", "runs_per_worker"):
        value = summary.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"{key} should be a whole number >= 1, got {value!r}"
    search = summary.get("search")
    if search is not None and not (isinstance(search, dict) and set(SEARCH_KEYS) <= set(search)):
        return "search: should hold " + ", ".join(SEARCH_KEYS)
    return None


def _unlisted(exp_dir: Path, summary: dict) -> None:
    """Run folders that summary.yaml does not list: a summary cut at the end of an entry reads
    as a smaller sweep, silently, but for this."""
    listed = {run["dir"] for run in summary["runs"]}
    extra = sorted(p.name for p in exp_dir.glob("run_*") if p.is_dir() and p.name not in listed
                   and RUN_DIR.fullmatch(p.name))
    if extra:
        warn(f"{exp_dir / SUMMARY} lists {len(listed)} runs, but {exp_dir} also holds {', '.join(extra[:5])}"
             f"{' ...' if len(extra) > 5 else ''}: the file may have been cut short; those runs are not shown")


def read_jobs(exp_dir: Path, strict: bool = False) -> dict[str, str]:
    """{run folder name: job id} of every submission so far (the last one wins), and
    {worker_K: job id} for a sweep on workers. A torn or damaged line is skipped with a warning;
    with `strict` (submitting) it is an error."""
    path = Path(exp_dir) / JOBS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    jobs, bad = {}, []
    lines = data.split(b"\n")
    torn = lines.pop()          # b"" when the last line was written whole
    for number, raw in enumerate(lines, 1):
        why, entry = _job_line(raw)
        if why:
            bad.append((number, raw, why))
        elif entry:
            jobs[entry[0]] = entry[1]
    if torn:
        bad.append((len(lines) + 1, torn, "cut short (a submission interrupted while recording it)"))
    if bad:
        _bad_lines(path, bad, strict)
    return jobs


def _job_line(raw: bytes) -> tuple[str | None, tuple[str, str] | None]:
    """(what is wrong, None) or (None, (run, job)); (None, None) for a blank line."""
    try:
        line = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return "not text", None
    if not line.strip():
        return None, None
    run, tab, job = line.partition("\t")
    if not tab or not (RUN_DIR.fullmatch(run) or WORKER_KEY.fullmatch(run)) or not JOB_ID.fullmatch(job):
        return "not a run folder, a tab and a job id", None
    return None, (run, job)


def _bad_lines(path: Path, bad: list, strict: bool) -> None:
    number, raw, why = bad[0]
    shown = raw[:60].decode("utf-8", errors="replace")
    if strict:
        raise UserError(f"the line {shown!r} is {why}: which run it records, and whether that run was submitted, "
                        "cannot be told", file=path, line=number,
                        fix="find the run's job (squeue, or slurm-*.out / local.out in its folder), then write the "
                            "line whole (run folder, a tab, the job id), or delete it to submit that run again")
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    warn(f"{path}:{number}: skipping a damaged line{more}: {shown!r} is {why}")
