"""test: every metric per task on held-out images, as the benchmarks compute them.

Predictions are made at the training size and compared with each reference map at its own,
original size (metrics resize the prediction). Fixation metrics (nss, the AUCs, info_gain)
are computed only for tasks with fixation maps; elsewhere they are reported as absent, never
against a thresholded saliency map (a flaw of the seed). Writes <run>/test/metrics.csv,
metrics.md and one picture per task (image | target | prediction | overlay), and logs them to
Comet.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from hypersal.evaluation import metrics as M
from hypersal.evaluation import viz
from hypersal.data.cache import read_image, read_map
from hypersal.data.tasks import center_bias
from hypersal.errors import UserError
from hypersal.log import say
from hypersal.stages import stage
from hypersal.train.predict import predict
from hypersal.train.steps import Precision

OTHER_IMAGES = 10   # sAUC negatives: the fixations of this many other images (MIT uses 10)


def trained_model(job, stage_name: str):
    if job.model is None:
        raise UserError(f"stage {stage_name} needs a model, but no earlier stage made one", key="pipeline",
                        fix="put a training stage (train, adapt, ...) before it")
    return job.model


def pick_split(index, wanted: str) -> str:
    if index.images.get(wanted):
        return wanted
    if wanted == "test" and index.images.get("val"):
        say("test: the dataset has no test split, using val")
        return "val"
    raise UserError(f"the dataset has no '{wanted}' split", file=index.images_dir, key="test.split",
                    fix="add the folder or choose another split")


def check_metrics(names: list[str]) -> list[str]:
    for i, name in enumerate(names):
        if name not in M.METRICS:
            from hypersal.errors import unknown_name
            raise unknown_name("metric", name, M.METRICS, key=f"test.metrics[{i}]")
    return list(names)


def score_task(preds: np.ndarray, maps: list[Path], fixations: list[Path] | None, names: list[str],
               seed: int) -> dict:
    """Mean of every metric over the images of one task; fixation metrics None without fixations."""
    rng = np.random.default_rng(seed)
    fix = [read_map(p) > 0 for p in fixations] if fixations else None
    values: dict[str, list] = {n: [] for n in names}
    for i, (pred, map_path) in enumerate(zip(preds, maps)):
        target = read_map(map_path).astype(np.float64)
        for name in names:
            fn, kind = M.METRICS[name]
            if kind == "map":
                values[name].append(fn(pred, target))
            elif fix is not None:
                values[name].append(_fixation_metric(name, fn, pred, fix, i, rng, seed))
    return {n: (float(np.nanmean(v)) if v else None) for n, v in values.items()}


def _fixation_metric(name, fn, pred, fix, i, rng, seed) -> float:
    f = fix[i]
    if name == "sauc":
        others = [j for j in range(len(fix)) if j != i]
        chosen = rng.choice(others, min(OTHER_IMAGES, len(others)), replace=False) if others else []
        other = np.zeros(f.shape, bool)
        for j in chosen:
            other |= _resize_binary(fix[j], f.shape)
        return fn(pred, f, other, seed=seed + i)
    if name == "info_gain":
        return fn(pred, f, center_bias(np.zeros((*f.shape, 3), np.uint8)))
    if name in ("auc_judd", "auc_borji"):
        return fn(pred, f, seed=seed + i)
    return fn(pred, f)


def _resize_binary(f: np.ndarray, shape) -> np.ndarray:
    if f.shape == tuple(shape):
        return f
    ys = (np.arange(shape[0]) * f.shape[0] // shape[0])
    xs = (np.arange(shape[1]) * f.shape[1] // shape[1])
    return f[np.ix_(ys, xs)]


def tables(rows: dict[str, dict], names: list[str]) -> tuple[str, str]:
    """(CSV, Markdown) of per-task rows and their mean."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", *names])
    md = ["| task | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for task, row in rows.items():
        writer.writerow([task, *("" if row[n] is None else f"{row[n]:.6g}" for n in names)])
        md.append(f"| {task} | " + " | ".join("–" if row[n] is None else f"{row[n]:.4f}" for n in names) + " |")
    return out.getvalue(), "\n".join(md) + "\n"


def picture(arrays, preds: np.ndarray, n: int) -> np.ndarray:
    rows = []
    for i in range(min(n, len(arrays))):
        image = np.asarray(read_image(arrays.paths[i]))
        target = arrays.maps[0][i]
        rows.append([image, viz.gray(target), viz.gray(preds[i]), viz.overlay(image, preds[i])])
    return viz.grid(rows, ["image", "target", "prediction", "overlay"],
                    row_labels=[arrays.stems[i] for i in range(len(rows))])


@stage("test")
def test(job) -> dict:
    cfg = job.cfg.test
    model = trained_model(job, "test")
    index = job.dataset()
    split = pick_split(index, cfg.split)
    names = check_metrics(cfg.metrics)
    tasks = [t for t in model.task_names if t in index.tasks]
    out_dir = job.folder.path / "test"
    rows: dict[str, dict] = {}
    for name in tasks:
        arrays = job.arrays(split, [name])
        preds = predict(model, arrays, 0, model.task_index(name), cfg.batch_size, job.device,
                        Precision(job.cfg.train.precision))
        n = cfg.images or len(preds)        # test.images: the first n images only
        fixations = index.fixation_files(split, name)
        rows[name] = score_task(preds[:n], index.map_files(split, name)[:n], fixations and fixations[:n],
                                names, cfg.seed)
        if job.is_main and cfg.grid_images > 0:
            path = viz.save_png(picture(arrays, preds, cfg.grid_images), out_dir / f"{name}.png")
            job.tracker.log_image(path, name=f"test/{name}")
        job.tracker.log_metrics({f"{name}/{k}": v for k, v in rows[name].items() if v is not None},
                                step=0, stage="test")
    present = lambda n: [r[n] for r in rows.values() if r[n] is not None]  # noqa: E731
    rows["mean"] = {n: (float(np.mean(present(n))) if present(n) else None) for n in names}
    job.tracker.log_metrics({f"mean/{k}": v for k, v in rows["mean"].items() if v is not None},
                            step=0, stage="test")
    if job.is_main:
        text_csv, text_md = tables(rows, names)
        out_dir.mkdir(exist_ok=True)
        (out_dir / "metrics.csv").write_text(text_csv)
        (out_dir / "metrics.md").write_text(text_md)
        job.tracker.log_table(out_dir / "metrics.csv")
        say(f"test on {split}:\n{text_md}")
    return {"split": split, **{t: {k: v for k, v in r.items() if v is not None} for t, r in rows.items()}}
