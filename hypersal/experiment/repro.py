"""What a run folder records about the code and the machine that made it."""
from __future__ import annotations

import getpass
import os
import platform
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from hypersal.experiment import secret

CODE_ROOT = Path(__file__).resolve().parents[2]   # the hypersal checkout
PACKAGES = ("torch", "torchvision", "numpy", "comet_ml", "jinja2", "pyyaml", "addict", "gitpython")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


@dataclass(frozen=True)
class GitState:
    commit: str          # "unknown" outside a git checkout
    dirty: bool
    diff: str            # `git diff HEAD` when dirty, less the changes of files that look like secrets
    untracked: tuple

    def hash_txt(self) -> str:
        return f"{self.commit}\n{'dirty' if self.dirty else 'clean'}\n"

    def patch(self) -> str:
        """diff.patch: the untracked files' names, then the diff."""
        untracked = "".join(f"# untracked: {p}\n" for p in self.untracked)
        return untracked + self.diff + ("\n" if self.diff else "")


def git_state(root: Path = CODE_ROOT) -> GitState:
    """Commit, dirty flag and diff of the code that runs. Never fails: a copy of the code
    outside git is recorded as 'unknown'."""
    try:
        import git
        repo = git.Repo(root, search_parent_directories=True)
        commit = repo.head.commit.hexsha
    except Exception:  # no git, no repo, no commit yet: record that, do not stop the sweep
        return GitState("unknown", False, "", ())
    diff = repo.git.diff("HEAD")
    untracked = tuple(repo.untracked_files)
    kept, _ = secret.filter_diff(diff)   # the snapshot leaves those files out; so does the diff
    return GitState(commit, bool(diff or untracked), kept, untracked)


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(argv: list[str]) -> dict:
    """A short record of where and how the sweep was made. Variables whose name looks like a
    secret (…KEY, …TOKEN, …) are never recorded, not even their names' values."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "cwd": os.getcwd(),
        "command": [sys.executable, str(CODE_ROOT / "experiment.py")] + list(argv),   # to type it again
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions(),
        "slurm": {k: v for k, v in os.environ.items()
                  if k.startswith("SLURM_") and not any(w in k.upper() for w in SECRET_WORDS)},
    }
