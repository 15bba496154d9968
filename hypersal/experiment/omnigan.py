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
"""
from __future__ import annotations

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
