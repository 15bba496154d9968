"""The run stage's map PNGs, deflated by ISA-L (hypersal.data.png), hold the pixels cv2's PNG of
the same map held: decoded by cv2 and by PIL, on random, smooth and constant maps of odd sizes,
one row and one column included; the file is a well-formed PNG (chunk CRCs, one IDAT)."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from hypersal.data import png

CV2_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]      # what the stage wrote before (d008416)


def maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    smooth = cv2.GaussianBlur(rng.random((481, 643)).astype(np.float32), (0, 0), 30)
    smooth = ((smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255 + 0.5).astype(np.uint8)
    return {"random_480x640": rng.integers(0, 256, (480, 640), dtype=np.uint8),
            "random_37x53": rng.integers(0, 256, (37, 53), dtype=np.uint8),
            "smooth_481x643": smooth,
            "zeros_31x17": np.zeros((31, 17), np.uint8),
            "full_255_8x9": np.full((8, 9), 255, np.uint8),
            "constant_128_5x3": np.full((5, 3), 128, np.uint8),
            "one_row_1x97": rng.integers(0, 256, (1, 97), dtype=np.uint8),
            "one_column_101x1": rng.integers(0, 256, (101, 1), dtype=np.uint8),
            "one_pixel": np.array([[201]], np.uint8),
            "wrapping_steps": np.tile(np.array([[0], [255], [1], [254]], np.uint8), (2, 11))}


@pytest.mark.parametrize("name", list(maps()))
def test_the_png_decodes_to_the_pixels_of_cv2s_png(name):
    u8 = maps()[name]
    data = png.encode_grey(u8)
    want = cv2.imdecode(cv2.imencode(".png", u8, CV2_PNG)[1], cv2.IMREAD_UNCHANGED)
    got = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint8 and got.shape == u8.shape and np.array_equal(got, want)
    with Image.open(io.BytesIO(data)) as im:      # a second decoder: libpng is not the only reader
        assert im.mode == "L" and np.array_equal(np.asarray(im), u8)


def test_the_file_is_a_well_formed_grey_png():
    u8 = maps()["random_37x53"]
    data = png.encode_grey(u8)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        (n,), kind = struct.unpack(">I", data[i:i + 4]), data[i + 4:i + 8]
        body, (crc,) = data[i + 8:i + 8 + n], struct.unpack(">I", data[i + 8 + n:i + 12 + n])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        i += 12 + n
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"] and chunks[2][1] == b""
    assert chunks[0][1] == struct.pack(">II5B", 53, 37, 8, 0, 0, 0, 0)
    rows = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(37, 54)
    assert (rows[:, 0] == 2).all()      # the Up filter on every row, the first's "above" being 0
    assert np.array_equal(np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8), u8)


def test_a_map_as_the_stage_writes_it_is_no_bigger_than_cv2s_png():
    """The reason for the Up filter: a map upsampled bilinearly changes by near-constant steps
    down a column, and deflate codes the runs (here 56 KB against cv2's 65 KB at level 1)."""
    small = cv2.GaussianBlur(np.random.default_rng(7).random((64, 80)).astype(np.float32), (0, 0), 6)
    m = cv2.resize(small, (643, 481), interpolation=cv2.INTER_LINEAR)
    u8 = ((m - m.min()) / (m.max() - m.min()) * 255 + 0.5).astype(np.uint8)
    assert len(png.encode_grey(u8)) <= len(cv2.imencode(".png", u8, CV2_PNG)[1])


@pytest.mark.parametrize("bad", [np.zeros((4, 5), np.float32), np.zeros((4, 5, 3), np.uint8), np.zeros((0, 5), np.uint8)],
                         ids=["float", "colour", "empty"])
def test_what_is_not_a_grey_map_is_refused(bad):
    with pytest.raises(ValueError, match="a grey PNG needs a non-empty"):
        png.encode_grey(bad)
