"""The run stage's maps made where the model ran (issue 24): on the CPU by OpenCV as before
(runio.stretched, the pixels of tests/test_run_speed_path.py); on a GPU by torch's kernels
(runio.stretched_groups), run here on CPU tensors, which must stay within 1 grey level of the
host's on every pixel: downsampled, upsampled, the training size itself, a constant map and one
of a tiny range, images of several sizes in one batch."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hypersal.stages import runio


def batch(rng: np.random.Generator, n: int, hw: tuple[int, int]) -> np.ndarray:
    """Smooth sigmoid maps like a model's, then a constant one and one of a tiny range."""
    maps = []
    for _ in range(n):
        blur = cv2.GaussianBlur(rng.random(hw).astype(np.float32), (0, 0), hw[0] / 8)
        maps.append(1 / (1 + np.exp(-(blur - blur.mean()) * 40)))
    maps += [np.full(hw, 0.25, np.float32), (0.5 + 1e-4 * rng.random(hw)).astype(np.float32)]
    return np.stack(maps).astype(np.float32)


def test_the_devices_maps_are_the_hosts_within_one_grey_level():
    rng = np.random.default_rng(0)
    probs = batch(rng, 4, (48, 64))
    sizes = [(480, 640), (37, 53), (48, 64), (480, 640), (300, 200), (480, 640)]
    device = runio.stretched_on_device(torch.from_numpy(probs), sizes)
    for i, (p, hw) in enumerate(zip(probs, sizes)):
        want = runio.stretched(p, hw)
        got = device[i].numpy()
        assert got.dtype == np.uint8 and got.shape == want.shape == hw, i
        assert np.abs(got.astype(int) - want).max() <= 1, (i, hw)
        if i < 4:        # the smooth maps: rounding, not another grid (the tiny range amplifies it)
            assert (got != want).mean() < 0.01, (i, hw)
    assert not device[4].any()                          # the constant map: 0, as the host's
    assert device[5].min() == 0 and device[5].max() == 255


def test_the_maps_come_back_in_the_batchs_order():
    sizes = [(8, 8), (4, 6), (8, 8), (2, 2), (4, 6)]
    assert runio.by_size(sizes) == [((8, 8), [0, 2]), ((4, 6), [1, 4]), ((2, 2), [3])]
    probs = torch.stack([torch.full((4, 4), float(i)) + torch.linspace(0, 1, 16).view(4, 4) for i in range(5)])
    probs[3] = 7.0                                      # constant
    maps = runio.stretched_on_device(probs, sizes)
    assert [tuple(m.shape) for m in maps] == sizes
    for i in (0, 1, 2, 4):                              # each stretched by its own range: the same picture
        assert maps[i].min() == 0 and maps[i].max() == 255
    assert torch.equal(maps[0], maps[2]) and not maps[3].any()


def test_on_the_cpu_the_maps_are_the_hosts_exactly():
    rng = np.random.default_rng(1)
    probs = batch(rng, 2, (32, 32))
    sizes = [(64, 80), (20, 20), (32, 32), (33, 31)]
    got, overlays = runio.maps(torch.from_numpy(probs), sizes)
    assert overlays == [None] * 4                       # none staged: the host blends them all
    for g, p, hw in zip(got, probs, sizes):
        assert isinstance(g, np.ndarray) and np.array_equal(runio.as_array(g), runio.stretched(p, hw))


def test_the_devices_overlay_is_todays_formula_and_the_hosts_within_one_grey_level():
    """blended_on_device (run.resize: device) against the float formula of d008416 and the host's
    fixed-point blend, every pair of map value and pixel value."""
    from hypersal.evaluation import viz
    values = np.arange(256, dtype=np.uint8)
    u8 = np.repeat(values[:, None], 256, axis=1)                   # map value by row
    image = np.repeat(values[None, :, None], 3, axis=2).repeat(256, axis=0).copy()   # pixel value by column
    image[..., 1] = image[..., 1][:, ::-1]                          # the channels differ
    weight = (u8.astype(np.float32) / 255.0)[..., None] * 0.55
    colour = viz.INFERNO_RGB.reshape(256, 3)[:, ::-1][u8]          # BGR
    want = (image * (1 - weight) + colour * weight).astype(np.uint8)
    got = runio.blended_on_device(torch.from_numpy(image)[None], torch.from_numpy(u8)[None])[0].numpy()
    assert got.dtype == np.uint8 and np.array_equal(got, want)
    assert np.abs(got.astype(int) - viz.blend_bgr(image, u8, bgr=True)).max() <= 1


def test_staged_images_come_back_blended_in_their_rows():
    rng = np.random.default_rng(2)
    probs = torch.from_numpy(batch(rng, 1, (16, 16)))              # a smooth map, a constant, a tiny range
    sizes = [(40, 30), (40, 30), (20, 20)]
    images = torch.from_numpy(rng.integers(0, 256, (2, 40, 30, 3), dtype=np.uint8))
    maps, overlays = runio.maps(probs, sizes, staged=[([0, 1], images)])
    assert overlays[2] is None
    for row in (0, 1):
        want = runio.blended_on_device(images[row:row + 1], torch.from_numpy(maps[row])[None])[0]
        assert torch.equal(overlays[row], want) and overlays[row].shape == (40, 30, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (the CPU path is tested above)")
def test_on_a_gpu_maps_and_overlays_are_the_hosts_within_one_grey_level():
    from hypersal.evaluation import viz
    rng = np.random.default_rng(3)
    probs = batch(rng, 4, (64, 64))
    sizes = [(480, 640)] * 3 + [(300, 200)] * 3
    images = torch.from_numpy(rng.integers(0, 256, (3, 480, 640, 3), dtype=np.uint8))
    maps, overlays = runio.maps(torch.from_numpy(probs).cuda(), sizes, staged=[([0, 1, 2], images.cuda())])
    torch.cuda.synchronize()
    for i, (p, hw) in enumerate(zip(probs, sizes)):
        got = runio.as_array(maps[i])
        assert np.abs(got.astype(int) - runio.stretched(p, hw)).max() <= 1, i
        if i < 3:
            host = viz.blend_bgr(images[i].numpy(), got, bgr=True)
            assert np.abs(runio.as_array(overlays[i]).astype(int) - host).max() <= 1, i
        else:
            assert overlays[i] is None
