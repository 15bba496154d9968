"""The code a sweep runs, frozen when it is submitted.

A job may wait in the queue for a day, or be requeued after a preemption; if it ran the
checkout's train.py, it would run whatever was edited since, and hash.txt would describe code
that never ran. So experiment.py copies the code into a content-addressed folder,

    <base_dir>/.code/<digest>/      train.py, hypersal/, shared/, templates/, ...

and every exp.sh runs `python <that folder>/train.py`: Python puts the script's folder first on
sys.path, so the snapshot's `hypersal` package is the one imported, not the checkout's. The
digest covers every file's path and content, so sweeps of identical code share one copy, and
a copy is made once per distinct code, not once per run.

What is copied: in a git checkout, its tracked files plus the untracked ones git does not
ignore (what `git status` would show; as submitit does); elsewhere the package, the entry
points and the shared/ and templates/ folders. Files over MAX_FILE_BYTES are data, not code:
they are left out, with a warning naming them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from hypersal.errors import UserError
from hypersal.experiment.repro import CODE_ROOT
from hypersal.log import say

FOLDER = ".code"
COMPLETE = ".complete"              # written last: a folder without it is not a snapshot yet
MAX_FILE_BYTES = 20 * 1024 * 1024
PLAIN_PARTS = ("train.py", "experiment.py", "setup.py", "pyproject.toml", "hypersal", "shared", "templates")


@dataclass(frozen=True)
class Snapshot:
    source: Path                     # the checkout the files come from
    files: tuple[str, ...]           # paths relative to it, sorted
    digest: str                      # 16 hex digits of the files' paths and contents

    def folder(self, base_dir: Path) -> Path:
        return Path(base_dir) / FOLDER / self.digest


def _git_files(root: Path) -> list[str] | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return [p for p in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if p]


def _plain_files(root: Path) -> list[str]:
    out = []
    for part in PLAIN_PARTS:
        path = root / part
        if path.is_file():
            out.append(part)
        elif path.is_dir():
            out += [str(p.relative_to(root)) for p in path.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return out


def collect(root: Path = CODE_ROOT) -> Snapshot:
    """The files train.py runs from, and their digest. Reads them all (a checkout of ~1 MB: ms)."""
    root = Path(root)
    names = _git_files(root)
    names = _plain_files(root) if names is None else names
    files, too_big = [], []
    digest = hashlib.sha256()
    for name in sorted(set(names)):
        path = root / name
        if not path.is_file():          # deleted but still tracked, or a link to a folder
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            too_big.append(name)
            continue
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
        files.append(name)
    if too_big:
        say(f"code snapshot: left out {len(too_big)} file(s) over {MAX_FILE_BYTES // 2**20} MB "
            f"(data, not code): {', '.join(too_big[:3])}{' ...' if len(too_big) > 3 else ''}")
    return Snapshot(root, tuple(files), digest.hexdigest()[:16])


def materialize(snapshot: Snapshot, base_dir: Path, **where) -> Path:
    """The snapshot's folder under base_dir, copied now unless an identical one is there. Copied
    into a temporary folder and renamed into place, so a crash or a second experiment.py racing
    for the same code never leaves (or uses) a half copy. `where` names the key for errors."""
    dest = snapshot.folder(base_dir)
    if (dest / COMPLETE).is_file():
        return dest
    tmp = dest.parent / f".tmp-{snapshot.digest}-{uuid.uuid4().hex[:8]}"
    try:
        for name in snapshot.files:
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(snapshot.source / name, target)
        (tmp / COMPLETE).write_text(f"{snapshot.source}\n", encoding="utf-8")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / COMPLETE).is_file():  # not a finished twin from a racing sweep
                shutil.rmtree(dest, ignore_errors=True)
                os.rename(tmp, dest)
    except OSError as e:
        raise UserError(f"cannot write the code snapshot in {dest.parent} ({e.strerror or e})",
                        fix="check the folder's permissions and free space, or pass --no-snapshot "
                            "to run the live checkout", **where) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
