"""The whole stage pipeline on CPU with tiny sizes, and exact resumption after a stop."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hypersal.data.cache import read_image, resize
from hypersal.stages.export import load_exported
from hypersal.train.checkpoint import load
from hypersal.train.steps import images_to_input

from helpers.cli import PYTHON, ROOT, train

TASKS = ["spectral_residual", "frequency_tuned", "image_signature", "center_bias"]
SMALL = {"epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "val_batches": 1, "val_batch_size": 4, "actions": []}


def config(folder: Path, pipeline: list[str], **sections) -> Path:
    cfg = {
        "pipeline": pipeline, "comet": {"mode": "disabled"},
        "data": {"size": [32, 32], "workers": 2, "synth": {"n": 24, "size": [48, 64], "tasks": TASKS}},
        "model": {"encoder": {"cutoff": 7}, "hypernet": {"hidden": [16], "chunk_size": 1024}},
        "train": SMALL, **sections,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "config.yaml"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    cfg = config(folder, ["pretrain_one_task", "train", "train_catchup", "adapt", "test", "run", "export"],
                 train={**SMALL, "optim": {"lr": 0.0037},
                        "actions": [{"name": "maps_tracker", "every": 1, "images": 2}]},
                 # The other training stages inherit train's values (SMALL, the lr) unless they set their own.
                 pretrain_one_task={"epochs": 1, "steps_per_epoch": 2, "actions": [], "optim": {"lr": 0.002}},
                 train_catchup={"epochs": 1, "actions": []},
                 adapt={"task": "center_bias", "shots": 5, "epochs": 2, "steps_per_epoch": 3, "actions": []},
                 test={"grid_images": 3})
    proc = train("--config", str(cfg), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return folder, proc


def model_state(folder: Path, tag: str) -> dict:
    return load(folder / "models" / f"after_{tag}.pt")["state"]


def test_every_stage_ran_and_reported(full_run):
    folder, proc = full_run
    state = json.loads((folder / "state.json").read_text())
    assert state["state"] == "done"
    assert state["stages_done"] == ["pretrain_one_task", "train", "train_catchup", "adapt", "test", "run", "export"]
    results = json.loads((folder / "results.json").read_text())
    assert results["pretrain_one_task"]["task"] == "frequency_tuned"      # the first training task
    assert results["adapt"]["task"] == "center_bias" and len(results["adapt"]["images"]) == 5
    assert results["run"]["images"] == 3 and results["run"]["images_per_second"] > 0


def test_a_train_value_reaches_the_stages_that_do_not_set_it(full_run):
    folder, _ = full_run
    logged = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if "lr" in m:
            logged.setdefault(m["stage"], set()).add(m["lr"])
    assert logged["train"] == logged["train_catchup"] == logged["adapt"] == {0.0037}
    assert logged["pretrain_one_task"] == {0.002}                      # its own value wins
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
             if '"train_catchup"' in line and '"lr"' in line]
    assert steps == [3]                                                 # SMALL's steps_per_epoch, inherited


def test_the_maps_tracker_draws_every_epoch(full_run):
    folder, _ = full_run
    pictures = sorted((folder / "progress").glob("*.png"))
    assert [p.name for p in pictures] == ["train_epoch_001.png", "train_epoch_002.png"]
    assert Image.open(pictures[0]).size[0] >= 6 * 96                   # 2 images x (image, target, map)


def test_train_holds_out_the_adapted_task(full_run):
    folder, _ = full_run
    saved = load(folder / "models" / "after_train.pt")
    assert saved["args"]["task_names"] == ["frequency_tuned", "image_signature", "spectral_residual"]
    after_adapt = load(folder / "models" / "after_adapt.pt")["args"]
    assert after_adapt["task_names"][-1] == "center_bias" and after_adapt["n_trained"] == 3


def test_train_catchup_moved_only_task_embeddings(full_run):
    folder, _ = full_run
    before, after = model_state(folder, "train"), model_state(folder, "train_catchup")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "hnet.task_embeddings" in changed
    assert all(k == "hnet.task_embeddings" or k.startswith("bn_bank.") for k in changed), changed


def test_adapt_learned_only_the_new_embedding(full_run):
    folder, _ = full_run
    before, after = model_state(folder, "train_catchup"), model_state(folder, "adapt")
    emb0, emb1 = before["hnet.task_embeddings"], after["hnet.task_embeddings"]
    assert torch.equal(emb0, emb1[:3])                                     # trained tasks untouched
    assert not torch.allclose(emb1[3], emb0.mean(0))                        # the new one learned
    shared = [k for k in before if not k.startswith(("bn_bank.", "hnet.task_embeddings"))]
    assert all(torch.equal(before[k], after[k]) for k in shared)


def test_test_stage_writes_tables_and_pictures(full_run):
    folder, proc = full_run
    lines = (folder / "test" / "metrics.csv").read_text().splitlines()
    assert lines[0] == "task,cc,kld,sim,nss,auc_judd,auc_borji,sauc,info_gain,mae,fbeta"
    assert [line.split(",")[0] for line in lines[1:]] == [
        "frequency_tuned", "image_signature", "spectral_residual", "center_bias", "mean"]
    row = lines[1].split(",")
    assert all(row[i] for i in (1, 2, 3, 9, 10)) and not any(row[i] for i in range(4, 9))   # no fixations
    assert "| mean |" in (folder / "test" / "metrics.md").read_text()
    picture = Image.open(folder / "test" / "center_bias.png")
    assert picture.size[0] > 4 * 160 and picture.size[1] > 3 * 160


def test_run_stage_writes_a_map_per_image_at_its_size(full_run):
    folder, _ = full_run
    maps = folder / "maps"
    assert sorted(p.name for p in maps.iterdir()) == sorted(TASKS)
    for task in TASKS:
        pngs = sorted((maps / task).glob("*.png"))
        assert len(pngs) == 3
        assert Image.open(pngs[0]).size == (64, 48) and Image.open(pngs[0]).mode == "L"
        assert len(list((maps / task / "overlays").glob("*.jpg"))) == 3


def test_exported_mnet_gives_the_hnet_path_maps(full_run):
    folder, _ = full_run
    images_dir = Path(json.loads((folder / "results.json").read_text())["run"]["images_dir"])
    from hypersal.runner.job import build_model
    saved = load(folder / "models" / "after_adapt.pt")
    args = {**saved["args"], "mnet": {**saved["args"]["mnet"], "weights": None, "weights_path": None}}
    model = build_model(args)
    model.load_state_dict(saved["state"])
    model.eval()
    for task in ("center_bias", "image_signature"):
        net = load_exported(folder / "export", task)
        for source in sorted(images_dir.glob("*.jpg"))[:2]:
            image = resize(read_image(source), (32, 32))
            x = images_to_input(torch.from_numpy(image).permute(2, 0, 1)[None], torch.device("cpu"))
            with torch.no_grad():
                assert torch.allclose(net(x), model(x, task=model.task_index(task)), atol=1e-5)


def test_a_config_with_fixations_reports_fixation_metrics(tmp_path):
    """A dataset with fixation maps gets nss and the AUCs; others stay absent."""
    from hypersal.data import synth
    data = synth.make(tmp_path / "data", n=16, size=(48, 64), tasks=["frequency_tuned", "center_bias"],
                      quiet=True, workers=1)
    for task in ("frequency_tuned",):
        (data / "fixations" / task).mkdir(parents=True)
        for m in (data / "maps" / task).glob("*.png"):
            a = np.asarray(Image.open(m))
            Image.fromarray(((a >= np.sort(a.flatten())[-20]) * 255).astype(np.uint8)).save(
                data / "fixations" / task / m.name)
    cfg = config(tmp_path / "run", ["train", "test"], tasks=[],
                 data={"size": [32, 32], "images_dir": str(data / "images"), "maps_dir": str(data / "maps"),
                       "fixations_dir": str(data / "fixations"), "workers": 2},
                 test={"grid_images": 0})
    proc = train("--config", str(cfg), timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r.split(",")[0]: r.split(",") for r in (tmp_path / "run" / "test" / "metrics.csv").read_text().splitlines()}
    assert all(rows["frequency_tuned"][1:]) and rows["frequency_tuned"][4] != ""
    assert rows["center_bias"][4:9] == ["", "", "", "", ""]


def final_weights(folder: Path) -> dict:
    return load(folder / "models" / "after_train.pt")["state"]


@pytest.mark.parametrize("model", [{"encoder": {"cutoff": 7}, "decoder": {"skip": 3, "prior": 4},
                                      "hypernet": {"hidden": [16], "chunk_size": 1024, "start": "learned"},
                                      "task_encoder": {"width": 16}}],
                         ids=["decoder-skip-prior-episodic-encoder"])
def test_stop_and_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, model):
    """SIGTERM at some step, the same command again: the final weights are equal (CPU), for a
    model with every optional part, trained episodically (train.episodic, the embedding's steps
    and the task encoder) from a learned start.
    The plain model's stops and resumes (SIGTERM from Slurm's requeue, USR2, a hard kill) are
    compared the same way in test_preemption.py."""
    train_cfg = {**SMALL, "epochs": 3, "steps_per_epoch": 8, "checkpoint": {"every_steps": 1}}
    train_cfg["episodic"] = {"weight": 1.0, "inner_steps": 2, "encoder_weight": 1.0}
    extra = {"model": model}
    whole = config(tmp_path / "whole", ["train"], deterministic=True, train=train_cfg, **extra)
    assert train("--config", str(whole)).returncode == 0
    cut = config(tmp_path / "cut", ["train"], deterministic=True, train=train_cfg, **extra)
    proc = subprocess.Popen([PYTHON, str(ROOT / "train.py"), "--config", str(cut)],
                            stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "cut" / "checkpoints" / "train" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    stopped_at = load(ckpt)["step"]
    assert 0 < stopped_at < 24
    again = train("--config", str(cut))
    assert again.returncode == 0 and f"resumed from last.pt at step {stopped_at}" in again.stderr
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the skip's layers and the saliency-shaped outputs are there, and trained
    assert any("decoder.lateral" in k for k in a) and any("output.prior_weight" in k for k in a)
    assert "hnet.start" in a and a["hnet.start"].abs().sum() > 0         # the learned start moved
    assert a["task_encoder.to_offsets.weight"].abs().sum() > 0           # the task encoder trained
    hist_a = json.loads((tmp_path / "whole" / "results.json").read_text())["train"]
    hist_b = json.loads((tmp_path / "cut" / "results.json").read_text())["train"]
    assert hist_a["final_train_loss"] == hist_b["final_train_loss"]


def test_pretrain_weights_pulls_the_hypernet_towards_given_networks(full_run, tmp_path):
    """The export of one run becomes the target of another run's hypernetwork."""
    folder, _ = full_run
    cfg = config(tmp_path / "pw", ["pretrain_weights"], tasks=["frequency_tuned", "image_signature"],
                 pretrain_weights={**SMALL, "epochs": 4, "steps_per_epoch": 25, "weights_dir": str(folder / "export"),
                                   "optim": {"name": "adam", "lr": 0.01, "weight_decay": 0.0, "momentum": 0.9}})
    proc = train("--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    losses = [json.loads(line)["loss"] for line in (tmp_path / "pw" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < 0.3 * losses[0], losses
    saved = load(tmp_path / "pw" / "models" / "after_pretrain_weights.pt")
    target = torch.load(folder / "export" / "image_signature.pth", weights_only=True)
    bank = {k: v for k, v in saved["state"].items() if k.startswith("bn_bank.")}
    key = "bn_bank.encoder__blocks__0__1__running_mean"
    assert torch.equal(bank[key][1], target["encoder.blocks.0.1.running_mean"])     # BN statistics copied


def test_pretrain_weights_without_files_is_a_clear_error(tmp_path):
    cfg = config(tmp_path / "pw", ["pretrain_weights"], pretrain_weights={"weights_dir": str(tmp_path)})
    proc = train("--config", str(cfg))
    assert proc.returncode == 2 and "no weight file for task(s)" in proc.stderr


def test_the_fast_path_follows_the_fp32_loss_curve(tmp_path):
    """bf16 autocast and channels-last (the GPU fast path; here on the CPU, for the mechanics)
    track the fp32 eager run's losses on a fixed seed within bf16's noise."""
    fast = {**SMALL, "epochs": 2, "steps_per_epoch": 10, "log_every": 1, "val_batches": 0}
    curves = []
    for name, extra in (("fp32", {}), ("fast", {"precision": "bf16", "channels_last": True})):
        cfg = config(tmp_path / name, ["train"], deterministic=True, train={**fast, **extra})
        proc = train("--config", str(cfg))
        assert proc.returncode == 0, proc.stderr
        curves.append([json.loads(x)["loss"] for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
                       if '"loss"' in x])
    fp32, bf16 = curves
    assert len(fp32) == len(bf16) == 20
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) < 0.03, list(zip(fp32, bf16))
    assert abs(sum(fp32[-5:]) - sum(bf16[-5:])) / 5 < 0.02


def test_a_new_task_the_dataset_lacks_is_a_clear_error(tmp_path):
    cfg = config(tmp_path / "nt", ["adapt"], adapt={"task": "no_such_task"})
    proc = train("--config", str(cfg), timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "adapt.task: the new task must be one of the dataset's tasks, got 'no_such_task'" in proc.stderr
    assert f"set adapt.task to one of: {', '.join(sorted(TASKS))}" in proc.stderr


def test_a_stage_without_its_held_out_task_fails_before_training(tmp_path, stage="adapt"):
    cfg = config(tmp_path / "fs", ["train", stage], adapt={"task": None})
    proc = train("--config", str(cfg), timeout=600)
    assert proc.returncode == 2 and f"stage '{stage}' needs adapt.task, which is not set" in proc.stderr
    assert "stage train" not in proc.stderr and not (tmp_path / "fs" / "checkpoints").exists()


def test_adapt_fine_tunes_with_its_own_lr_and_epochs(tmp_path):
    tiny = {"epochs": 1, "steps_per_epoch": 2}
    cfg = config(tmp_path, ["train", "adapt"], train={**SMALL, **tiny},
                 adapt={"task": "center_bias", "shots": 4, **tiny, "actions": [], "finetune_epochs": 1,
                        "finetune_lr": 0.0005})
    proc = train("--config", str(cfg), timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["adapt"]["finetune"]["steps"] == 2
    lrs = {m["stage"]: m["lr"] for m in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
           if "lr" in m}
    assert lrs["adapt"] == 0.001 and lrs["adapt_finetune"] == 0.0005     # train's lr, then its own


@pytest.mark.parametrize("bn_stats", ["keep", "update"])
def test_adapt_keeps_or_updates_the_new_tasks_batchnorm_statistics(tmp_path, bn_stats):
    """adapt.bn_stats: keep uses the trained tasks' mean statistics for the new task and never
    re-estimates them from the k images; update (the default) does."""
    tiny = {"epochs": 1, "steps_per_epoch": 3}
    cfg = config(tmp_path, ["train", "adapt"], train={**SMALL, **tiny},
                 adapt={"task": "center_bias", "shots": 4, **tiny, "actions": [], "bn_stats": bn_stats})
    proc = train("--config", str(cfg), timeout=600)
    assert proc.returncode == 0, proc.stderr
    before, after = model_state(tmp_path, "train"), model_state(tmp_path, "adapt")
    means = [k for k in after if k.startswith("bn_bank.") and k.endswith("running_mean")]
    assert means
    new_row_is_mean = all(torch.allclose(after[k][-1], before[k].float().mean(0), atol=1e-6) for k in means)
    assert new_row_is_mean == (bn_stats == "keep")
    assert all(torch.equal(after[k][:-1], before[k]) for k in means)       # the trained tasks' rows untouched
    emb0, emb1 = before["hnet.task_embeddings"], after["hnet.task_embeddings"]
    assert not torch.allclose(emb1[-1], emb0.mean(0))                       # the embedding learned either way
