"""A small tmpfs the test mounts (root) to run a data directory out of space, then frees it again."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import need_root


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``where`` for the block; always unmounted after."""
    need_root()
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a filler file until the disk is full (or only ``leave`` bytes are left); returns it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        chunk = b"\0" * 65536
        todo = max(free - leave, 0)
        try:
            while todo > 0:
                todo -= f.write(chunk[: min(len(chunk), todo)])
            os.fsync(f.fileno())
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler
