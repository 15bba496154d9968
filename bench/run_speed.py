"""The `run` stage's host work per image against a bare decode of the same files (issue 24).

    python bench/run_speed.py [--n 96] [--size 480x640] [--train-size 256] [--batch 32] [--rounds 3]

In one process: N generated JPEG files (synth scenes, quality 90), a Job read from a config as
train.py reads it, a freshly built model (its weights do not change the speed), the real stage
(hypersal.stages.run). One untimed pass first warms it: the model's first call at each batch
shape, the page cache. Then `rounds` rounds, each timing back to back, as CPU time
(time.process_time: every thread of the process, user and system):

    decode    a bare loop over the files: np.fromfile, cv2.imdecode
    stage     the stage with overlays off, then on (maps written into a temporary folder), each
              with the images shrunk to the training size on the host (run.resize: host, what a
              CPU-only machine runs) and on the device (run.resize: device, what `auto` runs on a
              GPU node: the host decodes and sends each whole image, hypersal.data.area shrinks
              it where the model runs, with OpenCV's pixels)
    device    the device's share inside those stages (hypersal.stages.run.predict: the model's
              input made from the uint8 batch, the device's resize, the forward calls, the
              sigmoid, each map resized to its image and stretched to uint8; time.thread_time
              around each call)

The stage's host work is stage - device: what the CPUs of a GPU node do per image while the GPU
infers (on a GPU node the input's normalisation and the sigmoid are GPU kernels, as the model
is; the CPU path's cv2.LUT input table is never run there). Since 2026-12-03 the maps are
resized and stretched where the model ran (runio.maps: GPU kernels on a GPU node, OpenCV on the
CPU), so they are the device's share too; `*_ratio_maps_on_host` counts them as host work, as
before. Before 2026-12-02 only the forward calls were subtracted, which counted the input and
the sigmoid as host work too; the JSON lines give that ratio as well (`*_ratio_forward_only`). torch runs 1 thread here (the stage would use job_cpus(), 2 on a
2-core machine) so that the device's CPU time is the calling thread's own and is subtracted
exactly; the stage's decode and write threads are run.workers (auto: job_cpus()). Prints one JSON line per round, one
summary line (medians over the rounds), one line of the main steps' CPU ms per image (one
thread: decode, resize to the training size, map PNG, overlay blend and JPEG) and a readable line. --cuda first times the stage on the
GPU, overlays off and on (wall images/s after a warm pass; bench/gpu.sh runs it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))        # this checkout's hypersal, not an installed one

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from hypersal import config as config_mod  # noqa: E402
from hypersal.data import png, synth  # noqa: E402
from hypersal.data.cache import resize  # noqa: E402
from hypersal.data.decode import read_bgr, read_rgb  # noqa: E402
from hypersal.evaluation import viz  # noqa: E402
from hypersal.runfolder import RunFolder  # noqa: E402
from hypersal.runner.job import Job  # noqa: E402
from hypersal.stages import run as run_stage, runio  # noqa: E402
from hypersal.tracking import Tracker  # noqa: E402
from hypersal.train.cpus import job_cpus  # noqa: E402

TASKS = ["center_bias"]


def write_images(folder: Path, n: int, hw: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    for path in paths:
        cv2.imwrite(str(path), cv2.cvtColor(synth.scene(rng, *hw), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def make_job(folder: Path, images: Path, args, overlay: bool, device: str, resize: str = "auto") -> Job:
    cfg = {"pipeline": ["run"], "comet": {"mode": "disabled"}, "device": device,
           "data": {"size": [args.train_size, args.train_size]},
           "run": {"images_dir": str(images), "out_dir": str(folder / "maps"), "batch_size": args.batch,
                   "overlay": overlay, "resize": resize}}
    if device == "cuda":
        cfg["train"] = {"precision": "bf16"}
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_folder = RunFolder(folder)
    return Job(cfg=config_mod.load(folder / "config.yaml"), folder=run_folder,
               tracker=Tracker(run_folder, {"mode": "disabled"}, {}), device=torch.device(device))


class DeviceClock:
    """CPU seconds of the device's share of the stage (hypersal.stages.run.predict: the model's
    input from the uint8 batch, the forward calls, the sigmoid, the maps), in the thread that
    ran it; and, within it, of the forward calls alone (the definition of host work before
    2026-12-02) and of the maps' resize and stretch (runio.maps, host work before 2026-12-03)."""

    def __init__(self, model: torch.nn.Module):
        self.seconds = self.forward_seconds = self.maps_seconds = 0.0
        self._start = 0.0
        model.register_forward_pre_hook(lambda *_: self._begin())
        model.register_forward_hook(lambda *_: self._end())
        run_stage.predict = self._timed(run_stage.predict, "seconds")
        runio.maps = self._timed(runio.maps, "maps_seconds")

    def _timed(self, function, total: str):
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                setattr(self, total, getattr(self, total) + time.thread_time() - start)
        return timed

    def reset(self) -> None:
        self.seconds = self.forward_seconds = self.maps_seconds = 0.0

    def _begin(self) -> None:
        self._start = time.thread_time()

    def _end(self) -> None:
        self.forward_seconds += time.thread_time() - self._start


def decode_loop(files: list[Path]) -> float:
    start = time.process_time()
    for f in files:
        cv2.imdecode(np.fromfile(f, np.uint8), cv2.IMREAD_COLOR)
    return time.process_time() - start


def timed_stage(job: Job, clock: DeviceClock) -> tuple[float, float, float, float, float]:
    """(CPU seconds of the stage, of its device share, of its forward calls alone, of its maps'
    resize and stretch, wall seconds)."""
    clock.reset()
    cpu, wall = time.process_time(), time.perf_counter()
    run_stage.run(job)
    return (time.process_time() - cpu, clock.seconds, clock.forward_seconds, clock.maps_seconds,
            time.perf_counter() - wall)


def one_round(files, jobs, clock) -> dict:
    n = len(files)
    row = {"decode_ms": decode_loop(files) / n * 1e3}
    for name, job in jobs.items():
        cpu, device, forward, maps, wall = timed_stage(job, clock)
        row[f"{name}_stage_ms"] = cpu / n * 1e3
        row[f"{name}_model_ms"] = device / n * 1e3
        row[f"{name}_maps_ms"] = maps / n * 1e3
        row[f"{name}_host_ms"] = (cpu - device) / n * 1e3
        row[f"{name}_ratio"] = (cpu - device) / n * 1e3 / row["decode_ms"]
        row[f"{name}_ratio_maps_on_host"] = (cpu - device + maps) / n * 1e3 / row["decode_ms"]
        row[f"{name}_ratio_forward_only"] = (cpu - forward) / n * 1e3 / row["decode_ms"]
        row[f"{name}_images_per_second"] = n / wall
    return row


def parts(files: list[Path], maps_dir: Path, hw: tuple[int, int]) -> dict:
    """CPU ms per image of the stage's main steps, one thread, on the files and the maps the
    stage wrote: what the host work is made of."""
    images = [read_bgr(f) for f in files]
    maps = [cv2.imread(str(maps_dir / f"{f.stem}.png"), cv2.IMREAD_UNCHANGED) for f in files]
    steps = {"decode_rgb": lambda i: read_rgb(files[i]),
             "decode_bgr": lambda i: read_bgr(files[i]),
             "resize_to_train_size": lambda i: resize(images[i], hw),
             "map_png": lambda i: png.encode_grey(maps[i]),
             "overlay_blend": lambda i: viz.blend_bgr(images[i], maps[i], bgr=True),
             "overlay_jpeg": lambda i: cv2.imencode(".jpg", images[i], runio.JPEG)}
    out = {}
    for name, step in steps.items():
        start = time.process_time()
        for i in range(len(files)):
            step(i)
        out[f"{name}_ms"] = round((time.process_time() - start) / len(files) * 1e3, 3)
    return out


def gpu_lines(root: Path, images: Path, args, n: int) -> list[dict]:
    """The stage on the GPU, overlays off and on: wall images/s after a warm pass (a GPU machine's
    figure only; nothing here measures it on a machine without one)."""
    lines = []
    for overlay in (False, True):
        job = make_job(root / f"gpu-{overlay}", images, args, overlay=overlay, device="cuda")
        torch.manual_seed(0)
        job.model = job.new_model(TASKS)
        run_stage.run(job)
        wall = time.perf_counter()
        run_stage.run(job)
        lines.append({"bench": "run_stage_gpu", "images": n, "image_size": list(args.size), "batch": args.batch,
                      "overlay": overlay, "workers": job_cpus(), "device": torch.cuda.get_device_name(),
                      "images_per_second": round(n / (time.perf_counter() - wall), 1)})
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=96, help="images in the run folder")
    p.add_argument("--size", type=synth.parse_size, default=(480, 640))
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="CPU rounds (0: none, e.g. with --cuda)")
    p.add_argument("--cuda", action="store_true", help="time the stage on the GPU first")
    args = p.parse_args()
    if args.cuda and not torch.cuda.is_available():
        p.error("--cuda: this machine has no usable GPU")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        files = write_images(root / "images", args.n, args.size)
        if args.cuda:
            for line in gpu_lines(root, root / "images", args, args.n):
                print(json.dumps(line), flush=True)
        if args.rounds:
            cpu_rounds(root, files, args)


def cpu_rounds(root: Path, files: list[Path], args) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    jobs = {name: make_job(root / name, root / "images", args, overlay=name.startswith("overlay"), device="cpu",
                           resize="device" if name.endswith("_on_device") else "host")
            for name in ("maps", "overlay", "maps_on_device", "overlay_on_device")}
    model = jobs["maps"].new_model(TASKS)
    for job in jobs.values():
        job.model = model
    clock = DeviceClock(model)
    for job in (jobs["overlay"], jobs["overlay_on_device"]):
        run_stage.run(job)                # warm: every batch shape, the files in the page cache
    decode_loop(files)
    common = {"images": args.n, "image_size": list(args.size), "train_size": args.train_size,
              "batch": args.batch, "tasks": len(TASKS), "torch_threads": torch.get_num_threads(),
              "workers": job_cpus(), "cpus": synth.cpu_count()}
    rows = []
    for r in range(args.rounds):
        rows.append(one_round(files, jobs, clock))
        print(json.dumps({"bench": "run_stage_round", "round": r, **common,
                          **{k: round(v, 3) for k, v in rows[-1].items()}}), flush=True)
    summary = {k: round(statistics.median(row[k] for row in rows), 3) for k in rows[0]}
    print(json.dumps({"bench": "run_stage", **common, **summary}), flush=True)
    cv2.setNumThreads(1)      # as the stage runs them
    print(json.dumps({"bench": "run_stage_parts", **common, **parts(files, root / "maps" / "maps" / TASKS[0],
                                                                       (args.train_size, args.train_size))}),
          flush=True)
    print(f"run stage, {args.n} {args.size[0]}x{args.size[1]} JPEGs, median of {args.rounds} rounds, bare decode "
          f"{summary['decode_ms']:.2f} ms: host CPU per image with the images shrunk on the device (run.resize: "
          f"device, auto on a GPU) {summary['maps_on_device_host_ms']:.2f} ms without overlays "
          f"({summary['maps_on_device_ratio']:.2f}x a bare decode, target <= 3), {summary['overlay_on_device_host_ms']:.2f} "
          f"ms with ({summary['overlay_on_device_ratio']:.2f}x, target <= 6); shrunk on the host (the CPU's path) "
          f"{summary['maps_host_ms']:.2f} ms ({summary['maps_ratio']:.2f}x) and {summary['overlay_host_ms']:.2f} ms "
          f"({summary['overlay_ratio']:.2f}x). The device's share (input, resize, model, sigmoid, maps) is not "
          f"counted ({summary['maps_on_device_model_ms']:.1f} ms per image on {torch.get_num_threads()} torch "
          f"thread(s)); counting the maps' resize and stretch as host work too, on the host's path: "
          f"{summary['maps_ratio_maps_on_host']:.2f}x and {summary['overlay_ratio_maps_on_host']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
