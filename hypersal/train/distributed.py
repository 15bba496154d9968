"""One run across several processes: PyTorch DistributedDataParallel, one process per GPU,
launched by `srun` (or torchrun), configured from the environment.

- Rank, local rank and world size come from torchrun's RANK / LOCAL_RANK / WORLD_SIZE when set,
  else from Slurm's SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS; the master is MASTER_ADDR or the
  first host of SLURM_JOB_NODELIST, its port MASTER_PORT or one derived from the job id.
- Every rank sees the same task in the same step and takes a disjoint slice of the global
  batch (the providers do this), so DDP's averaged gradient is the gradient of the global
  batch, hypernetwork included: nothing needs a custom reduction.
- BatchNorm statistics are computed over the global batch (SyncBatchNorm on GPUs, an all-reduce
  of sums on CPUs, where torch's SyncBatchNorm does not run), so a run on N processes trains
  like one process with the same global batch.
- Only rank 0 writes (checkpoints, models, maps, metrics, Comet); every rank resumes from the
  same checkpoint; a stop signal is agreed on by all ranks at the same step.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from hypersal.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: "gpu[03-05,09],cpu1" -> "gpu03"."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot read the node list {nodelist!r}")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def from_environment(env=os.environ) -> World:
    if "WORLD_SIZE" in env and "RANK" in env:                    # torchrun (or set by hand)
        return World(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:   # srun, one task per process
        return World(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"]))
    return World()


def master(env=os.environ) -> tuple[str, int]:
    addr = env.get("MASTER_ADDR") or (first_host(env["SLURM_JOB_NODELIST"]) if "SLURM_JOB_NODELIST" in env
                                       else "127.0.0.1")
    port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 30000)
    return addr, int(port)


def init(world: World, device: torch.device) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs); nothing for one process."""
    if not world.active:
        return
    addr, port = master()
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        # Long: ranks 1.. wait at a barrier while rank 0 runs the test and run stages.
        dist.init_process_group(backend, rank=world.rank, world_size=world.size,
                                timeout=timedelta(hours=2), device_id=device if device.type == "cuda" else None)
    except Exception as e:
        raise UserError(f"rank {world.rank} of {world.size} could not join the process group at "
                        f"{addr}:{port} ({e.__class__.__name__}: {e})",
                        fix="check that every task runs (srun) and that the port is free (MASTER_PORT)") from None
    global _BN_GROUP
    # BatchNorm's collectives get a communicator of their own: on the default one they would
    # interleave with DDP's gradient buckets, in an order that may differ between ranks.
    _BN_GROUP = dist.new_group(backend="gloo") if backend == "gloo" else None


_BN_GROUP = None


def device_for(world: World, name: str) -> torch.device:
    """One GPU per process: the local rank's."""
    if name != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def agree_to_stop(world: World, asked: bool) -> bool:
    """True on every rank when any rank was asked to stop, so all stop at the same step (a rank
    that left alone would leave the others waiting in a collective)."""
    if not world.active:
        return asked
    flag = torch.tensor([1.0 if asked else 0.0],
                        device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """A differentiable sum over ranks (its backward sums the gradients), on BatchNorm's group."""
    import warnings
    with warnings.catch_warnings():
        # torch marks this API deprecated in favour of a private one; it is the public way still.
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn.functional import all_reduce
        return all_reduce(t, group=_BN_GROUP if _BN_GROUP is not None else dist.group.WORLD)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch on CPUs: sums and counts all-reduced (differentiably, so
    the gradient is the full-batch one). Same parameters and buffers as nn.BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        n = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype, device=x.device)
        # Two passes, as one process computes it: E[x^2] - E[x]^2 in float32 loses the variance
        # of deep layers (large means) to cancellation.
        sums = _all_reduce(torch.cat([x.sum((0, 2, 3)), n]))                    # (C + 1,) over ranks
        count = sums[-1]
        mean = sums[:c] / count
        centred = x - mean.view(1, c, 1, 1)
        var = _all_reduce((centred * centred).sum((0, 2, 3))) / count          # biased, as BN normalises
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
        y = centred * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d computing its statistics over all ranks (in place)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module
