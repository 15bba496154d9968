"""Datasets: synthesis, the seed layout and its errors, the cache, providers, augmentation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hypersal.data import cache, layout, synth
from hypersal.data.provider import (Augment, BatchProvider, InfiniteSampler, MultitaskBatchProvider,
                                    Prefetcher, augment, draw_augmentation, to_batch)
from hypersal.data.tasks import TASKS
from hypersal.errors import UserError

from helpers.cli import PYTHON, run, train

TWO = ["frequency_tuned", "center_bias"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synth.make(tmp_path_factory.mktemp("ds") / "d", n=12, size=(30, 40), tasks=TWO, workers=2, quiet=True)


def copy_dataset(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


# --- synth ------------------------------------------------------------------------------------------

def test_synth_writes_the_seed_layout(dataset):
    for split, count in {"train": 8, "val": 2, "test": 2, "run": 2}.items():
        assert len(list((dataset / "images" / split).glob("*.jpg"))) == count
    stems = {p.stem for p in (dataset / "images").rglob("*.jpg")}
    for task in TWO:
        assert {p.stem for p in (dataset / "maps" / task).glob("*.png")} == stems
    m = Image.open(dataset / "maps" / "center_bias" / "img_00000.png")
    assert m.mode == "L" and m.size == (40, 30)
    assert yaml.safe_load((dataset / "synth.yaml").read_text())["n"] == 12


def test_synth_is_deterministic_for_a_seed(tmp_path):
    a = synth.make(tmp_path / "a", n=4, size=(24, 32), tasks=["dog_contrast"], seed=3, workers=2, quiet=True)
    b = synth.make(tmp_path / "b", n=4, size=(24, 32), tasks=["dog_contrast"], seed=3, workers=1, quiet=True)
    c = synth.make(tmp_path / "c", n=4, size=(24, 32), tasks=["dog_contrast"], seed=4, workers=1, quiet=True)
    files = sorted(p.relative_to(a) for p in a.rglob("*.*") if p.suffix in (".jpg", ".png"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_synth_reuses_an_existing_dataset_and_refuses_a_foreign_folder(tmp_path, dataset):
    again = synth.make(dataset, n=12, size=(30, 40), tasks=TWO, quiet=True)
    assert again == dataset
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    with pytest.raises(UserError, match="holds something else"):
        synth.make(tmp_path / "busy", n=2, size=(8, 8), tasks=["center_bias"], quiet=True)


def test_jobs_that_start_together_generate_a_dataset_once(tmp_path):
    """Two jobs of a sweep asking for the same generated dataset at once: one generates it (its
    progress line says so), the other waits for it and uses it, generating nothing; the same for
    the cache of its decoded images and maps."""
    import subprocess
    code = ("import sys; from pathlib import Path; from hypersal.data import cache, layout, synth; "
            "d = synth.make(sys.argv[1], n=24, size=(48, 64), tasks=['dog_contrast', 'center_bias'], workers=1); "
            "cache.load_split(layout.scan(d / 'images', d / 'maps'), 'train', ['center_bias'], (32, 32), "
            "cache_dir=Path(sys.argv[1]).parent / 'cache')")
    procs = [subprocess.Popen([PYTHON, "-c", code, str(tmp_path / "d")], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    for what in ("synth 2 tasks", "caching train images", "caching train center_bias maps"):
        assert sorted(what in err for err in errs) == [False, True], errs
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", "cache", "d"]    # no half-made copy left
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")] == [".locks"]


def test_a_file_system_without_locks_still_generates_the_dataset(tmp_path, monkeypatch):
    """An NFS mount without a lock manager refuses flock (ENOLCK): the dataset is made unlocked
    (the rename at its end still keeps one copy). The file system cannot be had here, so flock
    is a stand-in that refuses and records the call."""
    import errno
    import fcntl
    calls = []

    def refuse(fd, op):
        calls.append(op)
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", refuse)
    out = synth.make(tmp_path / "d", n=4, size=(24, 32), tasks=["center_bias"], workers=1, quiet=True)
    assert (out / "synth.yaml").is_file() and calls == [fcntl.LOCK_EX]


def test_synth_from_source_images_centre_crops(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, (w, h) in enumerate([(100, 50), (40, 80), (64, 48)]):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(src / f"p{i}.png")
    out = synth.make(tmp_path / "out", n=10, size=(24, 32), tasks=["center_bias"], images=src, quiet=True)
    images = sorted(p for p in (out / "images").rglob("*.jpg") if "/run/" not in str(p))
    assert len(images) == 10 and all(Image.open(p).size == (32, 24) for p in images)
    # The three sources (flat colours 0, 40, 80) are among them, the rest are generated scenes.
    flat = [p for p in images if np.asarray(Image.open(p)).std() < 2]
    assert len(flat) == 3


def test_the_bundled_photos(tmp_path):
    from hypersal.data import photos
    paths = photos.write(tmp_path)
    assert [p.name for p in paths] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg",
                                       "motorcycle_left.jpg", "motorcycle_right.jpg"]
    assert Image.open(paths[0]).size == (512, 512)


def test_synth_cli_errors_exit_2(tmp_path):
    proc = run([PYTHON, "-m", "hypersal.data.synth", "--out", str(tmp_path / "x"), "--tasks", "aim", "--n", "2"])
    assert proc.returncode == 2 and "tasks: unknown saliency task 'aim'. Fix: use one of: boolean_map, center_bias" in proc.stderr
    proc = run([PYTHON, "-m", "hypersal.data.synth", "--out", str(tmp_path / "x"), "--size", "big"])
    assert proc.returncode == 2 and "expected HxW like 240x320" in proc.stderr


def test_every_task_gives_a_normalised_map():
    img = synth.scene(np.random.default_rng(0), 48, 64)
    for name in TASKS.names():
        m = TASKS.get(name)(img)
        assert m.shape == (48, 64) and m.dtype == np.float32 and m.min() == 0 and m.max() == pytest.approx(1)


# --- layout and cache errors --------------------------------------------------------------------------

def test_layout_errors_name_the_folder_and_the_fix(tmp_path, dataset):
    with pytest.raises(UserError, match="the image folder does not exist"):
        layout.scan(tmp_path / "nope", None)
    (tmp_path / "flat").mkdir()
    with pytest.raises(UserError, match=r"no split folders \(train/ val/ test/ run/\)"):
        layout.scan(tmp_path / "flat", None)
    with pytest.raises(UserError, match="no map folder for task\\(s\\) aim. Fix: the tasks found are: "
                                        "center_bias, frequency_tuned"):
        layout.scan(dataset / "images", dataset / "maps", ["aim"])
    index = layout.scan(dataset / "images", dataset / "maps")
    assert index.tasks == ["center_bias", "frequency_tuned"]
    with pytest.raises(UserError, match="no images in the 'nope' split"):
        index.split("nope")


def test_missing_maps_are_counted_and_named(tmp_path, dataset):
    d = copy_dataset(dataset, tmp_path / "d")
    for stem in ("img_00001", "img_00003", "img_00005", "img_00006"):
        (d / "maps" / "center_bias" / f"{stem}.png").unlink()
    index = layout.scan(d / "images", d / "maps")
    with pytest.raises(UserError) as e:
        index.map_files("train", "center_bias")
    assert str(e.value) == (f"{d / 'maps' / 'center_bias'}: 4 of 8 'train' images have no 'center_bias' map "
                            f"(first: img_00001, img_00003, img_00005). Fix: add <stem>.png maps for them to "
                            f"{d / 'maps' / 'center_bias'}, or remove those images; if each task has images "
                            f"of its own (datasets as tasks), set data.task_images: own.")


def test_mismatched_stems_are_missing_maps(tmp_path, dataset):
    d = copy_dataset(dataset, tmp_path / "d")
    for m in (d / "maps" / "frequency_tuned").glob("*.png"):
        m.rename(m.with_name("sal_" + m.name))
    with pytest.raises(UserError, match="8 of 8 'train' images have no 'frequency_tuned' map"):
        layout.scan(d / "images", d / "maps").map_files("train", "frequency_tuned")


def test_a_map_of_the_wrong_size_is_an_error(tmp_path, dataset):
    d = copy_dataset(dataset, tmp_path / "d")
    bad = d / "maps" / "center_bias" / "img_00002.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(bad)
    index = layout.scan(d / "images", d / "maps")
    with pytest.raises(UserError, match=r"img_00002.png: the map is 10x10 but its image is 40x30 \(width x height\)"):
        cache.load_split(index, "train", ["center_bias"], (16, 16), tmp_path / "cache", quiet=True)


def test_16_bit_and_rgb_maps_are_read(tmp_path):
    Image.fromarray((np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)).save(tmp_path / "m16.png")
    Image.fromarray(np.full((3, 4, 3), 200, np.uint8)).save(tmp_path / "rgb.png")
    assert cache.read_map(tmp_path / "m16.png").max() == 255
    assert (cache.read_map(tmp_path / "rgb.png") == 200).all()


def test_an_unreadable_image_is_named_or_skipped_when_asked(tmp_path, dataset, capsys):
    d = copy_dataset(dataset, tmp_path / "d")
    bad = d / "images" / "train" / "img_00004.jpg"
    bad.write_bytes(b"not a jpeg at all")
    index = layout.scan(d / "images", d / "maps")
    with pytest.raises(UserError, match=f"{bad}: cannot read the image"):
        cache.load_split(index, "train", ["center_bias"], (16, 16), tmp_path / "c1", quiet=True)
    arrays = cache.load_split(index, "train", ["center_bias"], (16, 16), tmp_path / "c2", quiet=True, skip_bad=True)
    assert len(arrays) == 7 and "img_00004" not in arrays.stems
    assert arrays.images.shape == (7, 16, 16, 3) and arrays.maps[0].shape == (7, 16, 16)
    assert "left out 1 unreadable image(s): img_00004.jpg" in capsys.readouterr().err


def test_empty_split_folder(tmp_path, dataset):
    d = copy_dataset(dataset, tmp_path / "d")
    for p in (d / "images" / "val").iterdir():
        p.unlink()
    with pytest.raises(UserError, match="no images in the 'val' split"):
        layout.scan(d / "images", d / "maps").split("val")


def entries(root: Path) -> int:
    """Cache entries, not their lock files (.locks)."""
    return sum(1 for p in root.iterdir() if p.name != ".locks")


def test_cache_is_reused_and_rebuilt_when_a_source_or_the_size_changes(tmp_path, dataset):
    d = copy_dataset(dataset, tmp_path / "d")
    root = tmp_path / "cache"
    index = layout.scan(d / "images", d / "maps")
    a = cache.load_split(index, "train", ["center_bias"], (16, 16), root, quiet=True)
    assert entries(root) == 2                                   # images + one task's maps
    cache.load_split(index, "train", ["center_bias", "frequency_tuned"], (16, 16), root, quiet=True)
    assert entries(root) == 3                                   # the images are reused
    cache.load_split(index, "train", ["center_bias"], (20, 16), root, quiet=True)
    assert entries(root) == 5                                   # another size
    img = d / "images" / "train" / "img_00000.jpg"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(img)
    b = cache.load_split(layout.scan(d / "images", d / "maps"), "train", ["center_bias"], (16, 16), root, quiet=True)
    assert b.images[0].max() == 0 and a.images[0].max() > 0                  # rebuilt from the new file
    assert np.array_equal(a.images[1:], b.images[1:])


# --- providers ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arrays(dataset, tmp_path_factory):
    index = layout.scan(dataset / "images", dataset / "maps")
    return cache.load_split(index, "train", TWO, (16, 16), tmp_path_factory.mktemp("cache"), quiet=True)


def test_infinite_sampler_is_a_permutation_per_epoch_readable_anywhere():
    s = InfiniteSampler(10, seed=1)
    stream = s.take(0, 30)
    for epoch in range(3):
        assert sorted(stream[epoch * 10:(epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    assert np.array_equal(s.take(7, 9), stream[7:16])                       # across an epoch boundary


def test_multitask_batches_are_functions_of_the_step(arrays):
    p = MultitaskBatchProvider(arrays, [5, 9], batch_size=4, batches_per_task=3, seed=2)
    tasks = [p.batch(s).task for s in range(12)]
    assert tasks[0:3] == [tasks[0]] * 3 and tasks[3:6] == [tasks[3]] * 3 and {tasks[0], tasks[3]} == {5, 9}
    assert sorted(tasks) == [5] * 6 + [9] * 6
    again = MultitaskBatchProvider(arrays, [5, 9], batch_size=4, batches_per_task=3, seed=2)
    for step in (0, 7, 11):
        a, b = p.batch(step), again.batch(step)
        assert torch.equal(a.images, b.images) and torch.equal(a.maps, b.maps) and a.task == b.task


def test_ranks_split_the_global_batch_with_the_same_augmentation(arrays):
    aug = Augment(hflip=0.5, crop_scale=(0.5, 1.0))
    whole = MultitaskBatchProvider(arrays, [0, 1], batch_size=4, seed=0, aug=aug)
    parts = [MultitaskBatchProvider(arrays, [0, 1], batch_size=4, seed=0, aug=aug, rank=r, world_size=2) for r in (0, 1)]
    for step in range(5):
        full = whole.batch(step)
        halves = [q.batch(step) for q in parts]
        assert all(h.task == full.task for h in halves)
        for r, half in enumerate(halves):   # rank r holds global samples r, r+2: same images, same flips
            assert np.array_equal(half.indices, full.indices[r::2])
            assert torch.equal(half.images, full.images[r::2]) and torch.equal(half.maps, full.maps[r::2])


def test_batches_have_the_expected_layout(arrays):
    b = BatchProvider(arrays, batch_size=3).batch(0)
    assert b.images.shape == (3, 3, 16, 16) and b.images.dtype == torch.uint8 and b.task == 0
    assert b.images.is_contiguous(memory_format=torch.channels_last)
    assert b.maps.shape == (3, 1, 16, 16)
    direct = to_batch(arrays, 0, np.array([2, 0, 1]), 0)
    assert torch.equal(direct.images[1], torch.from_numpy(np.array(arrays.images[0])).permute(2, 0, 1))


def test_augmentation_moves_image_and_map_together():
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    img[..., :, :2] = 255                                                    # a bright left edge
    from hypersal.data.provider import Batch
    b = Batch(task=0, images=img, maps=img[:, :1].clone(), indices=np.array([0]))
    flipped = augment(b, draw_augmentation(Augment(hflip=1.0), 1, 8, 8, np.random.default_rng(0)))
    assert flipped.images[0, 0, 0, -1] == 255 and flipped.maps[0, 0, 0, -1] == 255
    assert flipped.images[0, 0, 0, 0] == 0 and flipped.maps[0, 0, 0, 0] == 0
    cropped = augment(b, draw_augmentation(Augment(crop_scale=(0.25, 0.25)), 1, 8, 8, np.random.default_rng(1)))
    assert cropped.images.shape == img.shape
    assert torch.equal(cropped.images[:, :1], cropped.maps)                 # same crop for both


def test_prefetcher_gives_the_steps_in_order_and_passes_errors(arrays):
    p = MultitaskBatchProvider(arrays, [0, 1], batch_size=2, seed=0)
    pre = Prefetcher(p, 3, 8)
    for step in range(3, 8):
        assert torch.equal(pre.next().images, p.batch(step).images)
    pre.close()

    class Broken:
        def batch(self, step):
            raise UserError("disk gone")
    pre = Prefetcher(Broken(), 0, 5)
    with pytest.raises(UserError, match="disk gone"):
        pre.next()
    pre.close()


# --- end to end -----------------------------------------------------------------------------------------

def test_train_py_stops_with_the_missing_map_message(tmp_path, dataset):
    d = copy_dataset(dataset, tmp_path / "d")
    (d / "maps" / "frequency_tuned" / "img_00007.png").unlink()
    cfg = tmp_path / "run" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text(yaml.safe_dump({"comet": {"mode": "disabled"},
                                   "data": {"images_dir": str(d / "images"), "maps_dir": str(d / "maps"), "size": [16, 16]},
                                   "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2}}))
    proc = train("--config", str(cfg))
    assert proc.returncode == 2
    assert "1 of 8 'train' images have no 'frequency_tuned' map (first: img_00007)" in proc.stderr
    assert "failed" in (cfg.parent / "state.json").read_text()


def test_every_family_member_is_a_distinct_deterministic_map():
    """The parametric families (hypersal/data/families.py): 4 families of 8, each member a map in
    [0, 1] at the image's size, the same twice, and no two members the same map."""
    from hypersal.data import families
    from hypersal.data.synth import scene
    from hypersal.data.tasks import TASKS
    assert {f: len(m) for f, m in families.FAMILIES.items()} == {"frequency": 8, "contrast": 8, "region": 8, "prior": 8}
    img = scene(np.random.default_rng(3), 72, 96)
    maps = {}
    for fam, members in families.FAMILIES.items():
        for task in members:
            m = TASKS.get(task)(img)
            assert m.shape == (72, 96) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1, task
            assert np.array_equal(m, TASKS.get(task)(img)), task
            assert families.family_of(task) == fam
            maps[task] = m.ravel()
    names = list(maps)
    cc = np.corrcoef(np.stack([maps[n] for n in names]))
    twins = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names)) if cc[i, j] > 0.999]
    assert twins == []
    assert families.family_of("center_bias") is None and families.family_of("prior-9") is None


def test_family_members_make_a_dataset_and_their_overlap_is_measured(tmp_path):
    from hypersal.data import families, synth
    out = synth.make(tmp_path / "fam", n=6, size=(48, 64), tasks=["prior-2", "region-5"], quiet=True, workers=1)
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["prior-2", "region-5"]
    assert len(list((out / "maps" / "prior-2").iterdir())) == 6
    o = families.overlap(n=3, size=(48, 64))
    assert set(o["within"]) == set(families.FAMILIES) and len(o["across"]) == 6
    assert all(-1 <= v <= 1 for v in [*o["within"].values(), *o["across"].values()])
    assert o["within"]["prior"] > o["across"]["frequency/prior"]       # a family is more alike within
    a, b = o["closest_across"]["tasks"]
    assert families.family_of(a) != families.family_of(b)
