"""One run over several processes: the environment, and DDP on the real local Slurm cluster
(CPU, gloo): two tasks train like one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from hypersal.train.checkpoint import load
from hypersal.train.distributed import World, first_host, from_environment, master
from hypersal.train.fit import scaled_lr

from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment
from helpers.slurm import jobs_of, release_when_requeued, wait_for, wait_until


@pytest.mark.parametrize("nodelist, host", [("node01", "node01"), ("gpu[03-05,09]", "gpu03"),
                                            ("a[7],b[1-2]", "a7"), ("vm", "vm"), ("n[001-004]", "n001")])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_world_from_srun_torchrun_or_nothing():
    assert from_environment({}) == World(0, 0, 1)
    srun = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "g[2-3]",
            "SLURM_JOB_ID": "1234"}
    assert from_environment(srun) == World(5, 1, 8)
    assert master(srun) == ("g2", 20000 + 1234)
    torchrun = {**srun, "RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert from_environment(torchrun) == World(3, 3, 4) and master(torchrun) == ("h", 29500)
    assert from_environment({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == World()   # one task: no DDP


def test_learning_rate_scaling_rules():
    class C(dict):
        __getattr__ = dict.__getitem__
    train = C(batch_size=64)
    assert scaled_lr(C(lr_scaling="none", reference_batch=8), train, 0.001) == 0.001
    assert scaled_lr(C(lr_scaling="linear", reference_batch=8), train, 0.001) == pytest.approx(0.008)
    assert scaled_lr(C(lr_scaling="sqrt", reference_batch=16), train, 0.001) == pytest.approx(0.002)


def run_equivalence(tmp_path: Path, dtype: str, steps: int) -> list[float]:
    """Max weight difference after each step, 2 processes (DDP, gloo) vs 1, same global batch."""
    helper = Path(__file__).parent / "helpers" / "ddp_equivalence.py"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29600 + (os.getpid() % 300))}
    args = [PYTHON, str(helper), str(tmp_path), str(tmp_path), dtype, str(steps)]
    subprocess.run(args, check=True, env=env, cwd=ROOT)
    ranks = [subprocess.Popen(args, env={**env, "RANK": str(r)}, cwd=ROOT) for r in (0, 1)]
    assert all(p.wait(timeout=300) == 0 for p in ranks)
    return [(torch.load(tmp_path / f"w1_{s}.pt") - torch.load(tmp_path / f"w2_{s}.pt")).abs().max().item()
            for s in range(steps)]


def test_ddp_with_global_batchnorm_is_the_global_batch_step_exactly(tmp_path):
    """In float64 the two stay equal step after step: the gradient, the hypernetwork's included,
    and the BatchNorm statistics are the global batch's. In float32 they part slowly: the two
    compute BatchNorm variances with different rounding, which near-constant channels amplify."""
    diffs = run_equivalence(tmp_path, "float64", 8)
    assert max(diffs) < 1e-6 and diffs[-1] < 5 * diffs[1] + 1e-9, diffs      # bounded, not growing


# SGD: Adam turns the last-bit noise of near-zero gradients into +-lr steps (its update is about
# m / sqrt(v) = +-1 whatever the gradient's size), so with Adam 1 and N processes agree to about
# lr x steps; with SGD to float precision over the first steps (see the float64 test above).
TRAINER = {**TINY_TRAINER, "deterministic": True, "comet": {"mode": "offline", "workspace": "w"},
           "pipeline": ["train", "test"], "test": {"grid_images": 1},
           "train": {**TINY_TRAINER["train"], "epochs": 1, "steps_per_epoch": 3, "batch_size": 8,
                     "checkpoint": {"every_steps": 2}, "log_every": 1,
                     "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}}}


def sweep(tmp_path: Path, tasks_per_run: list[int], name: str = "ddp") -> tuple[Path, dict]:
    """One run per entry of tasks_per_run, all with the same trainer config and seed."""
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": name, "base_dir": str(tmp_path), "config": TRAINER, "seed": 0},
        "sbatch": {"cpus": 1, "mem": "2G"},
        "runs": [{"sbatch": {"tasks_per_node": n}} for n in tasks_per_run]}))
    experiment(f"--experiment={exp_file}", "--mode=jobs", check_rc=0)
    exp = tmp_path / name
    return exp, jobs_of(exp)


def final_state(run: Path) -> dict:
    return load(run / "models" / "after_train.pt")["state"]


@pytest.mark.slurm
def test_two_tasks_train_like_one_process_with_the_same_global_batch(slurm, tmp_path):
    exp, jobs = sweep(tmp_path, [2, 1])
    wait_for(list(jobs.values()), timeout=400)
    two, one = exp / "run_000", exp / "run_001"
    for run in (two, one):
        assert json.loads((run / "state.json").read_text())["state"] == "done", run
    log = next(two.glob("slurm-*.out")).read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log
    assert "#SBATCH --ntasks-per-node=2" in (two / "exp.sh").read_text() and "exec srun" in (two / "exp.sh").read_text()
    a, b = final_state(two), final_state(one)
    tensors = [k for k in a if a[k].is_floating_point()]
    # float32: the two compute BatchNorm variances with other rounding, which near-constant
    # channels of this tiny random network amplify (~1e-3 of a tensor's scale after 3 steps);
    # in float64 they stay equal (test_ddp_with_global_batchnorm_is_the_global_batch_step_exactly).
    flat_a, flat_b = (torch.cat([w[k].flatten() for k in tensors]) for w in (a, b))
    relative = ((flat_a - flat_b).norm() / flat_b.norm()).item()
    assert tensors and relative < 1e-3, relative
    losses = [[json.loads(x)["loss"] for x in (r / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
              for r in (two, one)]
    assert len(losses[0]) == 3 and all(abs(p - q) < 1e-4 for p, q in zip(*losses)), losses   # the global loss
    # Only rank 0 wrote: one line per logged step, one archive, one set of test outputs.
    lines = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if "loss" in x and "val_loss" not in x]
    assert steps == sorted(set(steps))
    assert len(list((two / "comet").glob("*.zip"))) == 1
    assert (two / "test" / "metrics.csv").is_file()
    assert log.count("hypersal[0/2]: stage test") == 1 and "hypersal[1/2]: stage test" not in log


@pytest.mark.slurm
def test_a_requeued_two_task_run_resumes_on_both_ranks(slurm, tmp_path, monkeypatch):
    monkeypatch.setitem(TRAINER, "train", {**TRAINER["train"], "epochs": 4, "steps_per_epoch": 6})
    exp, jobs = sweep(tmp_path, [2], name="ddpq")
    run, job = exp / "run_000", jobs["run_000"]

    def step() -> int:
        try:
            return load(run / "checkpoints" / "train" / "last.pt")["step"]
        except Exception:
            return -1
    wait_until(lambda: step() >= 2, 240, "a checkpoint at step 2")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)   # to the srun tasks, as Slurm does
    release_when_requeued(job)
    wait_for([job], timeout=400)
    state = json.loads((run / "state.json").read_text())
    assert state["state"] == "done" and state["requeues"] == 1
    log = next(run.glob("slurm-*.out")).read_text()
    resumed = [line for line in log.splitlines() if "train: resumed from last.pt at step" in line]
    assert {line.split(":")[0] for line in resumed} == {"hypersal[0/2]", "hypersal[1/2]"}
    assert len({line.split("at step ")[1] for line in resumed}) == 1       # the same step on both ranks
    assert f"job {job} requeued" in log


def test_torchrun_without_slurm(tmp_path):
    """Users without Slurm: the same train.py under torchrun (2 processes, gloo, CPU)."""
    folder = tmp_path / "run"
    folder.mkdir()
    cfg = {**TRAINER, "comet": {"mode": "disabled"}, "pipeline": ["train", "export"]}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "train.py"), "--config", str(folder / "config.yaml")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 of 2" in proc.stderr and "rank 1 of 2" in proc.stderr
    assert json.loads((folder / "state.json").read_text())["stages_done"] == ["train", "export"]
    assert sorted(p.name for p in (folder / "export").glob("*.pth")) == sorted(
        f"{t}.pth" for t in ["center_bias", "frequency_tuned", "image_signature", "spectral_residual"])
