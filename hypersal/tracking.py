"""Logging a run: always a local metrics.jsonl, and Comet when the config asks.

comet.mode:
- offline (default): an archive in <run>/comet/, uploaded later with `experiment.py upload`.
  Compute nodes often have no internet, and comet_ml with a key but no network blocks ~30 s
  and then drops everything (checked with comet_ml 3.58), so online is never the default.
- online: straight to Comet (needs COMET_API_KEY or ~/.comet.config).
- disabled: metrics.jsonl only.
The experiment key comes from run.yaml (assigned by experiment.py), so comet_url.txt is right
before the job starts. A restarted job continues the same experiment (a second archive,
KEY-xxxx.zip, appended on upload).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any
import urllib.error
import urllib.request

from hypersal.config import choices
from hypersal.errors import UserError
from hypersal.log import say
from hypersal.runfolder import RunFolder

MODES = choices.COMET_MODES   # declared in hypersal/config/choices.py
_QUIET = dict(log_env_details=False, log_env_gpu=False, log_env_host=False, log_env_cpu=False,
              log_git_metadata=False, log_git_patch=False, log_code=False, auto_output_logging=False,
              auto_param_logging=False, auto_metric_logging=False, parse_args=False,
              display_summary_level=0)


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class Tracker:
    def __init__(self, folder: RunFolder, comet: dict, run_info: dict, active: bool = True):
        """`active` is False on every process but rank 0: they log nothing at all."""
        self.folder, self.active = folder, active
        self.comet = None
        self.key = run_info.get("comet_key")
        self.mode = comet.get("mode", "offline") if active else "disabled"
        if self.mode not in MODES:
            raise UserError(f"unknown Comet mode '{self.mode}'", key="comet.mode", fix=f"use one of: {', '.join(MODES)}")
        if active:
            _end_torn_line(folder.metrics)
        if self.mode == "online":
            problem = online_problem()
            if problem:
                say(f"Comet is not usable online ({problem}): logging to an offline archive in "
                    f"{folder.comet_dir} instead; send it later with `experiment.py upload`")
                self.mode = "offline"
        if self.mode != "disabled":
            self.comet = self._open(comet, run_info)

    def _open(self, comet: dict, run_info: dict):
        # We log what we choose; comet_ml's automatic logging (and its warning that torch was
        # imported first) stays off, as do its environment probes (network, 1-2 s at end()).
        os.environ.setdefault("COMET_AUTO_LOG_ENV_DETAILS", "false")
        os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")
        import comet_ml
        common = dict(project_name=comet.get("project"), workspace=comet.get("workspace"), **_QUIET)
        if self.mode == "online":
            cls = comet_ml.ExistingExperiment if self._restarted_online() else comet_ml.Experiment
            exp = cls(experiment_key=self.key, **common)
        else:
            self.folder.comet_dir.mkdir(exist_ok=True)
            first = self.folder.comet_dir / f"{self.key}.zip"
            cls = comet_ml.ExistingOfflineExperiment if (self.key and first.exists()) \
                else comet_ml.OfflineExperiment
            exp = cls(offline_directory=str(self.folder.comet_dir), experiment_key=self.key, **common)
        exp.set_name(f"{run_info.get('experiment', 'hypersal')}/{self.folder.path.name}")
        if run_info.get("comet", {}).get("tags"):
            exp.add_tags(list(run_info["comet"]["tags"]))
        for key in ("note", ):
            if run_info.get("comet", {}).get(key):
                exp.log_other(key, run_info["comet"][key])
        if run_info.get("exp_desc"):
            exp.log_other("exp_desc", run_info["exp_desc"])
        return exp

    def _restarted_online(self) -> bool:
        return bool(self.folder.state().get("restarts", 0))

    def log_params(self, params: dict) -> None:
        if self.comet is not None:
            self.comet.log_parameters(params)

    def log_other(self, key: str, value: Any) -> None:
        if self.comet is not None:
            self.comet.log_other(key, value)

    def log_metrics(self, metrics: dict, step: int, stage: str, epoch: int | None = None) -> None:
        if not self.active:
            return
        values = {k: _plain(v) for k, v in metrics.items()}
        line = {"time": round(time.time(), 3), "stage": stage, "step": step, **values}
        if epoch is not None:
            line["epoch"] = epoch
        with open(self.folder.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        if self.comet is not None:  # "train/val_loss": the stage, then the metric
            self.comet.log_metrics({f"{stage}/{k}": v for k, v in values.items()}, step=step, epoch=epoch)

    def logged_epochs(self, stage: str) -> set[int]:
        """The epochs of `stage` that metrics.jsonl reports already (an earlier start's)."""
        if not self.active:
            return set()
        return {m["epoch"] for m in read_metrics(self.folder) if m.get("stage") == stage and "epoch" in m}

    def log_image(self, path: Path, name: str, step: int | None = None) -> None:
        if self.comet is not None:
            self.comet.log_image(str(path), name=name, step=step)

    def log_table(self, path: Path) -> None:
        if self.comet is not None:
            self.comet.log_asset(str(path))

    def close(self) -> None:
        if self.comet is not None:
            try:
                self.comet.end()
            finally:
                self.comet = None


def _end_torn_line(path) -> None:
    """A job killed while writing leaves half a line: close it, so the next line stands alone."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def online_problem(timeout: float = 3.0) -> str | None:
    """Why online logging would fail, found in seconds: no API key, or no answer from the
    Comet server's health check (the one comet_ml uses). A TCP connection alone proves little:
    proxies accept them for unreachable hosts. comet_ml itself would block ~30 s and then
    silently log nothing (checked with comet_ml 3.58)."""
    try:
        from comet_ml.config import get_config
        config = get_config()
        key, url = config["comet.api_key"], config["comet.url_override"] or "https://www.comet.com/clientlib/"
    except Exception as e:  # unreadable Comet settings
        return f"cannot read the Comet settings: {e}"
    if not key:
        return "no API key: set COMET_API_KEY or ~/.comet.config"
    ping = url.rstrip("/") + "/health/ping"
    try:
        with urllib.request.urlopen(ping, timeout=timeout) as answer:
            if answer.status == 200:
                return None
            return f"{ping} answered {answer.status}"
    except urllib.error.HTTPError as e:
        return f"{ping} answered {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return f"cannot reach {ping} ({getattr(e, 'reason', e)})"


def read_metrics(folder: RunFolder) -> list[dict]:
    """Every line of metrics.jsonl (a torn last line, from a hard kill, is skipped)."""
    out = []
    if folder.metrics.is_file():
        for line in folder.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"hypersal: skipping a torn line in {folder.metrics}", file=sys.stderr)
    return out
