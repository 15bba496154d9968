"""The run folder: what experiment.py writes into it and what train.py adds.

Written by experiment.py: config.yaml, exp_<i>.yaml, exp.sh, run.yaml, hash.txt (it names the
sweep's diff.patch when the code is dirty), comet_url.txt, env.yaml. Added by train.py:
    state.json       where the run is: state, stage, finished stages, restarts (atomic)
    metrics.jsonl    every logged metric, one JSON object per line (append-only)
    results.json     the final figures of each stage (what `experiment.py collect` shows)
    checkpoints/     resumable training state
    comet/           the offline Comet archive (<key>.zip)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypersal import yamlio

STATES = ("running", "done", "failed", "stopped")


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
        return yamlio.load(self.run_yaml) if self.run_yaml.is_file() else {}

    def state(self) -> dict:
        return _read_json(self.state_file)

    def write_state(self, state: dict) -> None:
        yamlio.write_text_atomic(self.state_file, json.dumps(state, indent=1) + "\n")

    def results(self) -> dict:
        return _read_json(self.results_file)

    def write_results(self, results: dict) -> None:
        """Stages in pipeline order (as `collect` shows them)."""
        yamlio.write_text_atomic(self.results_file, json.dumps(results, indent=1) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
