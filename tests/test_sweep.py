"""Planning and writing sweeps (dry runs): files, layering, seeds, reruns, never clobbering."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from hypersal import yamlio
from hypersal.experiment import repro

from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment, experiment_here, write

RUN_FILES = {"config.yaml", "exp.sh", "run.yaml", "hash.txt", "comet_url.txt", "env.yaml"}


def sweep_file(folder: Path, seed: int | None = 0, mode: str = "jobs") -> Path:
    doc = {
        "experiment": {"name": "sw", "base_dir": "out", "mode": mode, "config": TINY_TRAINER},
        "sbatch": {"cpus": 1, "mem": "1G"},
        "runs": [
            {"repeat": 2, "comet": {"tags": ["a"], "note": "first"},
             "trainer": {"train": {"batch_size": {"sample": "grid", "from": [2, 4]},
                                   "optim": {"lr": {"sample": "loguniform", "from": [1e-4, 1e-2]}}}}},
            {"trainer": {"seed": {"sample": "randint", "from": [0, 1000]}, "notes": "second entry"}},
        ],
    }
    if seed is not None:
        doc["experiment"]["seed"] = seed
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def dry(exp: Path, *args: str, cwd: Path | None = None):
    proc = experiment_here(f"--experiment={exp}", "--dry-run", *args, cwd=cwd or exp.parent)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_dry_run_writes_every_file_and_submits_nothing(tmp_path):
    exp = sweep_file(tmp_path)
    proc = dry(exp)
    out = tmp_path / "out" / "sw"
    assert "wrote 5 runs to" in proc.stderr and "dry run: nothing submitted" in proc.stderr
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == [f"run_00{i}" for i in range(5)]
    for i, name in enumerate(runs):
        files = {p.name for p in (out / name).iterdir()}
        assert RUN_FILES | {f"exp_{i}.yaml"} <= files
    assert (out / "jobs.tsv").read_text() == ""
    summary = yaml.safe_load((out / "summary.yaml").read_text())
    assert summary["seed"] == 0 and len(summary["runs"]) == 5 and summary["mode"] == "jobs"


def test_layers_merge_defaults_config_and_run(tmp_path):
    dry(sweep_file(tmp_path))
    out = tmp_path / "out" / "sw"
    cfg = [yaml.safe_load((out / f"run_00{i}" / "config.yaml").read_text()) for i in range(5)]
    defaults = yaml.safe_load((ROOT / "shared" / "trainer" / "defaults.yaml").read_text())
    assert cfg[0]["train"]["epochs"] == 2                               # experiment config
    assert cfg[0]["train"]["optim"]["name"] == defaults["train"]["optim"]["name"]   # defaults
    assert [c["train"]["batch_size"] for c in cfg[:4]] == [2, 2, 4, 4]  # grid x repeat 2
    assert cfg[4]["notes"] == "second entry" and cfg[4]["train"]["batch_size"] == 4
    assert set(cfg[0]) == set(defaults)                                 # complete, nothing extra
    lrs = [c["train"]["optim"]["lr"] for c in cfg[:4]]
    assert len(set(lrs)) == 4 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    # Runs built from the same layers never share (and leak) nested values.
    assert cfg[4]["train"]["optim"]["lr"] == defaults["train"]["optim"]["lr"]


def test_rerun_from_exp_i_reproduces_config_byte_for_byte(tmp_path):
    dry(sweep_file(tmp_path))
    out = tmp_path / "out" / "sw"
    for i in range(5):
        proc = dry(out / f"run_00{i}" / f"exp_{i}.yaml", cwd=tmp_path)
        rerun = tmp_path / "out" / f"sw_{i + 1}"
        assert f"this experiment is sw_{i + 1}" in proc.stderr
        assert (rerun / "run_000" / "config.yaml").read_bytes() == (out / f"run_00{i}" / "config.yaml").read_bytes()
        text = (out / f"run_00{i}" / f"exp_{i}.yaml").read_text()
        frozen = yaml.safe_load(text)
        assert yamlio.dumps(frozen) == text        # written from config.yaml's text: the same YAML
        assert frozen["experiment"]["rerun_of"] == str(out / f"run_00{i}")
        assert "sample" not in (out / f"run_00{i}" / f"exp_{i}.yaml").read_text()


def test_same_seed_same_sweep_other_seed_other_draws(tmp_path):
    exp = sweep_file(tmp_path)
    dry(exp)
    dry(exp)
    dry(exp, "--seed", "1")
    out = tmp_path / "out"

    def configs(name):
        return [(out / name / f"run_00{i}" / "config.yaml").read_bytes() for i in range(5)]
    assert configs("sw") == configs("sw_1")
    assert configs("sw") != configs("sw_2")
    sampled = [yaml.safe_load((out / n / "summary.yaml").read_text())["runs"] for n in ("sw", "sw_1", "sw_2")]
    assert [r["sampled"] for r in sampled[0]] == [r["sampled"] for r in sampled[1]]
    assert [r["sampled"] for r in sampled[0]] != [r["sampled"] for r in sampled[2]]
    keys = [r["comet_key"] for r in sampled[0] + sampled[1]]
    assert len(set(keys)) == 10                                       # Comet keys never reused


def test_a_missing_seed_is_drawn_and_recorded(tmp_path):
    proc = dry(sweep_file(tmp_path, seed=None))
    summary = yaml.safe_load((tmp_path / "out" / "sw" / "summary.yaml").read_text())
    assert isinstance(summary["seed"], int) and f"(seed {summary['seed']}," in proc.stderr
    frozen = yaml.safe_load((tmp_path / "out" / "sw" / "run_000" / "exp_0.yaml").read_text())
    assert frozen["experiment"]["seed"] == summary["seed"]


def test_two_racing_calls_never_share_a_folder(tmp_path):
    exp = sweep_file(tmp_path)
    cmd = [PYTHON, str(ROOT / "experiment.py"), f"--experiment={exp}", "--dry-run"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    folders = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert folders == ["sw", "sw_1", "sw_2"]
    # They raced for the code snapshot too: one whole copy, no temporary left.
    snapshots = list((tmp_path / "out" / ".code").iterdir())
    assert len(snapshots) == 1 and (snapshots[0] / ".complete").is_file() and (snapshots[0] / "train.py").is_file()
    for name in folders:
        assert len(yaml.safe_load((tmp_path / "out" / name / "summary.yaml").read_text())["runs"]) == 5


def test_relative_paths_follow_the_file_and_variables_expand(tmp_path, monkeypatch):
    folder = tmp_path / "exps"
    write(folder / "shared.yaml", "data:\n  images_dir: ../data/images\n  maps_dir: $DATA_ROOT/maps\n")
    exp = write(folder / "e.yaml", """
        experiment: {name: p, base_dir: ~/../$RUNS_SUB, config: shared.yaml}
        runs: [{trainer: {data: {cache_dir: ./cache}}}]
        """)
    env = {"DATA_ROOT": str(tmp_path / "d"), "RUNS_SUB": "runs", "HOME": str(tmp_path / "home")}
    experiment(f"--experiment={exp}", "--dry-run", cwd=ROOT, env=env, check_rc=0)
    cfg = yaml.safe_load((tmp_path / "runs" / "p" / "run_000" / "config.yaml").read_text())
    assert cfg["data"]["images_dir"] == str(tmp_path / "data" / "images")   # against shared.yaml
    assert cfg["data"]["maps_dir"] == str(tmp_path / "d" / "maps")
    assert cfg["data"]["cache_dir"] == str(folder / "cache")                 # against e.yaml


def test_comet_url_and_keys_are_known_before_the_job(tmp_path):
    dry(sweep_file(tmp_path))
    run = tmp_path / "out" / "sw" / "run_002"
    key = yaml.safe_load((run / "run.yaml").read_text())["comet_key"]
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    assert (run / "comet_url.txt").read_text() == f"https://www.comet.com/hypersal-tests/hypersal/{key}\n"


def test_no_secret_reaches_a_run_folder(tmp_path):
    exp = sweep_file(tmp_path)
    secret = "s3" + "cr3t"   # never literally in the source: diff.patch may hold this file
    experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0,
               env={"COMET_API_KEY": f"{secret}-api-key", "SLURM_ACCESS_TOKEN": f"{secret}-token"})
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert secret not in text, path
    env = yaml.safe_load(next((tmp_path / "out").rglob("env.yaml")).read_text())
    assert env["command"] == [PYTHON, str(ROOT / "experiment.py"), f"--experiment={exp}", "--dry-run"]


def test_git_state_records_commit_dirty_flag_and_diff(tmp_path):
    repo = tmp_path / "code"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    write(repo / "a.py", "x = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    clean = repro.git_state(repo)
    assert len(clean.commit) == 40 and not clean.dirty and clean.hash_txt() == f"{clean.commit}\nclean\n"
    write(repo / "a.py", "x = 2\n")
    write(repo / "new.py", "")
    dirty = repro.git_state(repo)
    assert dirty.dirty and "+x = 2" in dirty.diff and dirty.untracked == ("new.py",)
    assert repro.git_state(tmp_path / "nowhere").commit == "unknown"


def test_array_mode_writes_one_array_script(tmp_path):
    dry(sweep_file(tmp_path, mode="array"), "--parallelism", "2")
    text = (tmp_path / "out" / "sw" / "array.sh").read_text()
    assert "#SBATCH --array=0-4%2" in text and "--sweep" in text
    assert f"#SBATCH --output={tmp_path}/out/sw/run_%3a/slurm-%A_%a.out" in text


def test_run_folder_names_widen_past_999(tmp_path):
    from hypersal.experiment.plan import Plan
    plan = Plan(spec=None, seed=0, template=None, runs=[None] * 1001)
    assert plan.run_dir_name(0) == "run_0000" and plan.run_dir_name(1000) == "run_1000"


@pytest.mark.parametrize("indices, parallelism, expected", [
    ([0, 1, 2, 3], None, "0-3"), ([2, 5, 6, 7, 9], 3, "2,5-7,9%3"), ([4], None, "4")])
def test_array_spec(indices, parallelism, expected):
    from hypersal.experiment.plan import array_spec
    assert array_spec(indices, parallelism) == expected


def test_comet_url_uses_the_settings_comet_ml_reads(tmp_path):
    """comet_url.txt's workspace and server come from where comet_ml itself looks (read without
    importing it); comet_ml, asked in the same place, must agree."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir(), here.mkdir()
    (home / ".comet.config").write_text("[comet]\nworkspace = home-ws\nurl_override = https://comet.example.org/clientlib/\n")
    (here / ".comet.config").write_text("[comet]\nworkspace = here-ws\n")
    exp = sweep_file(here)
    doc = yaml.safe_load(exp.read_text())
    doc["experiment"]["config"]["comet"] = {"mode": "disabled"}     # no workspace of its own
    exp.write_text(yaml.safe_dump(doc))
    ask = ["-c", "from comet_ml.config import get_config; c = get_config(); "
                 "print(c['comet.workspace'], c['comet.url_override'])"]
    for env, workspace in (({"HOME": str(home)}, "here-ws"),
                           ({"HOME": str(home), "COMET_WORKSPACE": "env-ws"}, "env-ws")):
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("COMET_")}, **env}
        out = tmp_path / workspace
        subprocess.run([PYTHON, str(ROOT / "experiment.py"), f"--experiment={exp}", "--dry-run", "--base-dir",
                        str(out)], cwd=here, env=env, check=True, capture_output=True)
        url = (out / "sw" / "run_000" / "comet_url.txt").read_text()
        assert url.startswith(f"https://comet.example.org/{workspace}/hypersal/"), url
        comet = subprocess.run([PYTHON, *ask], cwd=here, env=env, capture_output=True, text=True, timeout=120)
        assert comet.stdout.split() == [workspace, "https://comet.example.org/clientlib/"], comet.stderr


def test_a_large_sweep_is_written_by_several_processes_completely(tmp_path):
    """From 200 runs on, run folders are written by forked processes: every folder, every
    file, each run its own values (the serial path is what the smaller tests above check)."""
    doc = {"experiment": {"name": "big", "base_dir": "out", "seed": 3, "config": TINY_TRAINER},
           "runs": [{"repeat": 240, "trainer": {"train": {"optim": {"lr": {"sample": "uniform", "from": [0.1, 0.2]}}}}}]}
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(doc))
    # Its own process, as a user's: the writers are forked, and experiment.py never holds torch
    # or threads (this test process does).
    experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    out = tmp_path / "out" / "big"
    summary = yaml.safe_load((out / "summary.yaml").read_text())
    def load(text):
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

    assert len(summary["runs"]) == 240
    for run in summary["runs"]:
        folder = out / run["dir"]
        assert RUN_FILES | {f"exp_{run['index']}.yaml"} <= {p.name for p in folder.iterdir()}, folder
        config = load((folder / "config.yaml").read_text())
        assert config["train"]["optim"]["lr"] == run["sampled"]["trainer.train.optim.lr"]
        assert load((folder / f"exp_{run['index']}.yaml").read_text())["runs"][0]["trainer"] == config
        assert load((folder / "run.yaml").read_text())["comet_key"] == run["comet_key"]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "shared" / "experiment").glob("*.yaml")))
def test_every_shipped_experiment_file_passes_the_login_node_checks(tmp_path, name):
    proc = experiment_here(f"--experiment={ROOT / 'shared' / 'experiment' / name}", "--dry-run", "--base-dir",
                           str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dry run: nothing submitted" in proc.stderr
