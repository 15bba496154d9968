"""The command-line tools as a user types them, and the small trainer config every test starts from."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# A trainer config small enough for a test: a few steps on a tiny generated dataset.
TINY_TRAINER = {
    "data": {"size": [32, 32], "synth": {"n": 20, "size": [48, 64]}, "workers": 1},
    "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "val_batches": 1,
              "val_batch_size": 4, "actions": []},
    "model": {"encoder": {"cutoff": 7}, "hypernet": {"hidden": [16], "chunk_size": 1024}},
    "comet": {"mode": "offline", "workspace": "hypersal-tests"},
}



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


def experiment_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """experiment.py as a user types it, but in this process: the same argv, exit status, stdout
    and stderr, without the ~0.4 s of a Python start and its imports (for the login-node checks,
    run by the dozen). Commands that submit or train go through `experiment` instead."""
    from hypersal.experiment import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd or ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as e:          # --help, and argparse's own errors
            rc = e.code if isinstance(e.code, int) else 1
        finally:                         # a logging handler made meanwhile (optuna's) keeps the real stream
            for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
                for handler in getattr(logger, "handlers", []):
                    if vars(handler).get("stream") in (out, err):     # bound when made, not looked up
                        handler.setStream(sys.__stderr__)
    return subprocess.CompletedProcess(["experiment.py", *map(str, args)], rc, out.getvalue(), err.getvalue())


def train(*args: str, **kw) -> subprocess.CompletedProcess:
    return run([PYTHON, str(ROOT / "train.py"), *args], **kw)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path
