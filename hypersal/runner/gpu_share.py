"""The GPU a worker's slots share: each run at once gets its part of it.

A worker with P slots (`experiment.runs_per_worker: P`, `train.py --worker --slots P`) runs P runs
at once on its one allocation. On a GPU, each run then:
- caps its memory at 1/P of the device (`torch.cuda.set_per_process_memory_fraction`), so that
  one run's caching allocator cannot take the memory the others need: the worker tells each
  child its share in HYPERSAL_GPU_SHARE, and the run applies it when it picks its device;
- where the cluster runs NVIDIA MPS (the job's environment names CUDA_MPS_PIPE_DIRECTORY),
  also gets 1/P of the GPU's compute units (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, which CUDA reads
  when the process first touches the GPU: the worker sets it in the child, before any CUDA call).
  A percentage the job sets itself is kept. Without MPS the runs time-share the GPU as CUDA does.
Nothing changes on the CPU, or with one slot.
"""
from __future__ import annotations

import os

ENV = "HYPERSAL_GPU_SHARE"
MPS_PERCENT = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"


def child_env(slots: int, environ=os.environ) -> dict[str, str]:
    """What the worker sets in a child's environment: its share of the GPU (none with one slot)."""
    if slots <= 1:
        return {}
    env = {ENV: f"{1 / slots:.6g}"}
    if environ.get("CUDA_MPS_PIPE_DIRECTORY") and MPS_PERCENT not in environ:
        env[MPS_PERCENT] = str(max(1, 100 // slots))
    return env


def apply(device, environ=os.environ, cuda=None) -> float | None:
    """Cap this run's GPU memory at its share; the share, or None (no share, or not on a GPU).
    `cuda`: torch.cuda (a recording stand-in in the tests, which have no GPU)."""
    share = environ.get(ENV)
    if not share or device.type != "cuda":
        return None
    if cuda is None:
        import torch
        cuda = torch.cuda
    fraction = float(share)
    # torch wants the device's index; a plain "cuda" (pick_device's, outside DDP) is the current one
    cuda.set_per_process_memory_fraction(fraction, device.index if device.index is not None else cuda.current_device())
    return fraction
