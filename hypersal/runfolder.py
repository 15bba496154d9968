"""The run folder: what experiment.py writes into it and what train.py adds.

Written by experiment.py: config.yaml, exp_<i>.yaml, exp.sh, run.yaml, hash.txt (it names the
sweep's diff.patch when the code is dirty), comet_url.txt, env.yaml. Added by train.py:
    state.json       where the run is: state, stage, finished stages, restarts (atomic)
    metrics.jsonl    every logged metric, one JSON object per line (append-only)
    results.json     the final figures of each stage (what `experiment.py collect` shows)
    checkpoints/     resumable training state
    comet/           the offline Comet archive (<key>.zip)

state.json, results.json and run.yaml are written whole (atomically), so one that cannot be read
as what it should hold was damaged from outside (a disk that lost blocks, a hand edit, a copy
cut short): reading it raises `Damaged`, naming the file and what is wrong, and the caller says
so (status shows the run as `damaged`); a missing one is simply not written yet.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hypersal import yamlio
from hypersal.errors import UserError

STATES = ("running", "done", "failed", "stopped", "requeued", "pruned")
# state.json's keys that readers use, and the types they must have (None: not set yet)
STATE_TYPES = {"state": str, "stage": str, "progress": str, "error": str, "host": str, "pid": int,
               "requeues": int, "restarts": int, "pruned_epoch": int, "stages_done": list, "results": dict}
INFO_TYPES = {"sampled": dict, "trial": int, "comet_key": str, "index": int}


def now() -> str:
    """state.json's timestamps: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Damaged(UserError):
    """A run folder's file that exists but cannot be read as what it should hold."""

    def __init__(self, path: Path, what: str, fix: str | None = None):
        super().__init__(f"damaged: {what}", file=path, fix=fix or (
            "it is written whole by hypersal, so something else changed it: restore it from a backup, "
            "or move it aside (the run's other files are untouched)"))
        self.what = what


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def run_yaml(self) -> Path:
        return self.path / "run.yaml"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results_file(self) -> Path:
        return self.path / "results.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def comet_dir(self) -> Path:
        return self.path / "comet"

    def run_info(self) -> dict:
        """run.yaml (Comet key, tags, note, sampled values); {} for a config made by hand."""
        if not self.run_yaml.is_file():
            return {}
        try:
            info = yamlio.load(self.run_yaml)
        except UserError as e:   # not UTF-8, not YAML
            raise Damaged(self.run_yaml, e.message) from None
        return _checked(self.run_yaml, info, INFO_TYPES)

    def state(self) -> dict:
        """state.json; {} before train.py first wrote it. Raises Damaged."""
        state = _checked(self.state_file, _read_json(self.state_file), STATE_TYPES)
        if state.get("state") is not None and state["state"] not in STATES:
            raise Damaged(self.state_file, f"an unknown state {state['state']!r}")
        return state

    def write_state(self, state: dict) -> None:
        yamlio.write_text_atomic(self.state_file, json.dumps(state, indent=1) + "\n")

    def results(self) -> dict:
        """results.json; {} before the first stage ended. Raises Damaged."""
        return read_mapping(self.results_file)

    def write_results(self, results: dict) -> None:
        """Stages in pipeline order (as `collect` shows them)."""
        yamlio.write_text_atomic(self.results_file, json.dumps(results, indent=1) + "\n")


def read_mapping(path: Path) -> dict:
    """A JSON file written whole that holds a mapping ({} when missing). Raises Damaged."""
    return _checked(path, _read_json(path), {})


def _read_json(path: Path) -> Any:
    """The JSON document of a file written whole; {} when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise Damaged(path, f"cannot be read ({e.strerror or e})", fix="check the file's permissions") from None
    if not data.strip():
        raise Damaged(path, "the file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Damaged(path, f"not text (byte {e.start + 1} is not UTF-8)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        msg = e.msg.removesuffix(" starting at")
        cut = ", cut short?" if e.pos >= len(text.rstrip()) or msg.startswith("Unterminated") else ""
        raise Damaged(path, f"not JSON ({msg.lower()} at line {e.lineno}, column {e.colno}{cut})") from None


def _checked(path: Path, value: Any, types: dict) -> dict:
    """`value` if it is a mapping whose known keys have their types, else Damaged."""
    if not isinstance(value, dict):
        raise Damaged(path, f"expected a mapping, got {kind(value)}")
    for key, want in types.items():
        v = value.get(key)
        if v is not None and (not isinstance(v, want) or (want is int and isinstance(v, bool))):
            raise Damaged(path, f"{key} should be {kind(want())}, got {v!r}"[:200])
    return value


def kind(value: Any) -> str:
    """What a value is, in words: 'a list', 'a string', 'a number'."""
    for types, word in ((dict, "a mapping"), (list, "a list"), (str, "a string"), (bool, "a boolean"),
                        ((int, float), "a number"), (type(None), "nothing")):
        if isinstance(value, types):
            return word
    return type(value).__name__


def running_here(state: dict) -> bool:
    """state.json names a train.py process that lives on this machine now (a run of the local
    executor, or one started by hand). The process's command line must name train.py: a pid
    recorded long ago may belong to another process by now."""
    if state.get("state") != "running" or state.get("host") != socket.gethostname() or not state.get("pid"):
        return False
    pid = int(state["pid"])
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, ValueError, OverflowError):
        return False
    try:
        return b"train.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:   # gone meanwhile, or no /proc (not Linux): the pid alone must do
        return Path("/proc").is_dir() is False
    except OSError:
        return True
