"""A real small disk: a tmpfs that fills up or turns read-only (mounting needs root; CI runs as root)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(folder: Path, megabytes: int):
    if os.geteuid() != 0:
        if os.environ.get("HYPERSAL_REQUIRE_SLURM") == "1":
            pytest.fail("the disk tests need root (mount -t tmpfs)")
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
