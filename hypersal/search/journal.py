"""The study journal of an adaptive sweep (search/study.journal: Optuna's JournalStorage in a
file, one JSON entry per line, appended under a lock), kept readable whatever happens to a writer.

A job killed while appending (or a disk filling up) leaves its last line cut short. Optuna skips
such a line when it reads, silently, and the next append glues its entry onto it: from then on
the study cannot be read at all. So here:
- every append first looks at the end of the file, under the journal's lock: a cut last line is
  moved to study.journal.torn and removed (an entry that lacks only its newline gets it back),
  with a warning; an append that fails half way (a full disk) takes its bytes back;
- opening the study checks every line first: a damaged line that is not the last is an error
  naming the file, the line and the fix (replaying past it could renumber the trials);
- `view` reads the study without writing anything (status, collect, report): the file is read
  once, checked, and served from memory; a missing journal is an error, never a new empty study.
"""
from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from hypersal.errors import UserError
from hypersal.log import warn

TORN = ".torn"
OPS = 11            # Optuna's JournalOperation codes are 0 .. 10
# what a cut entry was about, by its op code (optuna.storages.journal._storage.JournalOperation)
WHAT = {4: "a new trial", 5: "a value drawn for trial {t}", 6: "trial {t}'s state and value",
        7: "a value reported by trial {t}", 8: "an attribute of trial {t}", 9: "an attribute of trial {t}"}
MID_FIX = ("keep a copy of the file, then restore it from a backup; or, if that line holds a cut entry followed by "
           "a whole one (`{\"op_code\"` twice), delete the cut part only, up to the second `{\"op_code\"`. "
           "Deleting a whole entry can renumber every trial after it")


@dataclass
class Scan:
    path: Path
    entries: list[dict]     # every whole entry, in order
    end: int                # the byte where the whole entries end
    tail: bytes             # a last line without its newline (b"" if none)
    whole_tail: bool = False  # that line is a whole entry (in `entries`): only its newline is missing


def _entry(raw: bytes) -> tuple[dict | None, str]:
    """(the entry, "") or (None, what is wrong with the line)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"byte {e.start + 1} of the line is not UTF-8"
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg.removesuffix(' starting at').lower()} at column {e.colno})"
    code = entry.get("op_code") if isinstance(entry, dict) else None
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code < OPS:
        return None, "not an Optuna journal entry: no op_code"
    return entry, ""


def scan(path: Path) -> Scan:
    """Every whole entry of the journal; a damaged line before the last one is a UserError."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()
    entries = []
    for number, raw in enumerate(lines, 1):
        entry, why = _entry(raw)
        if entry is None:
            raise _damaged(path, number, why)
        entries.append(entry)
    last, _ = _entry(tail) if tail else (None, "")
    if last is not None:     # whole, only its newline missing (cut just before it): it counts
        return Scan(path, entries + [last], len(data), tail, whole_tail=True)
    if tail and not _cut_entry(tail):
        raise UserError("the last line of the study's journal is not an entry, nor the start of one (what a cut "
                        "write leaves)", file=path, line=len(lines) + 1,
                        fix="keep a copy of the file, then delete that line: the entries before it are whole")
    return Scan(path, entries, len(data) - len(tail), tail)


def _damaged(path: Path, line: int, why: str) -> UserError:
    return UserError(f"a damaged entry in the study's journal ({why}): the study cannot be read past it",
                     file=path, line=line, fix=MID_FIX)


def _cut_entry(tail: bytes) -> bool:
    """Whether a line without its newline is the start of an entry (what a cut write leaves),
    not garbage: Optuna writes every entry as {"op_code":..."""
    head = b'{"op_code":'
    return tail.startswith(head) or head.startswith(tail)


def about(tail: bytes) -> str:
    """What a cut entry was, as far as its first bytes tell."""
    code, trial = re.search(rb'"op_code":\s*(\d+)', tail), re.search(rb'"trial_id":\s*(\d+)', tail)
    what = WHAT.get(int(code.group(1))) if code else None
    if what is None or ("{t}" in what and trial is None):
        return "an entry"
    return what.format(t=int(trial.group(1)) if trial else "?")


def repair_tail(path: Path) -> None:
    """Make the journal end with a whole line before anything is appended (call it holding the
    journal's lock): a last line cut short is moved to <journal>.torn; one that lacks only its
    newline gets it."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        start = _last_line_start(f, size)
        if start == size:
            return
        f.seek(start)
        tail = f.read()
        line = _count_lines(f, start) + 1
        if _entry(tail)[0] is not None:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            with open(str(path) + TORN, "ab") as torn:
                torn.write(tail + b"\n")
                torn.flush()
                os.fsync(torn.fileno())
            f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    if _entry(tail)[0] is not None:
        warn(f"{path}: its last line (line {line}) lacked its newline: added it (the entry is whole)")
        return
    warn(f"{path}: its last line (line {line}: {about(tail)}) was cut short by a writer that died (killed, or the "
         f"disk full): moved it to {path.name}{TORN} ({len(tail)} bytes); the {line - 1} entries before it are intact")


def _last_line_start(f, size: int) -> int:
    """The offset just after the file's last newline (0 if it has none)."""
    pos = size
    while pos > 0:
        step = min(65536, pos)
        f.seek(pos - step)
        found = f.read(step).rfind(b"\n")
        if found >= 0:
            return pos - step + found + 1
        pos -= step
    return 0


def _count_lines(f, end: int) -> int:
    f.seek(0)
    count, left = 0, end
    while left > 0:
        block = f.read(min(1 << 20, left))
        count += block.count(b"\n")
        left -= len(block)
    return count


def check(path: Path, *, missing_fix: str, reading: bool = True) -> Scan:
    """The journal read and checked, for opening it: missing, empty or damaged in the middle is
    a UserError; a torn last line is reported (and left to the next append to repair). Read
    again briefly when the last line looks torn: a writer may be appending it right now."""
    if not path.is_file():
        raise UserError("the search's study journal is missing", file=path, fix=missing_fix)
    found = scan(path)
    for _ in range(5):
        if not found.tail:
            break
        time.sleep(0.1)
        again = scan(path)
        if again.end == found.end and again.tail == found.tail:
            break
        found = again
    if found.whole_tail and reading:
        warn(f"{path}: its last entry lacks its newline (cut just before it): read as whole; the next job to write "
             "to the study adds it")
    elif found.tail and reading:    # a writer repairs it at once instead, and says so
        line = len(found.entries) + 1
        warn(f"{path}: its last line (line {line}: {about(found.tail)}) is cut short (a writer killed, or the disk "
             f"full, while writing it): the study is read up to line {line - 1}; the next job to write to it moves "
             f"the cut line to {path.name}{TORN}")
    if not found.entries:
        raise UserError("the study's journal holds no study (it is empty)", file=path, fix=missing_fix)
    return found


def writer(path: Path):
    """A JournalFileBackend whose appends repair a torn end first and never leave half an entry
    (its class made on first use: optuna is imported only for searches). `.lock` is the journal's
    lock, Optuna's own kind (a symbolic link beside the file), so other Optuna writers respect it."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    class SafeJournalFile(JournalFileBackend):
        def __init__(self, file_path: str):
            self.lock = JournalFileSymlinkLock(file_path)
            super().__init__(file_path, lock_obj=self.lock)

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
            with locked(self.lock):
                repair_tail(Path(self._file_path))
                append_whole(Path(self._file_path), data)
    return SafeJournalFile(str(path))


@contextmanager
def locked(lock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def append_whole(path: Path, data: bytes) -> None:
    """Append `data` and fsync; a write that fails half way (the disk full) is taken back, so
    the file never ends in half an entry while its writer lives. Unbuffered: nothing is left to
    be flushed after the take-back."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def read_only(found: Scan):
    """A JournalStorage over the checked entries, in memory: reading it writes nothing."""
    from optuna.storages.journal import BaseJournalBackend, JournalStorage

    class ReadOnlyJournal(BaseJournalBackend):
        def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
            yield from found.entries[log_number_from:]

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            raise UserError("this view of the study is read-only", file=found.path,
                            fix="open it with hypersal.search.load(DIR) to change it")

    return replay(found, lambda: JournalStorage(ReadOnlyJournal()))


def replay(found: Scan, make):
    """make(), or a UserError naming the first entry Optuna cannot replay (found by
    bisection: a prefix that fails makes every longer one fail)."""
    try:
        return make()
    except UserError:
        raise
    except Exception as e:
        first = _first_bad(found)
        raise UserError(f"the study cannot be replayed: {e.__class__.__name__}: {e}"
                        + (f" (from line {first})" if first else ""), file=found.path, line=first,
                        fix=MID_FIX) from None


def _first_bad(found: Scan) -> int | None:
    from optuna.storages.journal import BaseJournalBackend, JournalStorage

    class Prefix(BaseJournalBackend):
        def __init__(self, n: int):
            self.n = n

        def read_logs(self, log_number_from: int):
            yield from found.entries[log_number_from:self.n]

        def append_logs(self, logs):
            raise RuntimeError("read-only")

    def fails(n: int) -> bool:
        try:
            JournalStorage(Prefix(n))
            return False
        except Exception:
            return True
    lo, hi = 1, len(found.entries)
    if not fails(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fails(mid) else (mid + 1, hi)
    return lo
