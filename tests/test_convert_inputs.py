"""Bad benchmark input to `python -m hypersal.data.convert`: images that do not decode, maps and
fixations of another size than their image, links out of the source, odd SALICON `resolution`
fields and fixation arrays, two images of one stem, an --out that cannot be made, empty sources.
Each is exit status 2 with the file named, never a traceback, and nothing written (the whole
tmp_path tree, source included, is unchanged). Small generated copies of the real layouts
(tests/helpers/benchmarks.py), converted in-process by convert.main (the CLI's own entry point;
one case through a subprocess, as a user types it)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from helpers import disk
from helpers import benchmarks
from helpers.cli import PYTHON, ROOT
from hypersal.data import convert

H, W = benchmarks.H, benchmarks.W
SIZE = f"{W}x{H} (width x height)"
NAMES = {"salicon": "SALICON", "mit1003": "MIT1003", "cat2000": "CAT2000"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("made")
    benchmarks.salicon(root / "salicon", n={"train": 3, "val": 2, "test": 1})
    benchmarks.mit1003(root / "mit1003", n=4)
    benchmarks.cat2000(root / "cat2000", categories=("Action",), per_category=3)
    return root


@pytest.fixture
def src(made, tmp_path):
    """src("salicon"): a fresh copy of that benchmark in tmp_path/src."""
    def copy(fmt: str):
        shutil.copytree(made / fmt, tmp_path / "src", symlinks=True)
        return tmp_path / "src"
    return copy


def tree(root) -> list[str]:
    """Every path under root (links not followed), with the size of each file."""
    out = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            out.append(f"{os.path.relpath(p, root)} {os.lstat(p).st_size if name in files else ''}")
    return sorted(out)


def refused(capsys, tmp_path, fmt: str, source, out=None, *extra: str) -> str:
    """Convert; assert exit status 2, one error paragraph with a fix, nothing written."""
    out = out or tmp_path / "out"
    existed, before = os.path.lexists(out), tree(tmp_path)
    rc = convert.main(["--format", fmt, str(source), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("hypersal: error: ") == 1 and "Fix: " in err and "Traceback" not in err, err
    assert os.path.lexists(out) == existed and tree(tmp_path) == before, err
    return err


def converts(capsys, fmt: str, source, out) -> str:
    rc = convert.main(["--format", fmt, str(source), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    return err


def first(folder, pattern="*"):
    return sorted(folder.glob(pattern))[0]


def gaze_mat(path, observers: list, resolution=(H, W)) -> None:
    """A SALICON fixation file: one `gaze` struct per observer, `fixations` as given."""
    gaze = np.zeros((len(observers), 1), dtype=[("location", "O"), ("timestamp", "O"), ("fixations", "O")])
    for s, pts in enumerate(observers):
        gaze[s, 0]["fixations"], gaze[s, 0]["location"], gaze[s, 0]["timestamp"] = pts, pts, np.zeros((0, 1))
    savemat(path, {"image": path.stem, "resolution": np.asarray(resolution), "gaze": gaze})


# --- images and maps that do not decode -----------------------------------------------------------

@pytest.mark.parametrize("case", ["text file as image", "truncated jpeg", "empty image file", "text file as map",
                                  "truncated png map", "text file in the run split"])
def test_an_image_or_map_that_does_not_decode_is_named(capsys, tmp_path, src, case):
    fmt = {"truncated jpeg": "mit1003", "empty image file": "cat2000"}.get(case, "salicon")
    root = src(fmt)
    victim = {"text file as image": lambda: first(root / "images" / "train"),
              "truncated jpeg": lambda: first(root / "ALLSTIMULI"),
              "empty image file": lambda: first(root / "trainSet" / "Stimuli" / "Action"),
              "text file as map": lambda: first(root / "maps" / "val"),
              "truncated png map": lambda: first(root / "maps" / "train"),
              "text file in the run split": lambda: first(root / "images" / "test")}[case]()
    data = victim.read_bytes()
    victim.write_bytes({"truncated jpeg": data[:len(data) // 2], "truncated png map": data[:len(data) // 2],
                        "empty image file": b""}.get(case, b"a caption, not a picture\n"))
    err = refused(capsys, tmp_path, fmt, root)
    what = "map" if "map" in case else "image"
    why = "OSError: image file is truncated" if "truncated" in case else "UnidentifiedImageError: cannot identify"
    assert f"{victim}: cannot decode the {what} ({why}" in err, err
    assert f"Fix: replace it with the file from the {NAMES[fmt]} archive" in err


def test_hidden_files_beside_the_images_are_not_images(capsys, tmp_path, src):
    """macOS leaves ._<name>.jpg beside each file copied from a Mac volume: not images, skipped."""
    root = src("salicon")
    (root / "images" / "train" / f"._{first(root / 'images' / 'train').name}").write_bytes(b"\x00\x05\x16\x07")
    converts(capsys, "salicon", root, tmp_path / "out")
    assert len(list((tmp_path / "out" / "images" / "train").iterdir())) == 3


def test_a_map_of_another_size_than_its_image_is_refused(capsys, tmp_path, src):
    root = src("mit1003")
    image = first(root / "ALLSTIMULI")
    fix_map = root / "ALLFIXATIONMAPS" / f"{image.stem}_fixMap.jpg"
    Image.open(fix_map).resize((W // 2, H // 2)).save(fix_map)
    err = refused(capsys, tmp_path, "mit1003", root)
    assert (f"{fix_map}: the map is {W // 2}x{H // 2} (width x height) but its image {image.name} is {SIZE}. "
            f"Fix: use the map that belongs to {image.name}: it has its size.") in err


# --- fixations of another size, bad `resolution` --------------------------------------------------

@pytest.mark.parametrize("fmt", ["salicon", "mit1003", "cat2000"])
def test_fixations_of_another_size_than_their_image_are_refused(capsys, tmp_path, src, fmt):
    root = src(fmt)
    small = f"{W // 2}x{H // 2} (width x height)"
    if fmt == "salicon":
        image = first(root / "images" / "val")
        victim = root / "fixations" / "val" / f"{image.stem}.mat"
        gaze_mat(victim, [np.array([[3.0, 4.0]])], resolution=(H // 2, W // 2))
        expect = f"{victim}: resolution: the fixation file is {small} but its image {image.name} is {SIZE}"
    elif fmt == "mit1003":
        image = first(root / "ALLSTIMULI")
        victim = root / "ALLFIXATIONMAPS" / f"{image.stem}_fixPts.jpg"
        Image.open(victim).resize((W // 2, H // 2)).save(victim)
        expect = f"{victim}: the fixation map is {small} but its image {image.name} is {SIZE}"
    else:
        image = first(root / "trainSet" / "Stimuli" / "Action")
        victim = root / "trainSet" / "FIXATIONLOCS" / "Action" / f"{image.stem}.mat"
        savemat(victim, {"fixLocs": np.ones((H // 2, W // 2))})
        expect = f"{victim}: fixLocs: the fixation map is {small} but its image {image.name} is {SIZE}"
    assert expect in refused(capsys, tmp_path, fmt, root)


@pytest.mark.parametrize("value, expect", [
    ("480x640", "is ['480x640'] (<U7), not [height, width]"),
    ([H, W, 3], f"is [{H}, {W}, 3] (int64), not [height, width]"),
    ([0, W], f"is [0, {W}] (int64): not two positive whole numbers"),
    ([-H, W], f"is [-{H}, {W}] (int64): not two positive whole numbers"),
    ([np.nan, W], f"is [nan, {W}.0] (float64): not two positive whole numbers"),
    ([H + 0.5, W], f"is [{H}.5, {W}.0] (float64): not two positive whole numbers"),
    ([W, H], f"the fixation file is {H}x{W} (width x height) but its image"),            # [W, H]: swapped
    ([10 ** 9, 10 ** 9], "the fixation file is 1000000000x1000000000 (width x height) but its image"),
])
def test_a_bad_salicon_resolution_is_refused_naming_the_field(capsys, tmp_path, src, value, expect):
    root = src("salicon")
    victim = first(root / "fixations" / "train")
    mat = loadmat(victim)
    savemat(victim, {"image": mat["image"], "gaze": mat["gaze"], "resolution": np.asarray(value)})
    err = refused(capsys, tmp_path, "salicon", root)
    assert f"{victim}: resolution: {expect}" in err, err


def test_a_resolution_written_as_a_column_is_read(capsys, tmp_path, src):
    root = src("salicon")
    victim = first(root / "fixations" / "train")
    mat = loadmat(victim)
    savemat(victim, {"image": mat["image"], "gaze": mat["gaze"], "resolution": np.array([[H], [W]])})
    converts(capsys, "salicon", root, tmp_path / "out")


# --- fixation arrays ------------------------------------------------------------------------------

PTS = np.array([[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]])


@pytest.mark.parametrize("observers, expect", [
    ([np.ones((4, 3))], "gaze[1].fixations: is 4 x 3, not N x 2 ([x, y] per fixation)"),
    ([PTS, np.ones((2, 5))], "gaze[2].fixations: is 2 x 5, not N x 2 ([x, y] per fixation)"),    # transposed
    ([np.ones((2, 2, 2))], "gaze[1].fixations: is 2 x 2 x 2, not N x 2"),
    ([np.array(["ab", "cd"])], "gaze[1].fixations: holds ['ab', 'cd'] (<U2), not numbers"),
    ([PTS * (1 + 1j)], "gaze[1].fixations: holds [(5+5j), (6+6j), (7+7j), (8+8j), ...] (complex128), not numbers"),
    ([np.array([PTS, PTS], dtype=object)], "gaze[1].fixations: holds [array([[5.]]), array([[6.]]), array("),  # cells
    ([np.array([[3.0, 4.0], [np.nan, 2.0]])], "gaze[1].fixations: fixation 2 is [nan, 2.0], not a point"),
    ([np.array([[np.inf, 2.0]])], "gaze[1].fixations: fixation 1 is [inf, 2.0], not a point"),
    ([-PTS], f"gaze: 3 of its 3 fixations lie outside its {SIZE} image (first: [x, y] = [-5.0, -6.0])"),
    ([PTS + [W, 0]], f"gaze: 3 of its 3 fixations lie outside its {SIZE} image (first: [x, y] = [69.0, 6.0])"),
    ([PTS[:1], PTS[1:] - 20], "gaze: 2 of its 3 fixations lie outside"),                        # most of them
    ([PTS[:, ::-1] * 8], "gaze: 2 of its 3 fixations lie outside"),                            # [y, x], scaled
    ([np.zeros((0, 2)), np.zeros((0, 0))], "gaze: it holds no fixation"),
    ([], "gaze: it holds no fixation"),                                                        # no observer
])
def test_odd_salicon_fixation_arrays_are_refused_naming_the_observer(capsys, tmp_path, src, observers, expect):
    root = src("salicon")
    victim = sorted((root / "fixations" / "val").iterdir())[1]
    gaze_mat(victim, observers)
    err = refused(capsys, tmp_path, "salicon", root)
    assert f"{victim}: {expect}" in err, err


@pytest.mark.parametrize("case", ["gaze without fixations", "matlab v7.3"])
def test_a_salicon_fixation_file_of_another_structure_is_refused(capsys, tmp_path, src, case):
    root = src("salicon")
    victim = first(root / "fixations" / "train")
    if case == "matlab v7.3":                         # HDF5 inside: scipy cannot read it
        victim.write_bytes(b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8) + b"\x00\x02IM" + bytes(512))
        expect = (f"{victim}: cannot read the .mat file (NotImplementedError: Please use HDF reader for matlab "
                  "v7.3 files, e.g. h5py). Fix: save it again as a v7 .mat (MATLAB: save(name, ..., '-v7')), or "
                  "replace it with the file from the SALICON archive.")
    else:
        savemat(victim, {"resolution": np.array([H, W]), "gaze": np.ones((3, 1))})
        expect = f"{victim}: gaze: its `gaze` entries have no `fixations` field"
    assert expect in refused(capsys, tmp_path, "salicon", root)


def test_a_fixation_just_off_the_image_is_left_out_and_counted(capsys, tmp_path, src):
    """SALICON 2017 has a few (x = 641 on 640-pixel images): dropped, said, kept in the manifest;
    an observer without fixations is no error either."""
    root = src("salicon")
    victim = first(root / "fixations" / "train")
    gaze_mat(victim, [PTS, np.zeros((0, 0)), np.array([[W + 1.0, 3.0], [4.0, 2.0]])])
    out = tmp_path / "out"
    err = converts(capsys, "salicon", root, out)
    assert "(5 with fixations; 1 fixations off their image left out)" in err, err
    assert json.loads((out / "manifest.json").read_text())["sources"][0]["fixations_off_image"] == 1
    mask = np.asarray(Image.open(out / "fixations" / "salicon" / f"{victim.stem}.png")) > 0
    assert set(zip(*np.nonzero(mask))) == {(5, 4), (7, 6), (9, 8), (1, 3)}     # (y, x), 0-based


@pytest.mark.parametrize("locs, expect", [
    (np.ones((H, W, 3)),
     "fixLocs: the fixations are [1.0, 1.0, 1.0, 1.0, ...] (float64), 3-D: not a binary H x W matrix"),
    ("fixations", "fixLocs: the fixations are ['fixations'] (<U9), 1-D: not a binary H x W matrix"),
    (np.full((H, W), 1 + 1j), "fixLocs: the fixations are [(1+1j), (1+1j), (1+1j), (1+1j), ...] (complex128), 2-D"),
    (np.where(np.eye(H, W) > 0, np.nan, 0.0), "fixLocs: the fixations hold nan: a binary matrix holds 0 and 1"),
    (-np.eye(H, W), "fixLocs: the fixations hold -1.0: a binary matrix holds 0 and 1"),
    (np.zeros((H, W)), "fixLocs: it holds no fixation"),
    (np.eye(W, H), "fixLocs: the fixation map is 48x64 (width x height) but its image"),     # transposed
])
def test_odd_cat2000_fixation_matrices_are_refused(capsys, tmp_path, src, locs, expect):
    root = src("cat2000")
    victim = sorted((root / "trainSet" / "FIXATIONLOCS" / "Action").iterdir())[2]
    savemat(victim, {"fixLocs": locs})
    err = refused(capsys, tmp_path, "cat2000", root)
    assert f"{victim}: {expect}" in err, err


def test_a_black_mit1003_fixation_image_holds_no_fixation(capsys, tmp_path, src):
    root = src("mit1003")
    victim = first(root / "ALLFIXATIONMAPS", "*_fixPts.jpg")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(victim)
    assert (f"{victim}: it holds no fixation. Fix: use the file of this image from MIT1003's ALLFIXATIONMAPS, "
            "or remove the image.") in refused(capsys, tmp_path, "mit1003", root)


# --- links ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["image", "map", "fixation file", "linked folder"])
def test_a_link_out_of_the_source_is_refused_naming_it(capsys, tmp_path, src, case):
    root = src("salicon" if case != "map" else "mit1003")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if case == "linked folder":                       # images/test moved out, linked back in
        shutil.move(root / "images" / "test", elsewhere / "test")
        (root / "images" / "test").symlink_to(elsewhere / "test")
        link, target = first(root / "images" / "test"), first(elsewhere / "test")
    else:
        link = {"image": lambda: first(root / "images" / "train"),
                "map": lambda: first(root / "ALLFIXATIONMAPS", "*_fixMap.jpg"),
                "fixation file": lambda: first(root / "fixations" / "val")}[case]()
        target = elsewhere / link.name
        shutil.move(link, target)
        link.symlink_to(target)
    err = refused(capsys, tmp_path, "salicon" if case != "map" else "mit1003", root)
    assert (f"{link}: it leads out of the source folder {root}, to {target}. Fix: copy the file into the "
            "source folder, or convert the folder that holds it.") in err, err


def test_a_link_to_nothing_is_named(capsys, tmp_path, src):
    root = src("cat2000")
    link = first(root / "trainSet" / "Stimuli" / "Action")
    link.unlink()
    link.symlink_to(tmp_path / "gone.jpg")
    err = refused(capsys, tmp_path, "cat2000", root)
    assert f"{link}: a link to {tmp_path / 'gone.jpg'}, which does not exist" in err, err


def test_links_inside_the_source_and_a_linked_source_folder_convert(capsys, tmp_path, src):
    root = src("mit1003")
    image = first(root / "ALLSTIMULI")
    moved = root / "originals" / image.name
    moved.parent.mkdir()
    shutil.move(image, moved)
    image.symlink_to(os.path.relpath(moved, image.parent))          # a relative link, inside the source
    (tmp_path / "linked").symlink_to(root)                           # the source itself reached by a link
    converts(capsys, "mit1003", tmp_path / "linked", tmp_path / "out")
    assert sum(1 for s in ("train", "val", "test") for _ in (tmp_path / "out" / "images" / s).iterdir()) == 4


# --- two images of one stem -----------------------------------------------------------------------

@pytest.mark.parametrize("case", ["jpg and png in one folder", "in two splits", "jpeg and jpg"])
def test_two_images_of_one_stem_are_refused_naming_both(capsys, tmp_path, src, case):
    fmt = "mit1003" if case == "jpeg and jpg" else "salicon"
    root = src(fmt)
    if case == "jpg and png in one folder":
        one = first(root / "images" / "train")
        two = one.with_suffix(".png")
        Image.open(one).save(two)
    elif case == "in two splits":                  # a train image again in val, with its map and fixations
        one = first(root / "images" / "train")
        two = root / "images" / "val" / one.name
        for kind, suffix in (("images", ".jpg"), ("maps", ".png"), ("fixations", ".mat")):
            shutil.copy(root / kind / "train" / f"{one.stem}{suffix}", root / kind / "val")
    else:
        one = first(root / "ALLSTIMULI")
        two = one.with_suffix(".jpg")
        shutil.copy(one, two)
    err = refused(capsys, tmp_path, fmt, root)
    assert f"{two}: this image and {one} have one name, '{one.stem}'. Fix: remove or rename one of them" in err, err


# --- --out, options, empty sources ----------------------------------------------------------------

@pytest.mark.parametrize("case", ["under a file", "deep under a file", "a file", "a link to nothing",
                                  "under a link to nothing"])
def test_an_out_that_cannot_be_made_is_refused(capsys, tmp_path, src, case):
    root = src("mit1003")
    blocker = tmp_path / "notes.txt"
    if "link to nothing" in case:
        blocker.symlink_to(tmp_path / "nowhere")
    else:
        blocker.write_text("mine")
    out = {"under a file": blocker / "out", "deep under a file": blocker / "a" / "b" / "out",
           "under a link to nothing": blocker / "out"}.get(case, blocker)
    err = refused(capsys, tmp_path, "mit1003", root, out)
    if out == blocker:
        assert f"{blocker}: --out: the output folder exists already" in err, err
    else:
        assert f"{blocker}: --out: it is not a folder, so --out {out} cannot be made under it" in err, err
    assert blocker.is_symlink() or blocker.read_text() == "mine"


def test_the_folders_made_above_out_go_with_a_failure_and_stay_on_success(capsys, tmp_path, src):
    root = src("mit1003")
    out = tmp_path / "new" / "deeper" / "out"
    image = first(root / "ALLSTIMULI")
    good = image.read_bytes()
    image.write_bytes(good[:100])
    assert f"{image}: cannot decode the image" in refused(capsys, tmp_path, "mit1003", root, out)
    image.write_bytes(good)
    converts(capsys, "mit1003", root, out)
    assert (out / "manifest.json").is_file() and sorted(p.name for p in out.parent.iterdir()) == ["out"]


@pytest.mark.parametrize("fmt, missing", [("salicon", "images/train/"), ("mit1003", "ALLSTIMULI/"),
                                          ("cat2000", "trainSet/Stimuli/<category>/")])
def test_an_empty_source_folder_names_what_the_layout_misses(capsys, tmp_path, fmt, missing):
    root = tmp_path / "src"
    root.mkdir()
    where = root / missing.split("<")[0].rstrip("/")
    err = refused(capsys, tmp_path, fmt, root)
    assert f"{where}: the {NAMES[fmt]} layout has {missing} here, but it is missing" in err, err


@pytest.mark.parametrize("fmt", ["salicon", "mit1003", "cat2000"])
def test_a_layout_without_images_is_refused(capsys, tmp_path, src, fmt):
    root = src(fmt)
    images = {"salicon": "images/*/*.jpg", "mit1003": "ALLSTIMULI/*.jpeg", "cat2000": "*Set/Stimuli/*/*.jpg"}[fmt]
    for image in root.glob(images):
        image.unlink()
    assert f"{root}: no {fmt} image with a map" in refused(capsys, tmp_path, fmt, root)


def test_a_layout_folder_that_is_a_file_is_refused(capsys, tmp_path, src):
    root = src("salicon")
    shutil.rmtree(root / "maps" / "val")
    (root / "maps" / "val").write_text("not a folder")
    assert (f"{root / 'maps' / 'val'}: the SALICON layout has maps/val/ here, but it is not a folder"
            in refused(capsys, tmp_path, "salicon", root))


@pytest.mark.parametrize("extra, expect", [
    (["--fractions", "nan", "0.5", "0.5"],
     "--fractions: the split fractions [nan, 0.5, 0.5] must be >= 0 and sum to 1"),
    (["--fractions", "inf", "0", "0"], "--fractions: the split fractions [inf, 0.0, 0.0] must be >= 0"),
    (["--seed", "-1"], "--seed: the split seed -1 is negative"),
])
def test_options_that_would_end_in_a_traceback_are_refused(capsys, tmp_path, src, extra, expect):
    root = src("mit1003")
    assert expect in refused(capsys, tmp_path, "mit1003", root, None, *extra)


# --- several bad files, the real CLI, Ctrl-C, a disk that refuses ---------------------------------

def test_several_bad_files_are_counted_and_named_and_the_tenth_stops_it(capsys, tmp_path, src):
    root = src("mit1003")
    bad = sorted((root / "ALLSTIMULI").iterdir())[:3]
    for image in bad:
        image.write_text("not a picture")
    err = refused(capsys, tmp_path, "mit1003", root)
    assert f"{bad[0]}: cannot decode the image" in err
    assert f"; 2 other source file(s) cannot be converted either ({bad[1]}, {bad[2]})" in err, err
    for i in range(4, 12):                                  # 11 bad files: it stops at the tenth
        shutil.copy(bad[0], root / "ALLSTIMULI" / f"extra{i:02d}.jpeg")
        for kind in ("fixMap", "fixPts"):
            shutil.copy(next((root / "ALLFIXATIONMAPS").glob(f"*_{kind}.jpg")),
                        root / "ALLFIXATIONMAPS" / f"extra{i:02d}_{kind}.jpg")
    err = refused(capsys, tmp_path, "mit1003", root)
    assert "; 9 or more other source file(s) cannot be converted either (" in err and ", ...)" in err, err


def test_the_command_line_says_it_in_one_paragraph_exit_2(tmp_path, src):
    root = src("salicon")
    victim = first(root / "images" / "val")
    victim.write_text("not a picture")
    proc = subprocess.run([PYTHON, "-m", "hypersal.data.convert", "--format", "salicon", str(root),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line == (f"hypersal: error: {victim}: cannot decode the image (UnidentifiedImageError: cannot identify "
                    f"image file '{victim}'). Fix: replace it with the file from the SALICON archive, or remove it "
                    "(with its map and fixations).")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_ctrl_c_midway_leaves_nothing(capsys, tmp_path, src, monkeypatch):
    """A real SIGINT, sent while the third image's fixations are read (the partial folder then
    holds two images): exit 130, one line, nothing left."""
    root = src("mit1003")
    read, seen = convert.FIXATIONS["mit1003"], []

    def read_then_interrupt(path, hw, image):
        seen.append((path.name, sorted(p.name for p in tmp_path.iterdir())))
        if len(seen) == 3:
            signal.raise_signal(signal.SIGINT)
        return read(path, hw, image)
    monkeypatch.setitem(convert.FIXATIONS, "mit1003", read_then_interrupt)
    before = tree(tmp_path)
    # Ctrl-C as a fresh `python` takes it (KeyboardInterrupt): in one CI run (2026-12-03) this xdist
    # process let the signal pass (rc 0; the cause not found), so the test sets it and says what it found
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rc = convert.main(["--format", "mit1003", str(root), "--out", str(tmp_path / "out")])
    finally:
        signal.signal(signal.SIGINT, found)
    err = capsys.readouterr().err
    assert rc == 130 and err.endswith("hypersal: interrupted: nothing was written\n") and "Traceback" not in err, \
        (rc, len(seen), found, err)
    assert len(seen) == 3 and seen[2][1] == [f".out.partial-{os.getpid()}", "src"]
    assert tree(tmp_path) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: a real disk that fills or turns read-only."""
    with disk.tmpfs(tmp_path / "disk", 4) as folder:
        yield folder


@pytest.mark.parametrize("case", ["read-only", "full"])
def test_a_disk_that_refuses_the_output_is_said_and_left_clean(capsys, tmp_path, src, small_disk, case):
    root = src("mit1003")
    if case == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        expect = f"{small_disk / 'out'}: --out: the conversion failed here: Read-only file system"
    else:
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        with open(small_disk / "filler", "wb") as f:
            f.write(b"\0" * (free - 4096))
        expect = f"hypersal: error: {small_disk / 'out'}/"       # a file of the output, not the source it copies
    err = refused(capsys, tmp_path, "mit1003", root, small_disk / "out", "--copy")
    assert expect in err and "Fix: make the sources readable, and give --out a writable disk" in err, err
    if case == "full":
        assert ": --out: the conversion failed here: No space left on device." in err, err
    assert sorted(p.name for p in small_disk.iterdir()) == ([] if case == "read-only" else ["filler"])
