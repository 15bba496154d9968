"""Where the test suite's CPU goes: every Python process it starts (pytest's own, train.py,
workers, Slurm jobs, experiment.py) records its CPU-seconds, wall seconds, command and the test
that started it; the script then sums them by test and by command.

    python bench/suite_cpu.py [--out /tmp/hypersal-suite-cpu.jsonl] [-- PYTEST ARGS...]

Runs `python -m pytest PYTEST ARGS` (the README's test command when none are given) with a
sitecustomize that appends one JSON line per process at its exit (PYTHONPATH; a test that sets
its own sitecustomize replaces it, and a process ended by SIGKILL or os._exit, such as a worker's
forked run, writes none: their CPU shows in the machine's total only). The test is the
PYTEST_CURRENT_TEST that pytest-xdist's process sets and every child inherits. Prints the
machine's busy CPU-seconds (/proc/stat) beside the processes' sum, then the tables.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = '''
import atexit, json, os, resource, sys, time
_t0 = time.monotonic()

def _record():
    r = resource.getrusage(resource.RUSAGE_SELF)
    rec = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0], "argv": sys.argv[:3],
           "cpu": round(r.ru_utime + r.ru_stime, 3), "wall": round(time.monotonic() - _t0, 3)}
    try:
        with open(os.environ["HYPERSAL_SUITE_CPU_LOG"], "a") as f:
            f.write(json.dumps(rec) + "\\n")
    except (OSError, KeyError):
        pass

atexit.register(_record)
'''


def busy_seconds() -> float:
    """The machine's busy CPU-seconds so far (user, nice, system, irq, softirq, steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def command(argv: list[str]) -> str:
    """'train.py --config', 'experiment.py status', ...: the script's name and its first argument."""
    if argv and argv[0].endswith(("pytest/__main__.py", "pytest")):
        return "pytest"
    if argv and argv[0] == "-c":
        return "python -c (an xdist process, or a test's script)"
    names = [Path(a).name for a in argv[:2]]
    return " ".join(n if not n.endswith((".yaml", ".yml")) else "FILE.yaml" for n in names)


def table(rows: dict[str, list[float]], top: int) -> list[str]:
    out = [f"{'CPU s':>8} {'procs':>6}  what"]
    for what, (n, cpu) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:top]:
        out.append(f"{cpu:8.1f} {int(n):6d}  {what}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "hypersal-suite-cpu.jsonl",
                   help="one line per process (outside the checkout: the suite copies and lists it)")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    extra = [a for a in args.pytest_args if a != "--"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as site:
        Path(site, "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = {**os.environ, "HYPERSAL_SUITE_CPU_LOG": str(args.out),
               "PYTHONPATH": os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))}
        busy, t0 = busy_seconds(), time.monotonic()
        rc = subprocess.run([sys.executable, "-m", "pytest", *extra], cwd=ROOT, env=env).returncode
        busy, wall = busy_seconds() - busy, time.monotonic() - t0
    records = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    by_test, by_command = collections.defaultdict(lambda: [0, 0.0]), collections.defaultdict(lambda: [0, 0.0])
    for r in records:
        for rows, key in ((by_test, r["test"] or "(no test: pytest itself)"), (by_command, command(r["argv"]))):
            rows[key][0] += 1
            rows[key][1] += r["cpu"]
    total = sum(r["cpu"] for r in records)
    print(f"\nsuite: {wall:.0f} s wall, the machine busy {busy:.0f} CPU-seconds of {wall * os.cpu_count():.0f}; "
          f"{len(records)} Python processes recorded {total:.0f} CPU-seconds (pytest exit {rc})")
    print("\nby command:", *table(by_command, args.top), sep="\n")
    print("\nby test:", *table(by_test, args.top), sep="\n")
    print(f"\nevery process: {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
