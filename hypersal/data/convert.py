"""Saliency benchmarks as their authors ship them, converted to hypersal's layout:

    python -m hypersal.data.convert --format salicon ~/data/SALICON --out ~/data/salicon
    python -m hypersal.data.convert --format salicon ~/data/SALICON --format mit1003 ~/data/MIT1003 \\
        --out ~/data/two                            # datasets as tasks (data.task_images: own)

What each format reads (checked against pysaliency's SALICON loader and public loaders of
MIT1003 and CAT2000):

| format  | images                          | maps                                   | fixations                              |
|---------|---------------------------------|----------------------------------------|----------------------------------------|
| salicon | images/{train,val,test}/*.jpg   | maps/{train,val}/<stem>.png            | fixations/{train,val}/<stem>.mat:      |
|         |                                 |                                        | `gaze` structs, each with `fixations`  |
|         |                                 |                                        | (N x 2, [x, y], 1-based); `resolution` |
| mit1003 | ALLSTIMULI/<stem>.jpeg          | ALLFIXATIONMAPS/<stem>_fixMap.jpg      | ALLFIXATIONMAPS/<stem>_fixPts.jpg      |
|         |                                 |                                        | (binary, JPEG-compressed: > 127)       |
| cat2000 | trainSet/Stimuli/<cat>/*.jpg    | trainSet/FIXATIONMAPS/<cat>/<stem>.jpg | trainSet/FIXATIONLOCS/<cat>/<stem>.mat:|
|         | (testSet/Stimuli: the run split)|                                        | `fixLocs`, binary H x W                |

Every image and map is decoded, every fixation file read and checked against its image
(hypersal/data/checks.py says what is checked) before the conversion is called done; a bad
file is an error naming it (exit status 2). What it writes, in one go (built beside --out and
renamed into place: a failed conversion leaves nothing):

    <out>/images/{train,val,test,run}/<stem>.<ext>   hard links to the sources (symlinks across
                                                     file systems; --copy to copy)
    <out>/maps/<task>/<stem>.<ext>                   likewise
    <out>/fixations/<task>/<stem>.png                binary fixation maps at the image's size
    <out>/manifest.json                              sources, counts per split, the split seed

Splits: SALICON's train stays train, its val is split in two (val, test) and its test images
(no maps) become the run split; MIT1003 and CAT2000's training set have no split: a seeded one
(--fractions, default 0.8 0.1 0.1; by category for CAT2000). One source: its task is named
after the format (`salicon`), stems unchanged (CAT2000's get their category: `Action_001`).
Several sources: each is a task of its own images, stems prefixed by the task
(`mit1003-i05june05...`); train with `data.task_images: own`.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hypersal.data import checks
from hypersal.data.layout import IMAGE_SUFFIXES, SPLITS
from hypersal.errors import UserError
from hypersal.progress import Progress

FORMATS = ("salicon", "mit1003", "cat2000")


@dataclass
class Item:
    stem: str                     # the name in hypersal's layout (without suffix)
    image: Path
    map: Path | None              # None: an image without a map (only in the run split)
    fixations: Path | None        # read by the format's FIXATIONS reader when written
    split: str | None             # None: drawn by the seeded split
    group: str = ""               # the split is drawn per group (CAT2000's categories)


def _need(path: Path, what: str, fmt: str) -> Path:
    """A folder of the layout."""
    if not path.is_dir():
        raise UserError(f"the {fmt} layout has {what} here, but it is "
                        f"{'not a folder' if os.path.lexists(path) else 'missing'}", file=path,
                        fix=f"point the source at the folder the {fmt} archive unpacks to "
                            f"(python -m hypersal.data.convert --help shows the layouts)")
    return path


def _images(folder: Path) -> list[Path]:
    """The images of a folder; hidden files (macOS's ._<name>.jpg beside each file copied from a
    Mac volume) are not images, a link to nothing is an error."""
    try:
        files = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    except OSError as e:
        raise UserError(f"cannot list the folder ({e.strerror})", file=folder, fix="make it readable") from None
    for p in files:
        checks.dangling(p)
    return [p for p in files if p.is_file()]


def _unmatched(fmt: str, missing: list[str], total: int, folder: Path, what: str) -> UserError:
    return UserError(f"{len(missing)} of {total} {fmt} images have no {what} (first: {', '.join(missing[:3])})",
                     file=folder, fix=f"add the missing {what} files, or remove those images from the source")


def read_mat(path: Path, source: str) -> tuple[dict, str]:
    """A .mat file's variables, and their names in words (for an error about what it holds)."""
    from scipy.io import loadmat
    try:
        mat = loadmat(path)
    except Exception as e:
        v73 = isinstance(e, NotImplementedError)      # scipy reads up to v7; v7.3 is HDF5
        raise UserError(f"cannot read the .mat file ({e.__class__.__name__}: {e})", file=path,
                        fix=("save it again as a v7 .mat (MATLAB: save(name, ..., '-v7')), or " if v73 else "")
                        + f"replace it with the file from {source}") from None
    return mat, ", ".join(k for k in mat if not k.startswith("__")) or "nothing"


# --- SALICON ------------------------------------------------------------------------------------

def salicon_fixations(path: Path, hw: tuple[int, int], image: Path) -> tuple[np.ndarray, int]:
    """The fixations of every observer of one image, as a binary map at its size, and the
    number of points off the image (dropped)."""
    mat, found = read_mat(path, "the SALICON archive")
    if "gaze" not in mat or "resolution" not in mat:
        raise UserError(f"a SALICON fixation file has `gaze` and `resolution`; this one has {found}", file=path,
                        fix="use the fixations/{train,val}/*.mat of SALICON (the 2015 or 2017 release)")
    checks.resolution(mat["resolution"], hw, path, image)     # before anything of that size is made
    gaze = np.asarray(mat["gaze"]).ravel()
    if gaze.dtype.names is None or "fixations" not in gaze.dtype.names:
        raise UserError("its `gaze` entries have no `fixations` field", file=path, key="gaze",
                        fix="use the fixations/{train,val}/*.mat of SALICON (the 2015 or 2017 release)")
    every = [checks.points(subject["fixations"], path, f"gaze[{i + 1}].fixations") for i, subject in enumerate(gaze)]
    return checks.points_mask(np.concatenate([np.zeros((0, 2)), *every]), hw, path)


def salicon(src: Path) -> list[Item]:
    items = []
    for split, ours in (("train", "train"), ("val", None), ("test", "run")):
        folder = _need(src / "images" / split, f"images/{split}/", "SALICON")
        for image in _images(folder):
            if split == "test":
                items.append(Item(image.stem, image, None, None, "run"))
                continue
            items.append(Item(image.stem, image, src / "maps" / split / f"{image.stem}.png",
                              src / "fixations" / split / f"{image.stem}.mat", ours, group=split))
        if split != "test":
            for kind, suffix in (("maps", ".png"), ("fixations", ".mat")):
                where = _need(src / kind / split, f"{kind}/{split}/", "SALICON")
                missing = [i.stem for i in items if i.group == split and not (where / f"{i.stem}{suffix}").is_file()]
                if missing:
                    raise _unmatched("SALICON", missing, sum(i.group == split for i in items), where, f"{kind[:-1]} file")
    return items


# --- MIT1003 ------------------------------------------------------------------------------------

def binary_image(path: Path, hw: tuple[int, int], image: Path) -> tuple[np.ndarray, int]:
    """A binary map saved as an image (JPEG noise included): pixels above half are fixations."""
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L"))
    except Exception as e:
        raise UserError(f"cannot read the fixation image ({e.__class__.__name__}: {e})", file=path,
                        fix="replace it with the file from the archive") from None
    return checks.binary(pixels > 127, hw, path, image, None, "MIT1003's ALLFIXATIONMAPS"), 0


def mit1003(src: Path) -> list[Item]:
    stimuli = _need(src / "ALLSTIMULI", "ALLSTIMULI/", "MIT1003")
    maps = _need(src / "ALLFIXATIONMAPS", "ALLFIXATIONMAPS/", "MIT1003")
    items, missing = [], []
    for image in _images(stimuli):
        fix_map, fix_pts = maps / f"{image.stem}_fixMap.jpg", maps / f"{image.stem}_fixPts.jpg"
        if not (fix_map.is_file() and fix_pts.is_file()):
            missing.append(image.stem)
            continue
        items.append(Item(image.stem, image, fix_map, fix_pts, None))
    if missing:
        raise _unmatched("MIT1003", missing, len(missing) + len(items), maps, "_fixMap.jpg and _fixPts.jpg")
    return items


# --- CAT2000 ------------------------------------------------------------------------------------

def cat2000_fixations(path: Path, hw: tuple[int, int], image: Path) -> tuple[np.ndarray, int]:
    mat, found = read_mat(path, "CAT2000's trainSet")
    locs = mat.get("fixLocs")
    if locs is None:
        raise UserError(f"a CAT2000 FIXATIONLOCS file holds `fixLocs`, a 2-D binary matrix; this one has {found}",
                        file=path, fix="use trainSet/FIXATIONLOCS/<category>/*.mat of CAT2000")
    return checks.binary(locs, hw, path, image, "fixLocs", "CAT2000's trainSet/FIXATIONLOCS"), 0


def cat2000(src: Path) -> list[Item]:
    train = _need(src / "trainSet" / "Stimuli", "trainSet/Stimuli/<category>/", "CAT2000")
    maps = _need(src / "trainSet" / "FIXATIONMAPS", "trainSet/FIXATIONMAPS/<category>/", "CAT2000")
    locs = _need(src / "trainSet" / "FIXATIONLOCS", "trainSet/FIXATIONLOCS/<category>/", "CAT2000")
    items, missing, total = [], [], 0
    categories = sorted(p for p in train.iterdir() if p.is_dir() and p.name != "Output")
    if not categories:
        raise UserError("no category folders", file=train, fix="CAT2000's trainSet/Stimuli holds one folder per category")
    for cat in categories:
        for image in _images(cat):
            total += 1
            fmap, floc = maps / cat.name / f"{image.stem}.jpg", locs / cat.name / f"{image.stem}.mat"
            if not (fmap.is_file() and floc.is_file()):
                missing.append(f"{cat.name}/{image.stem}")
                continue
            items.append(Item(f"{cat.name}_{image.stem}", image, fmap, floc, None, group=cat.name))
    if missing:
        raise _unmatched("CAT2000", missing, total, maps, "FIXATIONMAPS .jpg and FIXATIONLOCS .mat")
    test = src / "testSet" / "Stimuli"
    if test.is_dir():
        for cat in sorted(p for p in test.iterdir() if p.is_dir() and p.name != "Output"):
            items += [Item(f"{cat.name}_{image.stem}", image, None, None, "run") for image in _images(cat)]
    return items


READERS = {"salicon": salicon, "mit1003": mit1003, "cat2000": cat2000}
# (fixation file, image's (H, W), image) -> (bool (H, W), points off the image dropped)
FIXATIONS = {"salicon": salicon_fixations, "mit1003": binary_image, "cat2000": cat2000_fixations}
SOURCES = {"salicon": "the SALICON archive", "mit1003": "the MIT1003 archive", "cat2000": "the CAT2000 archive"}


# --- splitting and writing ----------------------------------------------------------------------

def assign_splits(items: list[Item], fractions: tuple[float, float, float], seed: int, fmt: str) -> None:
    """Draw train/val/test for the items without a split, per group, seeded. SALICON's val
    (group "val", split None) goes half to val, half to test."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[Item]] = {}
    for item in items:
        if item.split is None:
            groups.setdefault(item.group, []).append(item)
    for group, members in sorted(groups.items()):
        order = rng.permutation(len(members))
        if fmt == "salicon":
            cuts = [0, (len(members) + 1) // 2, len(members)]
            names = ("val", "test")
        else:   # at least one image in val and in test wherever there are three
            n = len(members)
            n_val, n_test = (max(1, int(round(f * n))) if n >= 3 else 0 for f in fractions[1:])
            cuts = [0, n - n_val - n_test, n - n_test, n]
            names = ("train", "val", "test")
        for name, lo, hi in zip(names, cuts, cuts[1:]):
            for i in order[lo:hi]:
                members[i].split = name


def place(src: Path, dst: Path, how: str) -> str:
    """dst as a hard link to src (a symlink across file systems), or a copy: what was done."""
    if how == "copy":
        shutil.copy2(src, dst)
        return "copy"
    try:
        os.link(src, dst)
        return "hard"
    except OSError:
        os.symlink(src.resolve(), dst)
        return "symbolic"


def write_png(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, optimize=True)


MAX_BAD = 10   # bad files named in one error; the conversion stops at the tenth


def convert(sources: list[tuple[str, Path]], out: Path, fractions=(0.8, 0.1, 0.1), seed: int = 0,
            copy: bool = False, quiet: bool = False) -> dict:
    out = Path(out).absolute()
    checks.out_folder(out)
    _options(fractions, seed)
    several = len(sources) > 1
    tasks = [fmt for fmt, _ in sources]
    if len(set(tasks)) != len(tasks):
        raise UserError(f"a format is given twice ({', '.join(tasks)})", key="--format",
                        fix="each source is one task, named by its format: give each format once")
    plan = []
    for fmt, src in sources:
        src = Path(src).expanduser().absolute()
        if not src.is_dir():
            raise UserError(f"the source folder {'is not a folder' if os.path.lexists(src) else 'does not exist'}",
                            file=src, fix=f"the folder the {fmt} archive unpacks to")
        items = READERS[fmt](src)
        if not any(i.map for i in items):
            raise UserError(f"no {fmt} image with a map", file=src, fix="check the source folder")
        checks.unique_stems(items)
        for path in (p for i in items for p in (i.image, i.map, i.fixations) if p is not None):
            checks.inside(path, src)
        assign_splits(items, fractions, seed, fmt)
        if several:
            for item in items:
                item.stem = f"{fmt}-{item.stem}"
        plan.append((fmt, src, items))
    tmp, made = out.parent / f".{out.name}.partial-{os.getpid()}", []
    try:
        checks.make_parents(out.parent, made)
        shutil.rmtree(tmp, ignore_errors=True)
        manifest = _write(plan, tmp, "copy" if copy else "link", quiet)
        manifest.update(split_seed=seed, fractions=list(fractions), task_images="own" if several else "all",
                        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        os.rename(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(made):      # the parents of --out this call made
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(e, OSError):         # a full disk, a read-only one, an unreadable source with --copy
            full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)   # the output's fault: name it
            where = (e.filename2 if full and e.filename2 else e.filename) or tmp
            where = str(where).replace(str(tmp), str(out), 1)                # the name the user gave
            raise UserError(f"the conversion failed here: {e.strerror or e}", file=where, key="--out",
                            fix="make the sources readable, and give --out a writable disk with room for the "
                                "dataset (nothing was written)") from None
        raise
    return manifest


def _options(fractions, seed: int) -> None:
    if not all(math.isfinite(f) and f >= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"the split fractions {list(fractions)} must be >= 0 and sum to 1", key="--fractions",
                        fix="e.g. --fractions 0.8 0.1 0.1")
    if seed < 0:
        raise UserError(f"the split seed {seed} is negative", key="--seed",
                        fix="give a whole number >= 0, e.g. --seed 0")


def _write(plan, root: Path, how: str, quiet: bool) -> dict:
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True)
    sources, links, bad = [], set(), []
    total = sum(len(items) for _, _, items in plan)
    progress = None if quiet else Progress(total, "converting", unit="img")
    for fmt, src, items in plan:
        (root / "maps" / fmt).mkdir(parents=True)
        (root / "fixations" / fmt).mkdir(parents=True)
        counts: dict[str, int] = {}
        dropped = 0
        for item in items:
            counts[item.split] = counts.get(item.split, 0) + 1
            try:   # after a bad file only check the rest: the folder goes with the error
                dropped += _item(item, fmt, root, how, links, write=not bad)
            except UserError as e:
                bad.append(e)
                if len(bad) == MAX_BAD:
                    raise _bad_files(bad, stopped=True) from None
            if progress:
                progress.update()
        counts = {s: counts[s] for s in SPLITS if s in counts}
        sources.append({"format": fmt, "task": fmt, "path": str(src), "counts": counts,
                        "with_fixations": sum(i.fixations is not None for i in items),
                        "fixations_off_image": dropped})
    if bad:
        raise _bad_files(bad)
    return {"sources": sources, "files": sorted(links)}


def _item(item: Item, fmt: str, root: Path, how: str, links: set, write: bool) -> int:
    """Check one image, its map and its fixations, then write them: the fixations dropped."""
    hw = checks.decoded_size(item.image, "image", SOURCES[fmt])
    if item.map is not None:
        checks.same_size(checks.decoded_size(item.map, "map", SOURCES[fmt]), hw, item.map, "map", item.image)
    mask, dropped = (None, 0) if item.fixations is None else FIXATIONS[fmt](item.fixations, hw, item.image)
    if write:
        links.add(place(item.image, root / "images" / item.split / f"{item.stem}{item.image.suffix}", how))
        if item.map is not None:
            links.add(place(item.map, root / "maps" / fmt / f"{item.stem}{item.map.suffix}", how))
        if mask is not None:
            write_png(mask, root / "fixations" / fmt / f"{item.stem}.png")
    return dropped


def _bad_files(bad: list[UserError], stopped: bool = False) -> UserError:
    """The first bad file's error, naming the others."""
    first = bad[0]
    if len(bad) == 1:
        return first
    others = ", ".join(str(e.file) for e in bad[1:4]) + (", ..." if len(bad) > 4 else "")
    return UserError(f"{first.message}; {len(bad) - 1}{' or more' if stopped else ''} other source file(s) "
                     f"cannot be converted either ({others})", file=first.file, key=first.key, fix=first.fix)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hypersal.data.convert",
                                description="Convert SALICON, MIT1003 or CAT2000 to hypersal's layout.",
                                epilog=__doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", action="append", choices=FORMATS, required=True,
                   help="the benchmark of the source that follows (repeat for several: datasets as tasks)")
    p.add_argument("source", nargs="+", type=Path, help="the folder each benchmark unpacks to, in --format order")
    p.add_argument("--out", type=Path, required=True, help="the new dataset folder (must not exist)")
    p.add_argument("--fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"),
                   help="the seeded split where the benchmark has none (default 0.8 0.1 0.1)")
    p.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    p.add_argument("--copy", action="store_true", help="copy images and maps instead of linking them")
    args = p.parse_intermixed_args(argv)   # --format A SRC_A --format B SRC_B
    try:
        if len(args.format) != len(args.source):
            raise UserError(f"{len(args.format)} --format for {len(args.source)} source folder(s)", key="--format",
                            fix="give one --format before each source: --format salicon DIR1 --format mit1003 DIR2")
        manifest = convert(list(zip(args.format, args.source)), args.out, tuple(args.fractions), args.seed, args.copy)
    except UserError as e:
        print(f"hypersal: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nhypersal: interrupted: nothing was written", file=sys.stderr)
        return 130
    for source in manifest["sources"]:
        counts = ", ".join(f"{n} {split}" for split, n in sorted(source["counts"].items()))
        off = source["fixations_off_image"]
        print(f"hypersal: {source['format']}: {counts} ({source['with_fixations']} with fixations"
              + (f"; {off} fixations off their image left out" if off else "") + ")", file=sys.stderr)
    images = args.out.absolute() / "images"
    how = {"hard": "hard-linked", "symbolic": "symlinked", "copy": "copied"}
    print(f"hypersal: wrote {args.out.absolute()} (images and maps {' and '.join(how[f] for f in manifest['files'])}). "
          "Train on it with:\n"
          f"  data: {{images_dir: {images}, maps_dir: {args.out.absolute() / 'maps'}, "
          f"fixations_dir: {args.out.absolute() / 'fixations'}"
          + (", task_images: own}" if manifest["task_images"] == "own" else "}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
