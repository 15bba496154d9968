"""Fault injection on one machine: damaged checkpoints, a full or read-only disk, a diverging
loss, an unreachable Comet, torn logs, secrets. Each test is a row of RELIABILITY.md."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from hypersal.runfolder import RunFolder
from hypersal.tracking import Tracker, read_metrics
from hypersal.train.checkpoint import load

from helpers import disk
from helpers.runs import same_weights
from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment, train

STEPS = {"epochs": 3, "steps_per_epoch": 8, "batch_size": 4, "val_batches": 1, "val_batch_size": 4,
         "actions": [], "checkpoint": {"every_steps": 1}}


def config(folder: Path, **overrides) -> Path:
    cfg = {**TINY_TRAINER, "comet": {"mode": "disabled"}, "deterministic": True, "train": STEPS, **overrides}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "config.yaml"




def stop_midway(cfg: Path, min_step: int = 3) -> int:
    """Start train.py, SIGTERM it once a checkpoint of step >= min_step exists; its step."""
    proc = subprocess.Popen([PYTHON, str(ROOT / "train.py"), "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    ckpt = cfg.parent / "checkpoints" / "train" / "last.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if ckpt.exists() and load(ckpt)["step"] >= min_step:
                break
        except Exception:  # caught mid-rename: look again
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    return load(ckpt)["step"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("whole")
    assert train("--config", str(config(folder))).returncode == 0
    return folder


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, uninterrupted):
    cfg = config(tmp_path / "run")
    step = stop_midway(cfg)
    last = tmp_path / "run" / "checkpoints" / "train" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])          # a torn write
    proc = train("--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert f"checkpoint {last} is unreadable" in proc.stderr and "trying the previous one" in proc.stderr
    assert f"resumed from prev.pt at step {step - 1}" in proc.stderr
    assert same_weights(tmp_path / "run", uninterrupted)                      # nothing lost


def test_every_checkpoint_damaged_is_an_error_not_a_silent_restart(tmp_path):
    cfg = config(tmp_path / "run")
    stop_midway(cfg)
    for name in ("last.pt", "prev.pt"):
        (tmp_path / "run" / "checkpoints" / "train" / name).write_bytes(b"garbage")
    proc = train("--config", str(cfg))
    assert proc.returncode == 1
    assert "every checkpoint is damaged (last.pt, prev.pt" in proc.stderr and "delete them to start" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs: a real disk that can be filled."""
    with disk.tmpfs(tmp_path / "disk", 64) as folder:
        yield folder


def fill(disk: Path, leave_bytes: int) -> Path:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler


def test_a_kill_between_writing_a_checkpoint_and_rotating_it_in_resumes_from_the_newest(tmp_path):
    """save() writes next.pt in full, then renames last.pt to prev.pt and next.pt to last.pt. A
    SIGKILL between those steps (seen in CI: last.pt gone, next.pt whole) resumes from next.pt,
    the newest, not from the older prev.pt."""
    from types import SimpleNamespace
    from hypersal.train.checkpoint import Checkpointer
    folder = tmp_path / "checkpoints" / "train"
    said = []
    ck = Checkpointer(folder, log=said.append)

    def trainer(step):
        model = torch.nn.Linear(4, 4)
        return SimpleNamespace(name="train", model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                               scheduler=None, step=step, epoch=0, history=[], metrics={}, epoch_loss_sum=0.0,
                               epoch_loss_count=0, actions=[], config={})
    for step in (3, 6):
        ck.save(trainer(step))
    ck._write(ck.state(trainer(9)), folder / "next.pt", trainer(9))      # written in full, then the kill
    os.replace(folder / "last.pt", folder / "prev.pt")                    # ... or after the first rename
    resumed = trainer(0)
    assert Checkpointer(folder, log=said.append).restore(resumed) and resumed.step == 9
    assert said[-1] == "train: resumed from next.pt at step 9 (epoch 0)"


def test_a_disk_full_at_the_best_model_s_save_is_said_as_for_a_checkpoint(small_disk):
    """best.pt, written at an epoch's end before last.pt, fails on a full disk as last.pt does: a
    CheckpointError naming the folder and what is intact, the earlier best.pt kept (a traceback
    of OSError before; seen in CI when the disk filled at that moment)."""
    from types import SimpleNamespace
    from hypersal.train.checkpoint import Checkpointer, CheckpointError
    folder = small_disk / "run" / "checkpoints" / "train"
    folder.mkdir(parents=True)
    ck = Checkpointer(folder)
    trainer = SimpleNamespace(name="train", model=torch.nn.Linear(64, 64), epoch=1, step=5,
                              metrics={"val_loss": 0.5})
    ck._write({"model": trainer.model.state_dict(), "epoch": 0, "step": 2, "val_loss": 0.9}, ck.best_file, trainer)
    filler = fill(small_disk, 0)
    try:
        with pytest.raises(CheckpointError) as e:
            ck.on_epoch_end(trainer)
    finally:
        filler.unlink()
    assert str(e.value) == f"train: cannot write a checkpoint in {folder} (No space left on device); no earlier checkpoint exists"
    assert load(ck.best_file)["step"] == 2 and sorted(p.name for p in folder.iterdir()) == ["best.pt"]


def test_a_full_disk_stops_with_a_clear_error_and_the_checkpoint_intact(small_disk):
    cfg = config(small_disk / "run")
    step = stop_midway(cfg)
    ckpt = small_disk / "run" / "checkpoints" / "train"
    # No room at all: said at once, before anything starts.
    filler = fill(small_disk, 0)
    proc = train("--config", str(cfg))
    assert proc.returncode == 2 and "cannot write in the run folder (No space left on device)" in proc.stderr
    # Room for the logs, not for a checkpoint: the write fails, nothing is lost.
    filler.unlink()
    filler = fill(small_disk, 300_000)
    proc = train("--config", str(cfg))
    assert proc.returncode == 1, proc.stderr
    assert f"train: cannot write a checkpoint in {ckpt} (No space left on device); the earlier " \
           "checkpoints last.pt and prev.pt are intact" in proc.stderr
    assert load(ckpt / "last.pt")["step"] == step and load(ckpt / "prev.pt")["step"] == step - 1
    assert not (ckpt / "next.pt").exists()
    assert json.loads((small_disk / "run" / "state.json").read_text())["state"] == "failed"
    filler.unlink()
    again = train("--config", str(cfg))                                       # space back: it goes on
    assert again.returncode == 0 and f"resumed from last.pt at step {step}" in again.stderr


def test_a_read_only_run_folder_is_said_before_anything_starts(small_disk):
    cfg = config(small_disk / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    proc = train("--config", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"hypersal: error: {small_disk / 'run'}: cannot write in the run folder "
                                   "(Read-only file system). Fix: check the folder's permissions, its file "
                                   "system (read-only?) and free space.")


def test_a_diverging_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    cfg = config(tmp_path / "run", train={**STEPS, "optim": {"name": "sgd", "lr": 1.0e+30, "weight_decay": 0.0,
                                                             "momentum": 0.0}, "log_every": 1})
    proc = train("--config", str(cfg))
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("hypersal: error: train: the loss became nan at step ")
    step = int(line.split("at step ")[1].split(";")[0])
    ckpt = tmp_path / "run" / "checkpoints" / "train" / "last.pt"
    if ckpt.exists():
        saved = load(ckpt)["step"]
        assert saved < step and f"the last good checkpoint is {ckpt} (step {saved})" in line
        assert all(torch.isfinite(v).all() for v in load(ckpt)["model"].values() if v.is_floating_point())
    else:
        assert "there is no checkpoint of this stage yet" in line
    assert "Fix" not in line and "set on_nan: skip" in line


def test_on_nan_skip_drops_the_bad_batches_and_goes_on(tmp_path):
    cfg = config(tmp_path / "run", train={**STEPS, "on_nan": "skip", "optim": {
        "name": "sgd", "lr": 1.0e+30, "weight_decay": 0.0, "momentum": 0.0}})
    proc = train("--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    skipped = [x["skipped_batches"] for x in lines if "skipped_batches" in x]
    assert skipped and skipped[-1] > 0


def test_comet_unreachable_with_a_key_falls_back_offline_at_once(tmp_path):
    cfg = config(tmp_path / "run", comet={"mode": "online", "project": "hypersal", "workspace": "w"})
    (tmp_path / "run" / "run.yaml").write_text(yaml.safe_dump({"comet_key": "0123456789abcdef0123456789abcdef"}))
    t0 = time.monotonic()
    proc = train("--config", str(cfg), env={"COMET_API_KEY": "k" * 32,
                                            "COMET_URL_OVERRIDE": "http://127.0.0.1:9/clientlib/"})
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 60
    assert "Comet is not usable online (cannot reach http://127.0.0.1:9/clientlib/health/ping" in proc.stderr
    assert (tmp_path / "run" / "comet" / "0123456789abcdef0123456789abcdef.zip").is_file()
    assert any("val_loss" in m for m in read_metrics(RunFolder(tmp_path / "run")))


def test_a_torn_metrics_line_is_closed_and_skipped(tmp_path, capsys):
    folder = RunFolder(tmp_path)
    folder.metrics.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')      # killed mid-line
    tracker = Tracker(folder, {"mode": "disabled"}, {})
    tracker.log_metrics({"loss": 0.25}, step=3, stage="train")
    rows = read_metrics(folder)
    assert [r["step"] for r in rows] == [1, 3]
    assert "skipping a torn line" in capsys.readouterr().err


def test_no_secret_is_written_anywhere_by_a_whole_run(tmp_path):
    secret = "sEcReT-c0met-" + "key-4242"   # split: a literal would make the snapshot leave this file out
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({"experiment": {"name": "s", "base_dir": str(tmp_path), "config": TINY_TRAINER},
                                        "runs": [{}]}))
    experiment(f"--experiment={exp_file}", "--executor=local", check_rc=0,
               env={"COMET_API_KEY": secret, "MY_SERVICE_TOKEN": secret})
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert any(p.suffix == ".zip" for p in files)
    for p in files:
        blobs = [p.read_bytes()]
        if p.suffix == ".zip":
            with zipfile.ZipFile(p) as z:
                blobs += [z.read(n) for n in z.namelist()]
        assert all(secret.encode() not in b for b in blobs), p
