"""What you submit is what runs: the code frozen at submission, stage inheritance after layering,
command-line overrides (experiment.py and train.py), reruns on the current or the recorded code."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment, run, train, write
from helpers.slurm import jobs_of, squeue, wait_for


def exp_file(folder: Path, trainer: dict | None = None, config: dict | None = None, runs: int = 1) -> Path:
    doc = {"experiment": {"name": "sub", "base_dir": "out", "seed": 0, "config": config or TINY_TRAINER},
           "sbatch": {"cpus": 1, "mem": "1G"},
           "runs": [{"trainer": trainer or {}} for _ in range(runs)]}
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def read(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_code_is_frozen_in_one_shared_snapshot(tmp_path):
    exp = exp_file(tmp_path)
    first = experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    second = experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    snapshots = list((tmp_path / "out" / ".code").iterdir())
    assert len(snapshots) == 1                                   # identical code: one copy for both sweeps
    code = snapshots[0]
    assert "code snapshot " + str(code) + " (new)" in first.stderr
    assert "code snapshot " + str(code) + " (shared)" in second.stderr
    for name in ("train.py", "hypersal/runner/cli.py", "shared/trainer/defaults.yaml", "templates/sbatch.sh"):
        assert (code / name).read_bytes() == (ROOT / name).read_bytes(), name
    for sweep in ("sub", "sub_1"):
        run_dir = tmp_path / "out" / sweep / "run_000"
        assert f"{PYTHON} {code}/train.py --config {run_dir}/config.yaml" in (run_dir / "exp.sh").read_text()
        assert (run_dir / "hash.txt").read_text().splitlines()[2] == f"code {code}"
        summary = read(tmp_path / "out" / sweep / "summary.yaml")
        assert summary["code"] == {"folder": str(code), "snapshot": True}
        assert read(run_dir / "exp_0.yaml")["experiment"]["code_snapshot"] == str(code)


def test_no_snapshot_runs_the_live_checkout(tmp_path):
    exp = exp_file(tmp_path)
    experiment(f"--experiment={exp}", "--dry-run", "--no-snapshot", cwd=tmp_path, check_rc=0)
    run_dir = tmp_path / "out" / "sub" / "run_000"
    assert f"{PYTHON} {ROOT}/train.py --config" in (run_dir / "exp.sh").read_text()
    assert not (tmp_path / "out" / ".code").exists()
    assert read(run_dir / "exp_0.yaml")["experiment"]["code_snapshot"] is None


def test_a_rerun_uses_the_current_code_or_on_request_the_recorded_one(tmp_path):
    exp = exp_file(tmp_path)
    experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    old = tmp_path / "out" / "sub" / "run_000"
    code = next((tmp_path / "out" / ".code").iterdir())
    rerun_file = old / "exp_0.yaml"
    current = experiment(f"--experiment={rerun_file}", "--dry-run", "--base-dir", str(tmp_path / "again"),
                         cwd=tmp_path, check_rc=0)
    assert f"rerun of {old} on the current code (it ran on {code}: --recorded-code reruns it there)" in current.stderr
    assert "/again/.code/" in (tmp_path / "again" / "sub" / "run_000" / "exp.sh").read_text()
    recorded = experiment(f"--experiment={rerun_file}", "--dry-run", "--recorded-code", "--base-dir",
                          str(tmp_path / "third"), cwd=tmp_path, check_rc=0)
    assert f"rerun on the recorded code snapshot {code}" in recorded.stderr
    assert f"{code}/train.py" in (tmp_path / "third" / "sub" / "run_000" / "exp.sh").read_text()
    assert not (tmp_path / "third" / ".code").exists()
    # Gone, or never recorded: said with the key, nothing written.
    shutil.rmtree(code)
    gone = experiment(f"--experiment={rerun_file}", "--dry-run", "--recorded-code", "--base-dir",
                      str(tmp_path / "fourth"), cwd=tmp_path)
    assert gone.returncode == 2 and f"experiment.code_snapshot: the recorded code snapshot {code} is gone" in gone.stderr
    plain = experiment(f"--experiment={exp}", "--dry-run", "--recorded-code", cwd=tmp_path)
    assert plain.returncode == 2 and "this file records no code snapshot" in plain.stderr
    assert not (tmp_path / "fourth").exists()


def test_a_train_value_reaches_every_training_stage_unless_it_sets_its_own(tmp_path):
    exp = exp_file(tmp_path, trainer={"train": {"optim": {"lr": 0.0042}, "batch_size": 2},
                                      "train_catchup": {"optim": {"lr": 0.5}}})
    experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    cfg = read(tmp_path / "out" / "sub" / "run_000" / "config.yaml")
    for stage in ("pretrain_weights", "pretrain_one_task", "adapt"):
        assert cfg[stage]["optim"]["lr"] == 0.0042 and cfg[stage]["batch_size"] == 2, stage
    assert cfg["train_catchup"]["optim"]["lr"] == 0.5 and cfg["train_catchup"]["batch_size"] == 2
    assert cfg["adapt"]["epochs"] == 5 and cfg["pretrain_weights"]["loss"] == "mse"   # the stages' own defaults
    assert cfg["train"]["actions"] == [] and cfg["adapt"]["actions"] == []            # TINY_TRAINER's, inherited


def test_overrides_are_one_more_layer_checked_and_recorded(tmp_path):
    exp = exp_file(tmp_path, trainer={"train": {"epochs": 3}}, runs=2)
    proc = experiment(f"--experiment={exp}", "--dry-run", "trainer.train.epochs=2", "sbatch.mem=2G",
                      "trainer.train.optim.lr={sample: loguniform, from: [1e-4, 1e-2]}", "experiment.name=cli",
                      cwd=tmp_path, check_rc=0)
    out = tmp_path / "out" / "cli"
    assert "wrote 2 runs" in proc.stderr
    lrs = []
    for i in range(2):
        run_dir = out / f"run_00{i}"
        cfg = read(run_dir / "config.yaml")
        assert cfg["train"]["epochs"] == 2                      # after the run entry's 3
        assert cfg["adapt"]["optim"]["lr"] == cfg["train"]["optim"]["lr"]   # one draw, inherited
        lrs.append(cfg["train"]["optim"]["lr"])
        assert 1e-4 <= lrs[-1] <= 1e-2
        assert "#SBATCH --mem=2G" in (run_dir / "exp.sh").read_text()
        assert read(run_dir / "run.yaml")["sampled"] == {"trainer.train.optim.lr": lrs[-1]}
    assert lrs[0] != lrs[1]
    summary = read(out / "summary.yaml")
    assert summary["overrides"] == ["trainer.train.epochs=2", "sbatch.mem=2G",
                                    "trainer.train.optim.lr={sample: loguniform, from: [1e-4, 1e-2]}",
                                    "experiment.name=cli"]
    assert "trainer.train.epochs=2" in read(out / "run_000" / "env.yaml")["command"]
    # A rerun from exp_i.yaml keeps them: its config.yaml is the same, byte for byte.
    experiment(f"--experiment={out / 'run_001' / 'exp_1.yaml'}", "--dry-run", "--base-dir", str(tmp_path / "re"),
               cwd=tmp_path, check_rc=0)
    assert (tmp_path / "re" / "cli" / "run_000" / "config.yaml").read_text() == (out / "run_001" / "config.yaml").read_text()


def test_train_py_takes_overrides_checked_like_the_file(tmp_path):
    cfg_path = write(tmp_path / "run" / "config.yaml", yaml.safe_dump({**TINY_TRAINER, "comet": {"mode": "disabled"},
                                                                       "pipeline": ["train"]}))
    bad = train("--config", str(cfg_path), "train.optim.name=adamm")
    assert bad.returncode == 2
    assert "command line: train.optim.name: unknown optimizer 'adamm'. Fix: use one of: adam, adamw, sgd" in bad.stderr
    bad_key = train("--config", str(cfg_path), "train.epochz=1")
    assert bad_key.returncode == 2 and "command line: train.epochz: unknown key 'epochz'" in bad_key.stderr
    ok = train("--config", str(cfg_path), "train.epochs=1", "train.steps_per_epoch=2", "train.optim.lr=0.0031",
               timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "command-line overrides: train.epochs=1 train.steps_per_epoch=2 train.optim.lr=0.0031" in ok.stderr
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in lines if "lr" in m and m["stage"] == "train"]
    assert len(epochs) == 1 and epochs[0]["lr"] == 0.0031 and epochs[0]["step"] == 2


def test_a_train_override_follows_into_stages_that_inherited_it(tmp_path):
    from hypersal import config as config_mod, yamlio
    from hypersal.config import schema
    defaults = yamlio.load(schema.DEFAULTS_FILE)
    resolved = schema.inherit({**defaults, "train_catchup": {"optim": {"lr": 0.5}}})
    path = tmp_path / "config.yaml"
    yamlio.dump(resolved, path)                           # as experiment.py writes it: stages resolved
    cfg = config_mod.load(path, cli=["train.optim.lr=0.02", "adapt.optim.lr=0.03"])
    assert cfg.train.optim.lr == cfg.pretrain_one_task.optim.lr == 0.02
    assert cfg.train_catchup.optim.lr == 0.5              # its own value
    assert cfg.adapt.optim.lr == 0.03                     # the command line's own value for it


def copy_checkout(dest: Path) -> Path:
    """A git checkout of this repository's files as they are now (tracked and untracked)."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-C", str(dest), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], check=True)
    return dest


def test_queued_jobs_run_the_submitted_code_after_the_checkout_breaks(slurm, tmp_path):
    checkout = copy_checkout(tmp_path / "checkout")
    exp = exp_file(tmp_path, trainer={"train": {"epochs": 1, "steps_per_epoch": 2}}, runs=2)
    node = subprocess.run(["sinfo", "-h", "-o", "%N"], capture_output=True, text=True, check=True).stdout.split()[0]
    # Jobs that wait in the queue: the only node is drained until the checkout is broken.
    subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DRAIN", "Reason=hypersal-test"], check=True)
    try:
        run([PYTHON, str(checkout / "experiment.py"), f"--experiment={exp}"], cwd=tmp_path, check_rc=0)
        out = tmp_path / "out" / "sub"
        jobs = list(jobs_of(out).values())
        assert len(jobs) == 2 and all(squeue()[j][0] == "PENDING" for j in jobs)
        (checkout / "train.py").write_text("raise SystemExit('the edited checkout ran')\n")
        (checkout / "hypersal" / "__init__.py").write_text("raise ImportError('the edited checkout ran')\n")
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=True)
    wait_for(jobs, timeout=300)
    code = next((tmp_path / "out" / ".code").iterdir())
    for i in range(2):
        run_dir = out / f"run_00{i}"
        log = next(run_dir.glob("slurm-*.out")).read_text()
        assert json.loads((run_dir / "state.json").read_text())["state"] == "done", log
        assert f"code: {code}" in log and "the edited checkout ran" not in log
    status = run([PYTHON, str(code / "experiment.py"), "status", str(out)], check_rc=0).stdout
    assert "2 runs: 2 done" in status


OMNIGAN = """
experiment:
  name: omni
  base_dir: out
  exp_desc: written for omnigan's experiment.py
  config: trainer.yaml
  no_comet: true
  {dev_mode}
sbatch:
  cpu: 1
  mem: 1G
  duration: "0:20:00"
  partition: debug
runs:
  - comet:
      note: a first try
      tags: first try, omnigan
    trainer:
      train:
        optim:
          lr:
            sample: list
            from: [0.001, 0.01]
  - sbatch:
      gpu: 0
    trainer:
      train:
        batch_size: 2
"""


def omnigan_file(folder: Path, dev_mode: str = "") -> Path:
    write(folder / "trainer.yaml", yaml.safe_dump({**TINY_TRAINER, "train": {**TINY_TRAINER["train"], "epochs": 1,
                                                                            "steps_per_epoch": 2}}))
    return write(folder / "exp.yaml", OMNIGAN.format(dev_mode=dev_mode))


def test_omnigan_dev_mode_is_a_dry_run_and_old_keys_are_noted_once(tmp_path):
    exp = omnigan_file(tmp_path, dev_mode="dev_mode: true")
    proc = experiment(f"--experiment={exp}", cwd=tmp_path, check_rc=0)
    assert "experiment.dev_mode is set: a dry run" in proc.stderr and "dry run: nothing submitted" in proc.stderr
    assert proc.stderr.count("sbatch.cpu is omnigan's spelling, read as sbatch.cpus") == 1
    for old in ("sbatch.duration is omnigan's spelling, read as sbatch.time", "exp.yaml:24: sbatch.gpu is omnigan's",
                "experiment.no_comet is omnigan's spelling", "comet.tags as a string is omnigan's spelling"):
        assert old in proc.stderr, old
    assert (tmp_path / "out" / "omni" / "jobs.tsv").read_text() == ""
    # What the old keys became. (An omnigan file and template run on Slurm to the end in
    # test_omnigan_template.py; the files a dry run writes are the ones a submission writes.)
    out = tmp_path / "out" / "omni"
    for i in range(2):
        run_dir = out / f"run_00{i}"
        script = (run_dir / "exp.sh").read_text()
        assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --time=0:20:00" in script
        assert "#SBATCH --partition=debug" in script and "--gres" not in script
        assert read(run_dir / "config.yaml")["comet"]["mode"] == "disabled"
    assert read(out / "run_000" / "run.yaml")["comet"]["tags"] == ["first try", "omnigan"]
    assert read(out / "run_000" / "config.yaml")["train"]["optim"]["lr"] in (0.001, 0.01)
    assert read(out / "run_001" / "config.yaml")["train"]["batch_size"] == 2
