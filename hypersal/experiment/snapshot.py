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
points and the shared/ and templates/ folders. Of those, regular files only, read without
following a link, and never one that looks like a secret (hypersal.experiment.secret: `.env`, a
`.comet.config`, keys, a file assigning a token): the base folder is often shared with a group.
A symbolic link that stays inside the checkout stays a link (relative, to the snapshot's own
file); one that leads out of it (to /etc/passwd, ~/.comet.config, /proc/self/environ) is left
out. Files over MAX_FILE_BYTES are data, not code: left out too. Every file left out is named
in a warning. A snapshot over `experiment.snapshot_max_mb` (default 50) is refused, naming its
largest files: data belongs out of the checkout, or in .gitignore.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from hypersal.errors import UserError
from hypersal.experiment import secret
from hypersal.experiment.repro import CODE_ROOT
from hypersal.log import say

FOLDER = ".code"
COMPLETE = ".complete"              # written last: a folder without it is not a snapshot yet
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_MB = 50                         # experiment.snapshot_max_mb's default
PLAIN_PARTS = ("train.py", "experiment.py", "setup.py", "pyproject.toml", "hypersal", "shared", "templates")
NAMED = 20                          # files a warning names before "and N more"


@dataclass(frozen=True)
class Snapshot:
    source: Path                     # the checkout the files come from
    files: tuple[str, ...]           # paths relative to it, sorted
    digest: str                      # 16 hex digits of the files' paths and contents (and links')
    links: tuple[tuple[str, str], ...] = ()   # (path, relative target) of the links kept

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
        if path.is_file() or path.is_symlink():
            out.append(part)
        elif path.is_dir():
            for folder, dirs, names in os.walk(path):     # does not enter linked folders
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                rel = Path(folder).relative_to(root)
                out += [str(rel / n) for n in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]
                        if not n.endswith(".pyc")]
    return out


def _read(path: Path) -> tuple[bytes, int] | None:
    """(content, mode) of a regular file, opened without following a link (a file swapped for a
    link since it was listed is not read through it); None for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        return (f.read(), st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _link_target(root: Path, name: str) -> str | None:
    """A link's target relative to its own folder when it resolves inside the checkout (the
    snapshot keeps it as a link to its own copy), else None."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(root / name)
    if os.path.commonpath([real_root, target]) != real_root:
        return None
    return os.path.relpath(target, os.path.join(real_root, os.path.dirname(name)))   # its folder has no link


def _named(items: list[str]) -> str:
    more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
    return ", ".join(items[:NAMED]) + more


def _warn(left: dict[str, list[str]]) -> None:
    reasons = {"outside": "link(s) that lead out of the checkout (not followed)",
               "secret": "file(s) that look like secrets (never copied: the base folder may be shared)",
               "big": f"file(s) over {MAX_FILE_BYTES // 2**20} MB (data, not code)",
               "other": "file(s) that are not regular files"}
    for kind, items in left.items():
        if items:
            say(f"code snapshot: left out {len(items)} {reasons[kind]}: {_named(items)}")


def collect(root: Path = CODE_ROOT, max_mb: float = MAX_MB) -> Snapshot:
    """The files train.py runs from, and their digest. Reads them all (a checkout of ~2 MB: ms).
    A snapshot over max_mb is a UserError naming its largest files."""
    root = Path(root)
    names = _git_files(root)
    names = _plain_files(root) if names is None else names
    real_root = os.path.realpath(root)
    files, links, sizes = [], [], {}
    left: dict[str, list[str]] = {"outside": [], "secret": [], "big": [], "other": []}
    digest = hashlib.sha256()
    for name in sorted(set(names)):
        path = root / name
        if not os.path.lexists(path):          # deleted but still tracked
            continue
        if secret.by_name(name):
            left["secret"].append(name)
        elif os.path.realpath(path.parent) != os.path.join(real_root, os.path.dirname(name)).rstrip("/"):
            left["outside"].append(f"{name} (inside a linked folder)")
        elif path.is_symlink():
            target = _link_target(root, name)
            if target is None:
                left["outside"].append(f"{name} -> {os.readlink(path)}")
            elif secret.by_name(target):
                left["secret"].append(f"{name} -> {target}")
            else:
                digest.update(f"{name}\0link\0{target}\0".encode("utf-8", "surrogateescape"))
                links.append((name, target))
        elif (read := _read(path)) is None:
            left["other"].append(name)
        elif len(read[0]) > MAX_FILE_BYTES:
            left["big"].append(name)
        elif (why := secret.reason(name, read[0])) is not None:
            left["secret"].append(f"{name} ({why})")
        else:
            digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
            digest.update(hashlib.sha256(read[0]).digest())
            digest.update(b"x" if read[1] & stat.S_IXUSR else b"-")
            files.append(name)
            sizes[name] = len(read[0])
    _warn(left)
    _check_size(root, sizes, max_mb)
    return Snapshot(root, tuple(files), digest.hexdigest()[:16], tuple(links))


def _check_size(root: Path, sizes: dict[str, int], max_mb: float) -> None:
    total = sum(sizes.values())
    if total <= max_mb * 2**20:
        return
    largest = sorted(sizes, key=lambda n: -sizes[n])[:5]
    raise UserError(
        f"the code snapshot of {root} would be {total / 2**20:.1f} MB, more than experiment.snapshot_max_mb "
        f"({max_mb:g} MB); its largest files: {', '.join(f'{n} ({sizes[n] / 2**20:.1f} MB)' for n in largest)}",
        fix="data is not code: move those files out of the checkout or add them to .gitignore; or raise "
            "experiment.snapshot_max_mb (e.g. experiment.snapshot_max_mb=200 on the command line), or pass "
            "--no-snapshot to run the live checkout")


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
            _copy(snapshot.source / name, tmp / name)
        for name, target in snapshot.links:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, tmp / name)
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


def _copy(source: Path, target: Path) -> None:
    """A regular file's bytes and mode, never through a link (see _read)."""
    read = _read(source)
    if read is None:
        raise OSError(f"{source} is no longer a regular file")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(read[0])
    os.chmod(target, stat.S_IMODE(read[1]))
