"""How many CPU threads a job may use (Slurm's allocation, or what the local executor asked for)."""
from __future__ import annotations

import os

import torch

from hypersal.data import synth


def job_cpus() -> int:
    """The CPUs this job may use: Slurm's allocation where there is one (its task plugin may
    not pin the process, so the affinity mask can show the whole node), or what the local
    executor was asked for (HYPERSAL_CPUS, the script's --cpus-per-task), else the affinity
    mask. More threads than that is slower, not faster: the demo's training takes 47 s with 2
    threads on a 2-core machine and 29 s with 1 (its batch prefetcher is a thread too)."""
    for name in ("SLURM_CPUS_PER_TASK", "HYPERSAL_CPUS"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return min(int(value), synth.cpu_count())
    return synth.cpu_count()


def use_job_cpus() -> int:
    """torch's thread pool sized to the job's CPUs: more threads than CPUs, on a node shared
    with other jobs, makes everyone slower."""
    n = job_cpus()
    torch.set_num_threads(n)
    return n


def worker_count(value) -> int:
    return job_cpus() if value == "auto" else max(1, int(value))
