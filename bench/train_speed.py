"""Training throughput of every variant, each next to the plain main network measured in the
same process (the anchor), one JSON line per variant:

    python bench/train_speed.py                  # GPU: 256x256, batch 64 and 256, bf16, channels-last
    python bench/train_speed.py --cpu            # any laptop: 64x64, batch 8, fp32

| variant          | what trains                                                              |
|------------------|--------------------------------------------------------------------------|
| plain            | MobileNetV2 encoder + light decoder, one task (the anchor)               |
| hnet             | the default hypernetwork + main network, tasks in turn                   |
| hnet_loader      | the same, fed from JPEG/PNG files through the uint8 cache and prefetcher |
| seed_setup       | the seed's: KDSalBox decoder, full encoder, 480x640, batch 4, fp32       |
| seed_parity_fast | the same network, bf16, channels-last, batch 32                          |
| *_compiled       | plain and hnet under torch.compile                                       |

Each line: img/s, ms per step, peak GPU memory, and the ratio to `plain` at the same batch
and size (seed_parity_fast's ratio is to seed_setup).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from hypersal.data import cache, layout, synth
from hypersal.data.provider import Augment, MultitaskBatchProvider, Prefetcher
from hypersal.models.hyper import HyperSaliency, MainNet
from hypersal.train.losses import weighted
from hypersal.train.steps import images_to_input, maps_to_target

HNET = dict(embedding_dim=8, hidden=[64, 64], chunk_size=4096, chunk_embedding_dim=8)
TASKS = ["spectral_residual", "frequency_tuned", "image_signature", "center_bias"]


def build(kind: str, decoder: str = "light", cutoff: int = 14) -> torch.nn.Module:
    mnet = MainNet(cutoff=cutoff, decoder=decoder)
    generate = "none" if kind == "plain" else "decoder"
    return HyperSaliency(mnet, TASKS, generate=generate, hypernet_options=HNET if generate != "none" else None,
                         per_task_bn=generate != "none")


class Synthetic:
    """Batches already on the device (the anchor's input: no loader)."""

    def __init__(self, batch: int, hw, device, channels_last: bool):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (batch, 3, *hw), dtype=torch.uint8, generator=g).to(device)
        self.maps = torch.randint(0, 256, (batch, 1, *hw), dtype=torch.uint8, generator=g).to(device)
        self.channels_last = channels_last

    def get(self, step: int):
        return step % len(TASKS), self.images, self.maps


class FromFiles:
    """Batches from image files: the cache built once (not timed), the prefetcher timed."""

    def __init__(self, batch: int, hw, steps: int, folder: Path, device):
        data = synth.make(folder / "data", n=max(4 * batch, 64), size=tuple(hw), tasks=TASKS, quiet=True)
        index = layout.scan(data / "images", data / "maps")
        arrays = cache.load_split(index, "train", TASKS, tuple(hw), folder / "cache", workers=synth.cpu_count(),
                                  quiet=True)
        provider = MultitaskBatchProvider(arrays, list(range(len(TASKS))), batch, seed=0, aug=Augment(hflip=0.5))
        self.prefetch = Prefetcher(provider, 0, steps, depth=4, device=device)   # on a GPU: copied and flipped there

    def get(self, step: int):
        b = self.prefetch.next()
        return b.task, b.images, b.maps


def measure(model, source, steps: int, warmup: int, device, precision: str, channels_last: bool) -> dict:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = weighted("bce")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(i: int):
        task, images, maps = source.get(i)
        x = images_to_input(images, device, channels_last)
        y = maps_to_target(maps, device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x, task=task)
        loss_fn(logits, y).backward()
        opt.step()
        return x.shape[0]

    for i in range(warmup):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    images = sum(step(warmup + i) for i in range(steps))
    sync(device)
    seconds = time.perf_counter() - t0
    return {"img_per_s": round(images / seconds, 1), "ms_per_step": round(1000 * seconds / steps, 2),
            "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--size", type=int, help="square training size (default 256, 64 with --cpu)")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 64 256, 8 with --cpu)")
    p.add_argument("--steps", type=int, help="timed steps per variant (default 30, 5 with --cpu)")
    p.add_argument("--variants", nargs="+", default=["plain", "hnet", "hnet_loader", "seed_setup",
                                                      "seed_parity_fast", "plain_compiled", "hnet_compiled"])
    args = p.parse_args()
    cpu = args.cpu or not torch.cuda.is_available()
    device = torch.device("cpu" if cpu else "cuda")
    size = args.size or (64 if cpu else 256)
    batches = args.batches or ([8] if cpu else [64, 256])
    steps = args.steps or (5 if cpu else 30)
    precision, channels_last = ("fp32", False) if cpu else ("bf16", True)
    machine = {"device": torch.cuda.get_device_name() if not cpu else platform.processor() or "cpu",
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as d:
        for batch in batches:
            base = None
            for variant in args.variants:
                if variant.startswith("seed"):
                    continue
                model = build("plain" if variant.startswith("plain") else "hnet")
                if variant.endswith("_compiled"):
                    model.compile()
                if variant == "hnet_loader":
                    source = FromFiles(batch, (size, size), steps + 3, Path(d) / f"b{batch}", device)
                else:
                    source = Synthetic(batch, (size, size), device, channels_last)
                result = measure(model, source, steps, 3 if not variant.endswith("_compiled") else 2,
                                 device, precision, channels_last)
                base = result["img_per_s"] if variant == "plain" else base
                ratio = round(result["img_per_s"] / base, 3) if base else None
                print(json.dumps({"variant": variant, "batch": batch, "size": [size, size], "precision": precision,
                                  "channels_last": channels_last, **result, "ratio_to_plain": ratio, **machine}),
                      flush=True)
        seed_hw = (120, 160) if cpu else (480, 640)
        seed_base = None
        for variant in [v for v in args.variants if v.startswith("seed")]:
            fast = variant == "seed_parity_fast"
            batch = (8 if cpu else 32) if fast else 4
            prec, cl = ("bf16" if not cpu else "fp32", not cpu) if fast else ("fp32", False)
            model = build("hnet", decoder="kdsalbox", cutoff=19)
            result = measure(model, Synthetic(batch, seed_hw, device, cl), max(2, steps // 2), 2, device, prec, cl)
            seed_base = result["img_per_s"] if not fast else seed_base
            ratio = round(result["img_per_s"] / seed_base, 3) if seed_base and fast else None
            print(json.dumps({"variant": variant, "batch": batch, "size": list(seed_hw), "precision": prec,
                              "channels_last": cl, **result, "ratio_to_seed_setup": ratio, **machine}), flush=True)


if __name__ == "__main__":
    main()
