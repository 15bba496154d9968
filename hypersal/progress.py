"""A progress line for long work: count, rate and ETA on stderr.

On a terminal it redraws one line; in a log file (a Slurm job) it writes a line every
`every_s` seconds instead, so logs stay readable.
"""
from __future__ import annotations

import sys
import time


def fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", every_s: float = 10.0, stream=None):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.count = 0
        self.start = self.last = time.perf_counter()

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        eta = (self.total - self.count) / rate if rate > 0 else 0
        return (f"{self.desc}: {self.count}/{self.total} [{rate:.1f} {self.unit}/s, "
                f"elapsed {fmt_duration(time.perf_counter() - self.start)}, ETA {fmt_duration(eta)}]")

    def update(self, n: int = 1, extra: str = "") -> None:
        self.count += n
        now = time.perf_counter()
        done = self.count >= self.total
        if self.tty:
            self.stream.write("\r" + self.line() + extra + ("\n" if done else ""))
            self.stream.flush()
        elif done or now - self.last >= self.every_s:
            self.stream.write(self.line() + extra + "\n")
            self.stream.flush()
            self.last = now
