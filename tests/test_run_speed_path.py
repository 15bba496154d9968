"""The run stage's maps stay today's pixel for pixel while its decode, post-processing and PNG
writing get cheaper (issue 24): every map decoded from its PNG equals the one the code of commit
d008416 writes, every overlay is within 1 grey level of that code's, on generated images of
several sizes and kinds (JPEGs from cv2 and PIL, progressive, 4:4:4, grey, EXIF-rotated, CMYK;
PNGs RGBA, palette, 16-bit), and through the real stage with a real model."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hypersal import config as config_mod
from hypersal.data import area, decode, synth
from hypersal.data.cache import read_image, resize
from hypersal.errors import UserError
from hypersal.evaluation import viz
from hypersal.runfolder import RunFolder
from hypersal.runner.job import Job
from hypersal.stages import run as run_stage, runio
from hypersal.tracking import Tracker
from hypersal.train.steps import Precision, images_to_input


# --- The reference: today's code, verbatim as of commit d008416 -------------------------------
# (hypersal/evaluation/viz.py: to_uint8, colorize, overlay; hypersal/stages/run.py: PNG, JPEG,
# load, write). Kept here so the new code is compared with what the stage wrote before it.

REF_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]      # fast; PNG stays lossless
REF_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 90]


def ref_to_uint8(m: np.ndarray) -> np.ndarray:
    """A saliency map (any range) as uint8 (H, W), stretched to 0..255 (a constant map is 0)."""
    m = np.asarray(m, dtype=np.float32)
    lo, hi = float(m.min()), float(m.max())
    return np.zeros(m.shape, np.uint8) if hi <= lo else ((m - lo) / (hi - lo) * 255 + 0.5).astype(np.uint8)


def ref_colorize(m: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W, 3) RGB with the inferno colour map."""
    return cv2.applyColorMap(ref_to_uint8(m), cv2.COLORMAP_INFERNO)[..., ::-1]


def ref_overlay(image: np.ndarray, m: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The colour map over the image, resized to it; weight `alpha` where the map is high."""
    h, w = image.shape[:2]
    m = cv2.resize(np.asarray(m, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    weight = (ref_to_uint8(m).astype(np.float32) / 255.0)[..., None] * alpha
    return (image * (1 - weight) + ref_colorize(m) * weight).astype(np.uint8)


def ref_load(path: Path, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(image at the training size, the original image)."""
    image = read_image(path)
    return resize(image, hw), image


def ref_write(prob: np.ndarray, image: np.ndarray, stem: str, task_dir: Path, overlay: bool) -> None:
    h, w = image.shape[:2]
    m = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(task_dir / f"{stem}.png"), ref_to_uint8(m), REF_PNG)
    if overlay:
        cv2.imwrite(str(task_dir / "overlays" / f"{stem}.jpg"), ref_overlay(image, m)[..., ::-1], REF_JPEG)

# --- end of the reference ---------------------------------------------------------------------


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A generated scene with sensor-like noise (RGB uint8): JPEG has detail to code."""
    scene = synth.scene(rng, h, w).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    return np.clip(scene, 0, 255).astype(np.uint8)


def exif_rotated(img: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6      # Orientation: rotate 90 degrees to show (neither decoder applies it)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def save_pil(img: np.ndarray, path: Path, mode: str | None = None, **kw) -> Path:
    im = Image.fromarray(img)
    (im.convert(mode) if mode else im).save(path, **kw)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Images of the kinds a run folder holds, 480x640 JPEGs first."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(24)
    big = [photo(rng, 480, 640) for _ in range(3)]
    cv2.imwrite(str(folder / "cv2_480x640.jpg"), cv2.cvtColor(big[0], cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    paths = [folder / "cv2_480x640.jpg",
             save_pil(big[1], folder / "pil_480x640.jpg", quality=90),
             save_pil(big[2], folder / "pil_480x640_progressive_444.jpeg", quality=85, progressive=True,
                      subsampling=0),
             save_pil(photo(rng, 37, 53), folder / "odd_37x53.jpg", quality=90),
             save_pil(photo(rng, 300, 200), folder / "grey_300x200.jpg", "L", quality=90),
             save_pil(photo(rng, 60, 80), folder / "cmyk_60x80.jpg", "CMYK", quality=90),
             save_pil(photo(rng, 20, 30), folder / "rgba_20x30.png", "RGBA"),
             save_pil(photo(rng, 64, 48), folder / "palette_64x48.png", "P")]
    (folder / "exif_120x160.jpg").write_bytes(exif_rotated(photo(rng, 120, 160)))
    grey16 = (rng.random((50, 70)) * 65535).astype(np.uint16)
    cv2.imwrite(str(folder / "grey16_50x70.png"), grey16)
    return paths + [folder / "exif_120x160.jpg", folder / "grey16_50x70.png"]


def probability_maps(rng: np.random.Generator, hw: tuple[int, int]) -> list[np.ndarray]:
    """Smooth maps like a model's sigmoid output, a constant one and one of a tiny range."""
    smooth = cv2.GaussianBlur(rng.random(hw).astype(np.float32), (0, 0), hw[0] / 10)
    smooth = 1 / (1 + np.exp(-(smooth - smooth.mean()) * 40))
    return [smooth.astype(np.float32), np.full(hw, 0.25, np.float32),
            (0.5 + 1e-4 * rng.random(hw)).astype(np.float32)]


def decoded(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("hw", [(256, 256), (48, 64)], ids=["256x256", "48x64"])
def test_an_image_loads_as_today(images, hw):
    for path in images:
        small, shape, image, whole = runio.load(path, hw, keep=True)      # for an overlay: the original in BGR
        ref_small, ref_image = ref_load(path, hw)
        assert image.dtype == np.uint8 and small.shape == (*hw, 3), path.name
        assert np.array_equal(small, ref_small), path.name
        assert np.array_equal(image, ref_image[..., ::-1]) and shape == ref_image.shape[:2], path.name
        assert np.array_equal(decode.read_bgr(path), ref_image[..., ::-1]), path.name
        assert whole is None, path.name                               # resized here, nothing left for the device
        small, shape, image, whole = runio.load(path, hw, keep=False)      # maps only: the size, not the image
        assert image is None is whole and shape == ref_image.shape[:2] and np.array_equal(small, ref_small), path.name
        # run.resize: device: what OpenCV shrinks by its generic area path is left whole, in BGR
        small, shape, image, whole = runio.load(path, hw, keep=False, defer=True)
        if area.plan(shape, hw) is None:
            assert np.array_equal(small, ref_small) and whole is None, path.name
        else:
            assert small is None and np.array_equal(whole, ref_image[..., ::-1]), path.name
            small = area.resize(torch.from_numpy(whole[None]), hw)[0].flip(-1).numpy()
            assert np.array_equal(small, ref_small), path.name        # the device's resize: the same pixels


def test_an_image_loads_into_its_batch_row_as_alone(images):
    """The stage resizes each image straight into its row of the batch's array: the same pixels
    as alone, that row and no other written; a row of the wrong shape is refused."""
    hw = (48, 64)
    batch = np.zeros((len(images) + 1, *hw, 3), np.uint8)
    for i, path in enumerate(images):
        small = runio.load(path, hw, keep=False, out=batch[i])[0]
        assert np.shares_memory(small, batch[i]) and np.array_equal(batch[i], runio.load(path, hw, keep=False)[0])
    assert not batch[-1].any()
    original = read_image(images[0])
    same_size = original.shape[:2]                                   # no resize: copied into the row
    for keep in (False, True):
        row = np.zeros((*same_size, 3), np.uint8)
        assert np.array_equal(runio.load(images[0], same_size, keep=keep, out=row)[0], original) and row.any()
    small, _, bgr, _ = runio.load(images[0], same_size, keep=True)      # alone: the small one is not the original
    assert np.array_equal(small, original) and np.array_equal(bgr, original[..., ::-1])
    with pytest.raises(ValueError, match="out is uint8"):
        runio.load(images[0], hw, keep=False, out=np.zeros((*hw, 4), np.uint8))


@pytest.mark.parametrize("hw", [(256, 256), (48, 64)], ids=["256x256", "48x64"])
def test_maps_are_todays_pixel_for_pixel_and_overlays_within_one_grey_level(images, tmp_path, hw):
    rng = np.random.default_rng(1)
    new, ref, bare = tmp_path / "new", tmp_path / "ref", tmp_path / "bare"
    for folder in (new, ref, bare):
        (folder / "overlays").mkdir(parents=True)
    for path in images:
        image = read_image(path)
        for k, prob in enumerate(probability_maps(rng, hw)):
            stem = f"{path.stem}_{k}"
            u8 = runio.stretched(prob, image.shape[:2])
            runio.write(u8, np.ascontiguousarray(image[..., ::-1]), stem, new)
            ref_write(prob, image, stem, ref, overlay=True)
            got, want = decoded(new / f"{stem}.png"), decoded(ref / f"{stem}.png")
            assert got.dtype == np.uint8 and np.array_equal(got, want), stem
            runio.write(u8, None, stem, bare)      # maps only: no image, no overlay
            assert np.array_equal(decoded(bare / f"{stem}.png"), want), stem
            m = cv2.resize(prob, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
            over = viz.overlay(image, m)
            assert over.dtype == np.uint8 and over.shape == image.shape
            assert np.abs(over.astype(int) - ref_overlay(image, m)).max() <= 1, stem
            # The JPEG written is that overlay's, at today's quality.
            jpeg = cv2.imencode(".jpg", cv2.cvtColor(over, cv2.COLOR_RGB2BGR), REF_JPEG)[1].tobytes()
            assert (new / "overlays" / f"{stem}.jpg").read_bytes() == jpeg, stem
    assert sorted(p.name for p in new.rglob("*")) == sorted(p.name for p in ref.rglob("*"))
    assert not any((bare / "overlays").iterdir())


def test_the_other_pictures_keep_todays_colours():
    """The test stage's grid uses to_uint8, colorize and overlay at the training size."""
    rng = np.random.default_rng(2)
    image = photo(rng, 48, 64)
    for prob in probability_maps(rng, (48, 64)) + [np.linspace(-3, 7, 48 * 64).reshape(48, 64)]:
        assert np.array_equal(viz.to_uint8(prob), ref_to_uint8(prob))
        assert np.array_equal(viz.colorize(prob), ref_colorize(prob))
        assert np.abs(viz.overlay(image, prob).astype(int) - ref_overlay(image, prob)).max() <= 1


@pytest.mark.parametrize("data", [b"", b"not an image at all", "truncated"], ids=["empty", "garbage", "truncated"])
def test_an_unreadable_image_is_the_error_of_today(images, tmp_path, data):
    path = tmp_path / "bad.jpg"
    path.write_bytes(images[1].read_bytes()[:3000] if data == "truncated" else data)
    with pytest.raises(UserError) as want:
        ref_load(path, (32, 32))
    with pytest.raises(UserError) as got:
        runio.load(path, (32, 32), keep=True)
    assert got.value.render() == want.value.render()
    assert "cannot read the image" in got.value.render()


# --- Through the real stage -------------------------------------------------------------------

TINY_MODEL = {"encoder": {"cutoff": 7}, "hypernet": {"hidden": [16], "chunk_size": 1024}}


def stage_job(folder: Path, images_dir: Path, overlay: bool, batch_size: int, resize: str = "auto") -> Job:
    """A real Job (config read and checked as train.py reads it) with a freshly built model."""
    folder.mkdir(parents=True)
    cfg = {"pipeline": ["run"], "comet": {"mode": "disabled"}, "model": TINY_MODEL,
           "data": {"size": [48, 64]},
           "run": {"images_dir": str(images_dir), "out_dir": str(folder / "maps"), "batch_size": batch_size,
                   "overlay": overlay, "workers": 2, "resize": resize}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_folder = RunFolder(folder)
    job = Job(cfg=config_mod.load(folder / "config.yaml"), folder=run_folder,
              tracker=Tracker(run_folder, {"mode": "disabled"}, {}), device=torch.device("cpu"))
    torch.manual_seed(0)
    job.model = job.new_model(["center_bias", "spectral_residual"])
    return job


def reference_stage(job: Job, files: list[Path], out: Path) -> dict:
    """Today's stage loop (d008416) with the reference load and write, serially; returns the
    probabilities it wrote the maps of, by (task, stem)."""
    cfg, model = job.cfg.run, job.model
    hw, precision = tuple(job.cfg.data.size), Precision(job.cfg.train.precision)
    model.eval()
    written = {}
    for i in range(0, len(files), cfg.batch_size):
        batch = files[i:i + cfg.batch_size]
        items = [ref_load(p, hw) for p in batch]
        small = torch.from_numpy(np.stack([s for s, _ in items])).permute(0, 3, 1, 2)
        x = images_to_input(small, job.device)
        with torch.no_grad():
            for task in model.task_names:
                index = model.task_index(task)
                with precision.autocast(job.device):
                    probs = torch.sigmoid(model(x, task=index).float())[:, 0].cpu().numpy()
                (out / task / "overlays" if cfg.overlay else out / task).mkdir(parents=True, exist_ok=True)
                for k, p in enumerate(batch):
                    ref_write(probs[k], items[k][1], p.stem, out / task, cfg.overlay)
                    written[task, p.stem] = probs[k]
    return written


@pytest.mark.parametrize("overlay, resize", [(True, "auto"), (False, "auto"), (True, "device"), (False, "device")],
                         ids=["overlays", "maps-only", "overlays-resized-on-the-device", "maps-only-resized-on-the-device"])
def test_the_stage_writes_todays_maps(images, tmp_path, monkeypatch, overlay, resize):
    """Today's maps, with the images shrunk on the host or (run.resize: device, the GPU's way,
    here on the CPU) by hypersal.data.area where the model runs."""
    resized = []                 # what the device was asked to resize (the real function runs)
    real = area.resize
    monkeypatch.setattr(area, "resize", lambda im, hw: resized.append(tuple(im.shape)) or real(im, hw))
    images_dir = (tmp_path / "images") if resize == "device" else images[0].parent
    if resize == "device":       # two images of one size in a batch: the device resizes them together
        images_dir.mkdir()
        for path in images:
            (images_dir / path.name).write_bytes(path.read_bytes())
        exif = images_dir / "exif_120x160.jpg"
        (images_dir / "exif_120x160_b.jpg").write_bytes(exif.read_bytes())      # batch 1: cmyk, cv2, exif, exif_b
    job = stage_job(tmp_path / "run", images_dir, overlay, batch_size=4, resize=resize)
    result = run_stage.run(job)
    files = sorted(images_dir.iterdir())
    assert result["images"] == len(files) == (11 if resize == "device" else 10)
    assert result["tasks"] == ["center_bias", "spectral_residual"]
    # On the device, the sizes OpenCV shrinks by its generic area path: the two 120x160 images of
    # the first batch at once; on the host, 480x640 (a whole scale, 10, to 48x64) and the enlarged.
    assert resized == ([(1, 60, 80, 3), (2, 120, 160, 3), (1, 50, 70, 3), (1, 300, 200, 3)]
                       if resize == "device" else []), resized
    ref = tmp_path / "ref"
    probs = reference_stage(job, files, ref)
    maps = Path(result["out_dir"])
    for task in result["tasks"]:
        for path in files:
            got, want = decoded(maps / task / f"{path.stem}.png"), decoded(ref / task / f"{path.stem}.png")
            assert got.shape == read_image(path).shape[:2] and np.array_equal(got, want), (task, path.name)
            jpg = maps / task / "overlays" / f"{path.stem}.jpg"
            assert jpg.is_file() == overlay
        names = sorted(p.relative_to(maps / task) for p in (maps / task).rglob("*"))
        assert names == sorted(p.relative_to(ref / task) for p in (ref / task).rglob("*"))
        for path in files:
            if overlay:   # the overlay written is a JPEG of pixels within 1 grey level of today's
                image = read_image(path)
                m = cv2.resize(probs[task, path.stem], image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
                over = viz.overlay(image, m)
                if resize == "device" and area.plan(image.shape[:2], (48, 64)):      # blended where it was resized
                    bgr = torch.from_numpy(np.ascontiguousarray(image[None, ..., ::-1]))
                    u8 = torch.from_numpy(viz.to_uint8(m))[None]
                    over = runio.blended_on_device(bgr, u8)[0].flip(-1).numpy()
                assert np.abs(over.astype(int) - ref_overlay(image, m)).max() <= 1, (task, path.name)
                jpeg = cv2.imencode(".jpg", cv2.cvtColor(over, cv2.COLOR_RGB2BGR), REF_JPEG)[1].tobytes()
                assert (maps / task / "overlays" / f"{path.stem}.jpg").read_bytes() == jpeg, (task, path.name)


def test_plain_jpegs_take_the_fast_decoder_and_the_rest_pil(images):
    """The fast path is the one measured (not every file falling back to PIL)."""
    fast = {p.name for p in images if decode.plain_jpeg(p.read_bytes())}
    assert fast == {"cv2_480x640.jpg", "pil_480x640.jpg", "pil_480x640_progressive_444.jpeg", "odd_37x53.jpg",
                    "grey_300x200.jpg", "exif_120x160.jpg"}
    whole = images[0].read_bytes()
    assert not decode.plain_jpeg(whole[:-100]) and not decode.plain_jpeg(whole + b"\0")


def test_the_cpu_input_is_images_to_input_bit_for_bit():
    rng = np.random.default_rng(3)
    inputs = runio.Inputs(torch.device("cpu"))
    for n in (5, 2, 5):      # a full batch, the last one (the buffer's first rows), a full one again
        small = rng.integers(0, 256, (n, 48, 64, 3), dtype=np.uint8)
        want = images_to_input(torch.from_numpy(small).permute(0, 3, 1, 2), torch.device("cpu"))
        got = inputs(small)
        assert torch.equal(got, want) and got.stride() == want.stride() and got.dtype == torch.float32


def test_a_full_disk_stops_the_stage_naming_the_map(images, tmp_path):
    """Writing a map into a full device (/dev/full) is an error naming it; cv2.imwrite, used
    before, returned True there and the stage ended as if its maps were written."""
    job = stage_job(tmp_path / "run", images[0].parent, overlay=False, batch_size=4)
    full = tmp_path / "run" / "maps" / "center_bias" / "odd_37x53.png"
    full.parent.mkdir(parents=True)
    full.symlink_to("/dev/full")
    with pytest.raises(UserError) as e:
        run_stage.run(job)
    assert e.value.render() == (f"{full}: run.out_dir: cannot write the map (No space left on device). "
                                "Fix: free space on that disk or point run.out_dir at another, then run again.")
