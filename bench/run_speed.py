"""The `run` stage end to end: JPEG files in, one PNG map per image and task out, timed by the
stage itself (decode, resize, inference, upsampling to each image's size, PNG encoding).

    python bench/run_speed.py [--n 200] [--size 240x320] [--train-size 256] [--batch 64] [--overlay]

Prints one JSON line: images/s and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from hypersal.data import synth

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="images in the run folder")
    p.add_argument("--size", type=synth.parse_size, default=(240, 320))
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--overlay", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        data = synth.make(d / "data", n=args.n, size=args.size, tasks=["center_bias"], quiet=True)
        run_images = data / "images" / "all"
        run_images.mkdir()
        for f in (data / "images").rglob("*.jpg"):
            if f.parent.name in ("train", "val", "test"):
                os.link(f, run_images / f.name)
        # A one-step training gives the model (its quality does not change the speed).
        cfg = {"pipeline": ["train", "run"], "comet": {"mode": "disabled"}, "tasks": ["center_bias"],
               "data": {"images_dir": str(data / "images"), "maps_dir": str(data / "maps"),
                        "size": [args.train_size, args.train_size]},
               "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "val_batches": 0, "actions": []},
               "run": {"images_dir": str(run_images), "batch_size": args.batch, "overlay": args.overlay}}
        if torch.cuda.is_available():
            cfg["train"].update(precision="bf16", channels_last=True)
        (d / "run").mkdir()
        (d / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(d / "run" / "config.yaml")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        result = json.loads((d / "run" / "results.json").read_text())["run"]
        print(json.dumps({"bench": "run_stage", "images": result["images"], "image_size": list(args.size),
                          "train_size": args.train_size, "batch": args.batch, "tasks": len(result["tasks"]),
                          "overlay": args.overlay, "images_per_second": result["images_per_second"],
                          "seconds": result["seconds"], "cpus": synth.cpu_count(),
                          "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}))


if __name__ == "__main__":
    main()
