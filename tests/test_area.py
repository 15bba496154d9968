"""hypersal.data.area: OpenCV's INTER_AREA shrink in torch, bit for bit (the run stage's resize on
the device, issue 24), on random images of the sizes a run folder holds, 3 channels and 1; and
the sizes OpenCV takes another path for are refused, not resized differently."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hypersal.data import area

SHRINKS = [((480, 640), (256, 256)), ((1080, 1920), (256, 256)), ((37, 53), (32, 32)), ((300, 200), (48, 64)),
           ((512, 640), (256, 256)),         # a whole scale one way (2) and not the other (2.5)
           ((768, 1024), (256, 320)), ((481, 641), (256, 256)), ((256, 300), (256, 256)), ((100, 100), (99, 37)),
           ((7, 9), (3, 4))]


@pytest.mark.parametrize("src, dst", SHRINKS, ids=[f"{s[0]}x{s[1]}-to-{d[0]}x{d[1]}" for s, d in SHRINKS])
def test_the_area_shrink_is_opencvs_bit_for_bit(src, dst):
    rng = np.random.default_rng(sum(src) + sum(dst))
    for channels in (3, 1):
        images = rng.integers(0, 256, (2, *src, channels), dtype=np.uint8)
        images[1] = np.clip(images[1] // 2 + 64 + rng.integers(-3, 4, images[1].shape), 0, 255)  # a smoother one
        got = area.resize(torch.from_numpy(images), dst).numpy()
        want = np.stack([cv2.resize(im, dst[::-1], interpolation=cv2.INTER_AREA).reshape(*dst, channels)
                         for im in images])
        assert got.dtype == np.uint8 and np.array_equal(got, want), (src, dst, channels, np.abs(got.astype(int) - want).max())


@pytest.mark.parametrize("src, dst", [((512, 512), (256, 256)), ((768, 1024), (256, 256)),   # whole scales: resizeAreaFast
                                      ((200, 300), (256, 256)), ((300, 200), (256, 256)),    # enlarging: INTER_LINEAR
                                      ((48, 64), (48, 64))])                                 # the same size
def test_sizes_opencv_resizes_another_way_have_no_plan_and_are_refused(src, dst):
    assert area.plan(src, dst) is None
    with pytest.raises(ValueError, match="not OpenCV's generic area path"):
        area.resize(torch.zeros((1, *src, 3), dtype=torch.uint8), dst)


def test_only_uint8_batches_are_taken():
    with pytest.raises(ValueError, match=r"uint8 \(N, H, W, C\)"):
        area.resize(torch.zeros((48, 64, 3), dtype=torch.uint8), (32, 32))
    with pytest.raises(ValueError, match=r"uint8 \(N, H, W, C\)"):
        area.resize(torch.zeros((1, 48, 64, 3)), (32, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (the CPU path is tested above)")
def test_on_a_gpu_the_area_shrink_is_opencvs_bit_for_bit():
    rng = np.random.default_rng(7)
    for src, dst in SHRINKS:
        images = rng.integers(0, 256, (3, *src, 3), dtype=np.uint8)
        got = area.resize(torch.from_numpy(images).cuda(), dst).cpu().numpy()
        want = np.stack([cv2.resize(im, dst[::-1], interpolation=cv2.INTER_AREA) for im in images])
        assert np.array_equal(got, want), (src, dst)
