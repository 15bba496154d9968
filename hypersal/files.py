"""Writing files whole or not at all, and holding a lock file."""
from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


def probe_writable(folder: Path | str) -> None:
    """Write and delete a small file in `folder`; raises OSError where it cannot take one
    (read-only, full, missing). The name is per process: processes probing one folder at once
    (the ranks of a DDP run) must not delete each other's probe."""
    probe = Path(folder) / f".hypersal-write-test-{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()


_UMASK = os.umask(0o022)   # the process umask: reading it means setting it, so it is put back at once
os.umask(_UMASK)


def write_atomic(path: Path | str, write: Callable[[BinaryIO], None]) -> None:
    """write(file) into a temporary file beside `path`, fsync, then rename over `path`: a crash
    or a full disk never leaves a half file, and a failed write frees its space at once (the
    file object is ours, so it is closed)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)   # as open() would make it (mkstemp's 0600 hides it from colleagues)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lock_beside(path: Path) -> Path:
    """The lock file for making `path`: in a `.locks` folder beside it (made if missing), so that a
    folder of cache entries or datasets holds only them."""
    folder = path.parent / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{path.name}.lock"


NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)     # a file system without flock


@contextmanager
def exclusive(path: Path | str, required: bool = True) -> Iterator[None]:
    """fcntl.flock(LOCK_EX) on `path` (made if missing) for the body: it waits its turn, and the
    lock is released when the body ends, however this process ends (the kernel drops it).
    `required=False`: where the file system refuses locks (an NFS mount without a lock manager:
    ENOLCK; one that has no flock: EOPNOTSUPP, ENOSYS), the body runs unlocked, for locks that
    only save work. Any other error is raised."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if required or e.errno not in NO_LOCKS:
                raise
        yield
    finally:
        os.close(fd)
