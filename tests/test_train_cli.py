"""train.py as a job runs it: errors, partial configs, signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers.cli import PYTHON, ROOT, TINY_TRAINER, train, write


def tiny_config(folder: Path, **overrides) -> Path:
    cfg = {**TINY_TRAINER, "comet": {"mode": "disabled"}, **overrides}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_unknown_key_exits_2_naming_file_line_and_key(tmp_path):
    cfg = write(tmp_path / "config.yaml", "seed: 1\ntrain:\n  epochz: 3\n")
    proc = train("--config", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"hypersal: error: {cfg}:3: train.epochz: unknown key 'epochz'. Fix: valid "
                                   "keys here are: " + ", ".join(yaml.safe_load(
                                       (ROOT / "shared/trainer/defaults.yaml").read_text())["train"])
                                   + ". Did you mean 'epochs'?")


def test_unknown_stage_exits_2_before_anything_runs(tmp_path):
    cfg = tiny_config(tmp_path, pipeline=["train", "tset"])
    proc = train("--config", str(cfg))
    assert proc.returncode == 2
    assert f"{cfg}: pipeline[1]: unknown stage 'tset'. Fix: use one of: " in proc.stderr
    state = json.loads((tmp_path / "state.json").read_text())   # `status` shows why
    assert state["state"] == "failed" and "unknown stage 'tset'" in state["error"]
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "comet").exists()


def test_sweep_outside_an_array_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SLURM_ARRAY_TASK_ID"}
    proc = subprocess.run([PYTHON, str(ROOT / "train.py"), "--sweep", str(tmp_path)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--sweep needs SLURM_ARRAY_TASK_ID" in proc.stderr


def test_a_partial_hand_written_config_is_completed_by_the_defaults(tmp_path):
    cfg = tiny_config(tmp_path)
    proc = train("--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["state"] == "done" and state["stages_done"] == ["train"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["train"]["steps"] == 6 and results["train"]["final_val_loss"] > 0
    assert not (tmp_path / "comet").exists()                     # comet disabled


def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path):
    cfg = tiny_config(tmp_path, train={**TINY_TRAINER["train"], "epochs": 200, "steps_per_epoch": 5})
    proc = subprocess.Popen([PYTHON, str(ROOT / "train.py"), "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ckpt = tmp_path / "checkpoints" / "train" / "last.pt"
        if ckpt.exists():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by signal SIGTERM" in err
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["state"] == "stopped" and "SIGTERM" in state["error"]


@pytest.mark.parametrize("kill", ["before", "after"])
def test_a_job_killed_at_an_epoch_s_checkpoint_reports_that_epoch_once(tmp_path, kill):
    """The job dies at the end of epoch 1 (SIGKILL from inside the checkpointer, through a
    sitecustomize only this first start loads), just before its checkpoint is saved or just
    after (windows of milliseconds a real kill hits now and then; before the fix a takeover
    reported epochs [1, 1, 2, 3]). The epoch's line comes after its checkpoint, so neither kill
    leaves it written; the same command again starts over (no checkpoint yet: the default
    saves at epoch ends) or resumes from epoch 1's checkpoint and writes its line then.
    Each epoch is reported once."""
    train_cfg = {**TINY_TRAINER["train"], "epochs": 3, "steps_per_epoch": 4}
    cfg = tiny_config(tmp_path / "run", deterministic=True, pipeline=["train"], train=train_cfg)
    hook = write(tmp_path / "hook" / "sitecustomize.py", f"""
        import os, signal
        from hypersal.train import checkpoint
        save = checkpoint.Checkpointer.on_epoch_end

        def kill_at_the_first_epoch_end(self, trainer):
            if {kill!r} == "after":
                save(self, trainer)
            os.kill(os.getpid(), signal.SIGKILL)

        checkpoint.Checkpointer.on_epoch_end = kill_at_the_first_epoch_end
        """)
    killed = train("--config", str(cfg), env={"PYTHONPATH": f"{hook.parent}:{ROOT}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m for m in lines if "epoch" in m] == [] and any("loss" in m for m in lines)
    again = train("--config", str(cfg))
    assert again.returncode == 0, again.stderr
    assert ("resumed from last.pt at step 4 (epoch 1)" in again.stderr) == (kill == "after"), again.stderr
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["epoch"], m["step"]) for m in lines if "epoch" in m] == [(1, 4), (2, 8), (3, 12)]
    assert all("val_loss" in m and "train_loss" in m for m in lines if "epoch" in m)
