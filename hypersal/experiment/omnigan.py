"""Experiment files written for omnigan's experiment.py run unchanged: its spellings are read as
hypersal's, and each old key is noted once with its new spelling.

| omnigan                     | hypersal                        | meaning                              |
|-----------------------------|---------------------------------|--------------------------------------|
| sbatch.cpu                  | sbatch.cpus                     | CPUs per task                        |
| sbatch.gpu (N or "type:N")  | sbatch.gpus (+ sbatch.gpu_type) | GPUs per node (of that type)         |
| sbatch.duration             | sbatch.time                     | the time limit                       |
| sbatch.mem, sbatch.partition| the same                        |                                      |
| experiment.dev_mode: true   | --dry-run                       | write every file, submit nothing     |
| experiment.no_comet: true   | trainer comet.mode: disabled    | no Comet experiment (metrics.jsonl)  |
| comet.tags: "a b, c d"      | comet.tags: [a b, c d]          | a string is a comma-separated list   |

The sbatch spellings apply at the experiment level and in every run entry.

Templates written for omnigan's experiment.py render unchanged too: `TEMPLATE` below declares
every variable they read, what hypersal fills it with and which sbatch values it is made of.
render.Template derives its checks from it (those sbatch values count as used; the names it
fills cannot be set under `sbatch:`), and docs/experiment-file.md's table says the same.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypersal import tree as T, yamlio
from hypersal.errors import UserError, shorten
from hypersal.log import say

SBATCH = {"cpu": "cpus", "duration": "time"}
EXPERIMENT_FLAGS = ("dev_mode", "no_comet")


def translate(doc: Any, file) -> Any:
    """The document with omnigan's keys renamed in place (lines kept for errors); says each once."""
    if not isinstance(doc, dict):
        return doc
    noted: set[str] = set()

    def note(old: str, new: str, path: tuple) -> None:
        if old not in noted:
            noted.add(old)
            line = yamlio.line_of(doc, path)
            say(f"{file}{f':{line}' if line else ''}: {old} is omnigan's spelling, read as {new}")

    sections = [(("sbatch",), doc.get("sbatch"))]
    sections += [(("runs", i, "sbatch"), run.get("sbatch")) for i, run in enumerate(doc.get("runs") or [])
                 if isinstance(run, dict)]
    for path, sbatch in sections:
        if not isinstance(sbatch, dict):
            continue
        for old, new in SBATCH.items():
            if old in sbatch:
                _rename(sbatch, old, new, doc, file, path)
                note(f"sbatch.{old}", f"sbatch.{new}", path + (new,))
        if "gpu" in sbatch:
            _split_gpu(sbatch, doc, file, path)
            note("sbatch.gpu", "sbatch.gpus (and sbatch.gpu_type for \"type:N\")", path + ("gpus",))
    exp = doc.get("experiment")
    if isinstance(exp, dict):
        for flag in EXPERIMENT_FLAGS:
            if flag in exp:
                note(f"experiment.{flag}", "--dry-run" if flag == "dev_mode" else "comet.mode: disabled",
                     ("experiment", flag))
    for i, run in enumerate(doc.get("runs") or []):
        comet = run.get("comet") if isinstance(run, dict) else None
        if isinstance(comet, dict) and isinstance(comet.get("tags"), str):
            note("comet.tags as a string", "a list of comma-separated tags", ("runs", i, "comet", "tags"))
            comet["tags"] = [t.strip() for t in comet["tags"].split(",") if t.strip()]
    return doc


def _rename(mapping: dict, old: str, new: str, doc: dict, file, path: tuple) -> None:
    if new in mapping:
        raise UserError(f"both {old} (omnigan's spelling) and {new} are set", file=file, key=T.fmt(path + (old,)),
                        line=yamlio.line_of(doc, path + (old,)), fix=f"keep {new} only")
    mapping[new] = mapping.pop(old)
    if hasattr(mapping, "lines"):
        mapping.lines[new] = mapping.lines.get(old)


def _split_gpu(sbatch: dict, doc: dict, file, path: tuple) -> None:
    """omnigan's gpu: 1, "1" or "rtx8000:1" -> gpus: 1 (and gpu_type: rtx8000)."""
    value = sbatch["gpu"]
    kind, _, count = str(value).rpartition(":")
    if isinstance(value, bool) or not count.strip().isdigit():
        raise UserError(f"cannot read sbatch.gpu {shorten(value)}", file=file, key=T.fmt(path + ("gpu",)),
                        line=yamlio.line_of(doc, path + ("gpu",)), fix="write gpus: N (and gpu_type: TYPE)")
    _rename(sbatch, "gpu", "gpus", doc, file, path)
    sbatch["gpus"] = int(count)
    if kind:
        sbatch["gpu_type"] = kind


@dataclass(frozen=True)
class Variable:
    """A variable of omnigan's sbatch templates, as hypersal fills it."""
    means: str = ""        # what it renders (docs/experiment-file.md's table is template_table())
    reads: tuple = ()      # the sbatch values it is made of: they count as used by the template
    required: str = ""     # the sbatch value it cannot do without
    text: bool = False     # inserted as written (a whole line, or nothing), not as one quoted word
    instead: str = ""      # one of omnigan's flags or data copies, rendered empty: what hypersal does


_CACHE = "hypersal copies no data to the node: train.py reads it through its cache (HYPERSAL_CACHE)"
TEMPLATE = {
    "cpu": Variable("sbatch.cpus", ("cpus",), required="cpus"),
    "gpu": Variable("`gpu:N` or `gpu:TYPE:N` from sbatch.gpus and sbatch.gpu_type; `gpu:0` without GPUs",
                    ("gpus", "gpu_type")),
    "mem": Variable("sbatch.mem", ("mem",), required="mem"),
    "time": Variable("sbatch.time", ("time",), required="time"),
    "output_path": Variable("the run's log, `<run>/slurm-%j.out` (the run folder where the template "
                            "writes `{{output_path}}/...`)"),
    "main_partition": Variable("`#SBATCH -p <sbatch.partition>`, or nothing without a partition",
                               ("partition",), text=True),
    "config": Variable("`--config=<run>/config.yaml` (`--sweep=<experiment>` in array mode)"),
    "no_comet": Variable(text=True, instead="hypersal carries it in each run's config.yaml "
                                                      "(comet.mode; experiment.no_comet: true makes it disabled)"),
    "exp_desc": Variable(text=True, instead="hypersal carries it in each run's run.yaml "
                                                      "(exp_desc, logged to Comet)"),
    "dev_mode": Variable(text=True, instead="a dry run is --dry-run (or experiment.dev_mode: true)"),
    "note": Variable(text=True, instead="hypersal carries it in each run's run.yaml "
                                                  "(comet.note, logged to Comet)"),
    "tags": Variable(text=True, instead="hypersal carries it in each run's run.yaml "
                                                  "(comet.tags, given to Comet)"),
    "zip_command": Variable(text=True, instead=_CACHE),
    "cp_unzip_command": Variable(text=True, instead=_CACHE),
}
OWN = frozenset(name for name, var in TEMPLATE.items() if var.reads == (name,))  # hypersal's names too
PARTITION_RE = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")
_OUTPUT_FOLDER_RE = re.compile(r"\{\{-?\s*output_path\s*-?\}\}/")


def template_table() -> str:
    """docs/experiment-file.md's table of the variables, one row per distinct meaning."""
    rows: dict = {}
    for name, var in TEMPLATE.items():
        rows.setdefault(f"nothing: {var.instead}" if var.instead else var.means, []).append(f"`{{{{{name}}}}}`")
    return "\n".join(["| in the template | hypersal fills in |", "|---|---|"]
                     + [f"| {', '.join(names)} | {means} |" for means, names in rows.items()])


def template_names(variables: set) -> frozenset:
    """The omnigan names a template reads that hypersal fills; none: not an omnigan template."""
    names = variables & set(TEMPLATE)
    return frozenset(names) if names - OWN else frozenset()


def check_template(path: Path, variables: set, lines: dict) -> None:
    """A placeholder of an omnigan template that misspells one of omnigan's names is refused at its
    line: it would otherwise be read as an sbatch value of its own, and the error would be about
    the value it leaves unused."""
    known = set(TEMPLATE) | {key for var in TEMPLATE.values() for key in var.reads}
    for name in variables - known - {"job"}:
        close = difflib.get_close_matches(name, list(TEMPLATE), n=1, cutoff=0.85)
        if close:
            raise UserError(f"the template reads {{{{ {name} }}}}, which is none of the variables of omnigan's "
                            "templates", file=path, line=lines.get(name),
                            fix=f"did you mean {{{{ {close[0]} }}}}? hypersal fills in "
                                f"{', '.join(sorted(TEMPLATE))}")


def note_template(path: Path, names: frozenset, lines: dict, reads_job: bool) -> None:
    """Says once, at its first line in the template, what hypersal does instead of each variable it
    renders empty; and where the jobs' code comes from when the template starts train.py itself.
    `lines`: each name the template reads -> its first line, in the template's order."""
    for name, line in lines.items():   # in the template's order
        if name in names and TEMPLATE[name].instead:
            say(f"{path}:{line}: {{{{ {name} }}}} is omnigan's, rendered empty: {TEMPLATE[name].instead}")
    if "config" in names and not reads_job:
        say(f"{path}: the template starts train.py with its own line ({{{{ config }}}} is --config=<run>/"
            "config.yaml): the jobs run the train.py of the folder it changes to, not the code snapshot. "
            "To run the frozen code, write {{ job.python }} {{ job.args }} in place of `python train.py "
            "{{ config }}`")


def output_is_folder(source: str) -> bool:
    """omnigan's own templates wrote `-o {{output_path}}/slurm-%j.out`: a folder there."""
    return bool(_OUTPUT_FOLDER_RE.search(source))


def fill(names: frozenset, sbatch: dict, job: dict, template: str, output_folder: bool, **where) -> dict:
    """The values of the omnigan variables a template reads, for one job. Text values (`text`)
    are safe as written: empty, or an #SBATCH line around a checked partition name."""
    if not names:
        return {}
    for name in sorted(names):
        needed = TEMPLATE[name].required
        if needed and needed not in sbatch:
            old = {new: old for old, new in SBATCH.items()}.get(needed)
            raise UserError(f"the template {template} reads {{{{ {name} }}}}, which is sbatch.{needed}"
                            f"{f' (omnigan: sbatch.{old})' if old else ''}, and it is not set",
                            fix=f"set sbatch.{needed} in the experiment file", **where)
    values = {name: "" for name in names if TEMPLATE[name].instead}
    flag, target = job["args"][1:3]
    made = {"cpu": lambda: sbatch["cpus"], "gpu": lambda: _gres(sbatch),
            "output_path": lambda: str(Path(job["output"]).parent) if output_folder else job["output"],
            "main_partition": lambda: _partition_line(sbatch, **where),
            "config": lambda: f"{flag}={target}"}
    values.update({name: make() for name, make in made.items() if name in names})
    return values


def _gres(sbatch: dict) -> str:
    """Slurm takes `gpu:0`, so the template's `#SBATCH --gres={{gpu}}` line stays valid without GPUs."""
    gpus, kind = sbatch.get("gpus") or 0, sbatch.get("gpu_type") or ""
    return f"gpu:{kind}:{gpus}" if gpus and kind else f"gpu:{gpus}"


def _partition_line(sbatch: dict, **where) -> str:
    partition = sbatch.get("partition")
    where = {**where, "key": f"{where.get('key') or 'sbatch'}.partition"}
    if partition in (None, ""):
        return ""
    if not isinstance(partition, str) or not PARTITION_RE.match(partition):
        raise UserError(f"the partition {partition!r} cannot go into {{{{ main_partition }}}}'s #SBATCH -p line",
                        fix="a partition name holds letters, digits, '_', '.' and '-' (',' between "
                            "several)", **where)
    return f"#SBATCH -p {partition}"
