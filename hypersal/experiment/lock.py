"""One submitter at a time per experiment folder: `submit`, `resume` and a sweep's own first
submission hold <exp_dir>/submit.lock (fcntl.flock) while they decide what to start and, with the
local executor, while its runs train. A second one does not wait: it stops at once (exit status 2)
naming the folder and the holder, since two would start the same runs twice.

The kernel drops the lock when its holder ends, however it ends (even SIGKILL), so a stale lock
file blocks nobody. The runs' processes do not inherit it (Python opens files non-inheritable):
a run still training after its submitter was killed is recognised by its state.json instead
(hypersal.runfolder.running_here)."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hypersal.errors import UserError

LOCK = "submit.lock"


@contextmanager
def submitting(exp_dir: Path) -> Iterator[None]:
    path = Path(exp_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise UserError(f"cannot create the submission lock ({e.strerror or e})", file=path,
                        fix="check that you can write in the experiment folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another experiment.py is submitting or running this experiment's runs "
                            f"({_holder(fd)}): starting them too would train them twice", file=exp_dir,
                            fix="wait for it to end (`experiment.py status DIR` shows its runs), or stop it "
                                "first; then submit again: only what it left undone is started") from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)   # still ours: nobody reads a holder that has gone
    finally:
        os.close(fd)              # releases the lock


def _holder(fd: int) -> str:
    """Who holds the lock, in words, from what it wrote in the file."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "its pid is not written yet"
