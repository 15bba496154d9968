"""The run stage's overlay in 16-bit fixed point (viz.blend_bgr) stays within 1 grey level of the
numpy formula of commit d008416, for every pair of map value and pixel value in every channel,
and the RGB blend the test stage's grids use is the same picture."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from hypersal.evaluation import viz


def ref_blend(image: np.ndarray, u8: np.ndarray, alpha: float) -> np.ndarray:
    """d008416's overlay of a uint8 map (hypersal/evaluation/viz.py: overlay after to_uint8), RGB."""
    weight = (u8.astype(np.float32) / 255.0)[..., None] * alpha
    colour = cv2.applyColorMap(u8, cv2.COLORMAP_INFERNO)[..., ::-1]
    return (image * (1 - weight) + colour * weight).astype(np.uint8)


def every_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 256x256 map whose row is its value, over an image whose column is its value (all channels)."""
    values = np.arange(256, dtype=np.uint8)
    u8 = np.repeat(values[:, None], 256, axis=1)
    return np.repeat(np.tile(values, (256, 1))[..., None], 3, axis=2), u8


@pytest.mark.parametrize("alpha", [0.55, 0.3, 1.0])
def test_every_map_value_over_every_pixel_value_is_within_one_grey_level(alpha):
    image, u8 = every_pair()
    got = viz.blend_bgr(image, u8, alpha)
    want = ref_blend(image, u8, alpha)[..., ::-1]
    diff = got.astype(int) - want
    assert got.dtype == np.uint8 and got.shape == image.shape
    assert diff.min() >= -1 and diff.max() <= 1
    assert (diff == 0).mean() > 0.5       # mostly the very value: the change is rounding, not a shift


def test_the_rgb_blend_is_the_bgr_one_reversed():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    u8 = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    assert np.array_equal(viz.blend(image, u8), viz.blend_bgr(image, u8)[..., ::-1])
    # An image already in BGR (the run stage decodes an overlay's so) gives the same picture.
    assert np.array_equal(viz.blend_bgr(np.ascontiguousarray(image[..., ::-1]), u8, bgr=True), viz.blend_bgr(image, u8))
    assert np.abs(viz.blend(image, u8).astype(int) - ref_blend(image, u8, 0.55)).max() <= 1


def test_a_strided_image_blends_as_its_copy():
    """A view (every other column of a wider image) gives the picture its contiguous copy gives."""
    rng = np.random.default_rng(6)
    wide = rng.integers(0, 256, (20, 60, 3), dtype=np.uint8)
    u8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    assert np.array_equal(viz.blend_bgr(wide[:, ::2], u8), viz.blend_bgr(np.ascontiguousarray(wide[:, ::2]), u8))


def test_a_blend_is_not_changed_by_the_next_one_in_the_same_thread():
    """blend_bgr reuses this thread's scratch arrays: a result given out must stay as it was when
    the next blend (of the same size, then of another) runs."""
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((30, 40, 3), (30, 40, 3), (12, 8, 3))]
    maps = [rng.integers(0, 256, image.shape[:2], dtype=np.uint8) for image in images]
    first = viz.blend_bgr(images[0], maps[0])
    kept = first.copy()
    viz.blend_bgr(images[1], maps[1])
    viz.blend_bgr(images[2], maps[2])
    assert np.array_equal(first, kept)
    assert np.array_equal(viz.blend_bgr(images[0], maps[0]), kept)
