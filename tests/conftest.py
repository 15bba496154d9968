"""Shared fixtures: an isolated cache, the CLIs as a user runs them, and the local Slurm cluster."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# A trainer config small enough for a test: a few steps on a tiny generated dataset.
TINY_TRAINER = {
    "data": {"size": [32, 32], "synth": {"n": 20, "size": [48, 64]}, "workers": 1},
    "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "val_batches": 1,
              "val_batch_size": 4, "actions": []},
    "model": {"encoder": {"cutoff": 7}, "hypernet": {"hidden": [16], "chunk_size": 1024}},
    "comet": {"mode": "offline", "workspace": "hypersal-tests"},
}


@pytest.fixture(autouse=True, scope="session")
def isolated_env(tmp_path_factory):
    """Caches in a temporary folder, no Comet key from the developer's machine."""
    cache = tmp_path_factory.mktemp("hypersal-cache")
    old = dict(os.environ)
    os.environ["HYPERSAL_CACHE"] = str(cache)
    for key in [k for k in os.environ if k.startswith("COMET_")]:
        del os.environ[key]
    os.environ["COMET_DISABLE_AUTO_LOGGING"] = "1"
    yield cache
    os.environ.clear()
    os.environ.update(old)


def run(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 300,
        check_rc: int | None = None) -> subprocess.CompletedProcess:
    """A command as a user would type it; stdout and stderr captured as text."""
    proc = subprocess.run(args, cwd=cwd or ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    if check_rc is not None and proc.returncode != check_rc:
        raise AssertionError(f"{args} exited {proc.returncode}, expected {check_rc}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def experiment(*args: str, **kw) -> subprocess.CompletedProcess:
    return run([PYTHON, str(ROOT / "experiment.py"), *args], **kw)


def train(*args: str, **kw) -> subprocess.CompletedProcess:
    return run([PYTHON, str(ROOT / "train.py"), *args], **kw)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def slurm_ready() -> tuple[bool, str]:
    if not shutil.which("sbatch"):
        return False, "sbatch is not installed"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        return False, f"sinfo failed: {proc.stderr.strip()}"
    if not any(s in proc.stdout for s in ("idle", "mixed", "allocated")):
        return False, f"no usable node (sinfo says {proc.stdout.strip()!r})"
    return True, ""


def queue_is_free() -> tuple[bool, str]:
    """Jobs already queued (a sweep of someone's) would hold every test job back for hours:
    say so at once rather than time out test after test."""
    proc = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=20)
    jobs = proc.stdout.split("\n")[:-1] if proc.returncode == 0 else []
    if jobs:
        return False, (f"its queue holds {len(jobs)} job(s) that are not the tests' (first: {jobs[0]}); "
                       "wait for them, scancel them, or start an empty cluster with: "
                       "scripts/local-slurm.sh start --fresh")
    return True, ""


@pytest.fixture(scope="session")
def demo(slurm, tmp_path_factory):
    """The real demo sweep (shared/experiment/demo.yaml) on the local Slurm cluster, submitted
    once for the session and followed by `status --watch 2` from its submission until it ends by
    itself: (its folder, what watch printed, seconds it took). test_report and test_runs read it."""
    import time
    base = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    proc = experiment(f"--experiment={ROOT / 'shared' / 'experiment' / 'demo.yaml'}", "--base-dir", str(base))
    assert proc.returncode == 0, proc.stderr
    exp = base / "demo"
    watch = experiment("status", str(exp), "--watch", "2", timeout=600)
    assert watch.returncode == 0, watch.stderr
    return exp, watch.stdout, time.monotonic() - started


@pytest.fixture(scope="session")
def slurm():
    """The local Slurm cluster. Skips (with the reason) where none runs or its queue is taken,
    unless HYPERSAL_REQUIRE_SLURM=1 (CI), where that is a failure."""
    conf = Path("/tmp/hypersal-slurm/slurm.conf")
    if "SLURM_CONF" not in os.environ and conf.exists():
        os.environ["SLURM_CONF"] = str(conf)
    ok, why = slurm_ready()
    if not ok:
        why += "; start one with: scripts/local-slurm.sh start"
    else:
        ok, why = queue_is_free()
    if not ok:
        message = f"no usable Slurm cluster: {why}"
        if os.environ.get("HYPERSAL_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return os.environ.get("SLURM_CONF")
