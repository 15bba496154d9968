"""How long the few-shot study's arms take to adapt the draws of one task and k, one by one
against vectorised (study.vectorise), on a trained study model or a fresh one of its shape:

    python bench/fewshot_draws.py [--model RUN/models/after_train.pt] [--draws 5] [--k 10]
        [--steps 50] [--device cpu|cuda] [--arms ARM ...]

Prints one JSON line per arm: milliseconds per draw each way, the speed-up, and the largest
difference between the two ways' scores (they should agree to float rounding). The images and
maps are random (64x64): the timing does not depend on what they show.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from hypersal.runner.job import build_model
from hypersal.study import arms as A, vectorised as V
from hypersal.train.losses import weighted

FRESH = dict(mnet=dict(cutoff=14, weights=None, weights_path=None, decoder="light", width=None, skip=4, prior=4),
             task_names=[f"t{i}" for i in range(18)], generate="decoder", encoder_from=None, hypernet="chunked",
             hypernet_options=dict(embedding_dim=8, hidden=[64, 64], chunk_size=4096, chunk_embedding_dim=8),
             per_task_bn=False, start="learned", task_encoder=dict(width=64, grid=8))


def settings(model, draws: int, k: int, device) -> list[A.Setting]:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    task = model.add_task("new")
    gen = torch.Generator().manual_seed(0)

    def images(n):
        x = torch.randn(n, 3, 64, 64, generator=gen).to(device)
        with torch.no_grad():
            return A.Images(x, model(x, task=task, encode_only=True))
    query = images(100)
    first = A.Setting(model, task, images(k), torch.rand(k, 1, 64, 64, generator=gen).to(device), query,
                      torch.rand(100, 64, 64, generator=gen), weighted("bce", key="loss"), batch_size=10, seed=0)
    return [first] + [dataclasses.replace(first, support=images(k), seed=d,
                                          support_y=torch.rand(k, 1, 64, 64, generator=gen).to(device))
                      for d in range(1, draws)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a study run's models/after_train.pt (default: a fresh model of its shape)")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--arms", nargs="+", default=list(V.VECTOR_ARMS), choices=V.VECTOR_ARMS)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.model:
        saved = torch.load(args.model, map_location="cpu", weights_only=False)
        mnet_args = {**saved["args"]["mnet"], "weights": None, "weights_path": None}
        model = build_model({**saved["args"], "mnet": mnet_args})
        model.load_state_dict(saved["state"])
    else:
        torch.manual_seed(0)
        model, mnet_args = build_model(FRESH), FRESH["mnet"]
    group = settings(model, args.draws, args.k, torch.device(args.device))
    for arm in args.arms:
        if arm == "encoder_saliency" and model.task_encoder is None:
            continue
        t0 = time.perf_counter()
        lr = 0.001 if arm == "finetune_all" else 0.05
        alone = [A.run(arm, s, [args.steps], lr, mnet_args) for s in group]
        t1 = time.perf_counter()
        together = V.run_draws(arm, group, [args.steps], lr, mnet_args)
        t2 = time.perf_counter()
        one, vec = 1000 * (t1 - t0) / args.draws, 1000 * (t2 - t1) / args.draws
        diff = max(abs(a[args.steps] - b[args.steps]) for a, b in zip(alone, together))
        print(json.dumps({"arm": arm, "draws": args.draws, "k": args.k, "steps": args.steps, "device": args.device,
                          "ms_per_draw_one_by_one": round(one, 1), "ms_per_draw_vectorised": round(vec, 1),
                          "speedup": round(one / vec, 2), "max_score_difference": float(f"{diff:.2g}")}), flush=True)


if __name__ == "__main__":
    main()
