"""The real photographs scikit-image ships (no download), as JPEG files for `synth --images`:

    python -m hypersal.data.photos DIR

writes astronaut, chelsea, coffee, rocket and the two views of the stereo motorcycle.
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def write(out: Path) -> list[Path]:
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("hypersal: error: scikit-image is not installed. Fix: pip install -e '.[dev]'") from None
    out.mkdir(parents=True, exist_ok=True)
    images = {name: getattr(data, name)() for name in PHOTOS}
    left, right, _ = data.stereo_motorcycle()
    images.update(motorcycle_left=left, motorcycle_right=right)
    paths = []
    for name, array in images.items():
        path = out / f"{name}.jpg"
        Image.fromarray(array[..., :3]).save(path, quality=95)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hypersal.data.photos DIR", file=sys.stderr)
        return 2
    for path in write(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
