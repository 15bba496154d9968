"""Real benchmark layouts in: SALICON, MIT1003 and CAT2000 as their authors ship them (small
generated copies, tests/helpers/benchmarks.py), converted by hypersal.data.convert, then trained, tested
(fixation metrics) and run through train.py; datasets as tasks, each with its own images, and
a new dataset by `adapt`; bad input refused with the file named and nothing left behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import benchmarks
from helpers.cli import PYTHON, ROOT, train

FIXATION_METRICS = ("nss", "auc_judd", "auc_borji", "sauc", "info_gain")
TINY = {"comet": {"mode": "disabled"},
        "train": {"epochs": 1, "steps_per_epoch": 4, "batch_size": 2, "val_batches": 1, "val_batch_size": 2,
                  "actions": []},
        "model": {"encoder": {"cutoff": 7}, "hypernet": {"hidden": [16], "chunk_size": 1024}}}


def convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "hypersal.data.convert", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    truth = {name: make(root / name) for name, make in benchmarks.MAKERS.items()}
    return root, truth


@pytest.mark.parametrize("fmt", ["salicon", "mit1003", "cat2000"])
def test_a_benchmark_converts_then_trains_tests_and_runs(sources, tmp_path, fmt):
    root, truth = sources
    out = tmp_path / "data"
    proc = convert("--format", fmt, str(root / fmt), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "converting:" in proc.stderr and "hard-linked" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    [source] = manifest["sources"]
    assert source["task"] == fmt and manifest["task_images"] == "all" and manifest["split_seed"] == 0
    counts = source["counts"]
    expected = {"salicon": {"train": 8, "val": 2, "test": 2, "run": 2},       # val split in two, test -> run
                "mit1003": {"train": 8, "val": 1, "test": 1},                  # 0.8 / 0.1 / 0.1 of 10
                "cat2000": {"train": 6, "val": 2, "test": 2, "run": 2}}[fmt]   # per category: 3 / 1 / 1
    assert counts == expected
    for split, n in counts.items():
        assert len(list((out / "images" / split).iterdir())) == n
    labelled = [p for s in ("train", "val", "test") for p in (out / "images" / s).iterdir()]
    assert sorted(p.stem for p in (out / "maps" / fmt).iterdir()) == sorted(p.stem for p in labelled)
    # Images are links to the sources, not copies.
    some = labelled[0]
    assert some.stat().st_nlink == 2
    # Fixations: exactly the points the source holds, at the image's size.
    for stem, points in truth[fmt].items():
        fix = np.asarray(Image.open(out / "fixations" / fmt / f"{stem}.png")) > 0
        assert fix.shape == (benchmarks.H, benchmarks.W)
        assert set(zip(*np.nonzero(fix))) == {(y, x) for x, y in points}, stem
    if fmt == "cat2000":   # split per category, stems carry it
        for cat in ("Action", "Indoor"):
            assert sum(p.name.startswith(cat) for p in (out / "images" / "train").iterdir()) == 3
    # Through train.py: train, test with every fixation metric, run.
    run = tmp_path / "run"
    run.mkdir()
    cfg = {**TINY, "pipeline": ["train", "test", "run"],
           "data": {"images_dir": str(out / "images"), "maps_dir": str(out / "maps"),
                    "fixations_dir": str(out / "fixations"), "size": [32, 32], "workers": 1},
           "run": {"images_dir": str(out / "images" / ("run" if counts.get("run") else "test"))}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = train("--config", str(run / "config.yaml"))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run / "results.json").read_text())
    scores = results["test"][fmt]
    # sAUC takes its negatives from the other test images: with one test image it is undefined.
    defined = [m for m in FIXATION_METRICS if m != "sauc" or counts["test"] > 1]
    assert set(FIXATION_METRICS) <= set(scores) and all(np.isfinite(scores[m]) for m in defined), scores
    assert 0.0 < results["test"][fmt]["auc_judd"] <= 1.0
    assert results["run"]["images"] == counts.get("run", counts["test"])


def test_datasets_as_tasks_train_on_their_own_images_and_adapt_to_a_third(sources, tmp_path):
    root, _ = sources
    out = tmp_path / "three"
    proc = convert("--format", "salicon", str(root / "salicon"), "--format", "mit1003", str(root / "mit1003"),
                   "--format", "cat2000", str(root / "cat2000"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task_images"] == "own" and [s["task"] for s in manifest["sources"]] == ["salicon", "mit1003", "cat2000"]
    assert "task_images: own" in proc.stderr
    for task in ("salicon", "mit1003", "cat2000"):
        assert all(p.name.startswith(f"{task}-") for p in (out / "maps" / task).iterdir())
    # Each batch is one task, drawn from that task's images, with that task's maps.
    from hypersal.data import cache, layout
    from hypersal.data.provider import MultitaskBatchProvider
    index = layout.scan(out / "images", out / "maps", None, out / "fixations", task_images="own")
    arrays = cache.load_split(index, "train", ["salicon", "mit1003"], (32, 32), tmp_path / "cache", quiet=True)
    assert len(arrays) == 16 and [len(r) for r in arrays.rows] == [8, 8]
    provider = MultitaskBatchProvider(arrays, [0, 1], batch_size=4, seed=0)
    seen = {0: set(), 1: set()}
    for step in range(12):
        batch = provider.batch(step)
        task = arrays.tasks[batch.task]
        stems = [arrays.stems[i] for i in batch.indices]
        assert all(s.startswith(f"{task}-") for s in stems), (step, task, stems)
        for stem, got in zip(stems, batch.maps[:, 0].numpy()):
            want = cache.resize(cache.read_map(index.maps[task][stem]), (32, 32))
            assert np.array_equal(got, want), stem
        seen[batch.task].update(stems)
    assert len(seen[0]) == len(seen[1]) == 8                        # every image of each task is drawn
    # Through train.py: two datasets trained, the third held out and adapted to from 4 pairs.
    run = tmp_path / "run"
    run.mkdir()
    cfg = {**TINY, "pipeline": ["train", "adapt", "test"],
           "data": {"images_dir": str(out / "images"), "maps_dir": str(out / "maps"),
                    "fixations_dir": str(out / "fixations"), "size": [32, 32], "workers": 1, "task_images": "own"},
           "adapt": {"task": "cat2000", "epochs": 1, "steps_per_epoch": 2, "shots": 4}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = train("--config", str(run / "config.yaml"))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["steps"] == 4 and results["adapt"]["task"] == "cat2000"
    assert set(results["test"]) >= {"salicon", "mit1003", "cat2000"}
    for task in ("salicon", "cat2000"):                                  # 2 test images each: sAUC defined
        assert all(np.isfinite(results["test"][task][m]) for m in FIXATION_METRICS), results["test"][task]
    # The same folder without task_images: own is refused, naming the first image without a map.
    cfg["data"]["task_images"] = "all"
    (tmp_path / "run_all").mkdir()
    (tmp_path / "run_all" / "config.yaml").write_text(yaml.safe_dump(cfg))
    bad = train("--config", str(tmp_path / "run_all" / "config.yaml"))
    assert bad.returncode == 2 and "'train' images have no 'mit1003' map" in bad.stderr
    assert "set data.task_images: own" in bad.stderr


def test_task_images_own_refuses_an_image_that_no_task_maps(sources, tmp_path):
    root, _ = sources
    out = tmp_path / "data"
    assert convert("--format", "salicon", str(root / "salicon"), "--format", "mit1003", str(root / "mit1003"),
                   "--out", str(out)).returncode == 0
    stray = out / "images" / "train" / "stray.jpg"
    stray.write_bytes(next((out / "images" / "train").iterdir()).read_bytes())
    from hypersal.data import layout
    from hypersal.errors import UserError
    with pytest.raises(UserError, match=r"1 'train' images have no map of any task \(first: stray.jpg\)"):
        layout.scan(out / "images", out / "maps", None, None, task_images="own")


def _unchanged(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("case", ["missing folder", "bad mat", "image without map", "out exists", "formats and sources"])
def test_bad_input_says_what_and_where_and_leaves_nothing(sources, tmp_path, case):
    root, _ = sources
    src = tmp_path / "src"
    subprocess.run(["cp", "-r", str(root / ("salicon" if case != "image without map" else "mit1003")), str(src)], check=True)
    out = tmp_path / "out"
    args = ["--format", "salicon", str(src), "--out", str(out)]
    if case == "missing folder":
        for f in (src / "fixations" / "val").iterdir():
            f.unlink()
        (src / "fixations" / "val").rmdir()
        expect = [f"{src / 'fixations' / 'val'}: the SALICON layout has fixations/val/ here, but it is missing"]
    elif case == "bad mat":
        from scipy.io import savemat
        victim = sorted((src / "fixations" / "train").iterdir())[3]
        savemat(victim, {"points": np.zeros((3, 2))})
        expect = [f"{victim}: a SALICON fixation file has `gaze` and `resolution`; this one has points"]
    elif case == "image without map":
        args = ["--format", "mit1003", str(src), "--out", str(out)]
        stem = sorted((src / "ALLSTIMULI").iterdir())[0].stem
        (src / "ALLFIXATIONMAPS" / f"{stem}_fixMap.jpg").unlink()
        expect = [f"1 of 10 MIT1003 images have no _fixMap.jpg and _fixPts.jpg (first: {stem})"]
    elif case == "out exists":
        out.mkdir()
        (out / "mine.txt").write_text("keep")
        expect = [f"{out}: --out: the output folder exists already"]
    else:
        args = ["--format", "salicon", "--format", "mit1003", str(src), "--out", str(out)]
        expect = ["--format: 2 --format for 1 source folder(s)"]
    before = _unchanged(tmp_path)
    proc = convert(*args)
    assert proc.returncode == 2, proc.stderr
    for text in expect:
        assert text in proc.stderr, proc.stderr
    assert "Fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert _unchanged(tmp_path) == before                              # nothing half-written beside it
    if case == "out exists":
        assert _unchanged(out) == ["mine.txt"]


def test_a_conversion_that_fails_midway_removes_its_partial_folder(sources, tmp_path):
    """A .mat broken after the first images were linked: the partial folder goes with the error."""
    root, _ = sources
    src = tmp_path / "src"
    subprocess.run(["cp", "-r", str(root / "salicon"), str(src)], check=True)
    last = sorted((src / "fixations" / "val").iterdir())[-1]
    last.write_bytes(b"not a mat file")
    proc = convert("--format", "salicon", str(src), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and f"{last}: cannot read the .mat file" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
