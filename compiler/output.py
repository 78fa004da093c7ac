"""Build directories appear whole or not at all: write into a temporary sibling, then publish."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["staging_dir", "publish"]


def staging_dir(out_dir: Path) -> Path:
    """A fresh temporary directory beside ``out_dir`` (same filesystem, so the rename is atomic)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))


def publish(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished ``tmp``; an earlier build is removed only afterwards.
    A program needing a unit its accelerator configuration leaves out is a CompileError first."""
    from .features import check_build
    check_build(tmp)
    out_dir = Path(out_dir)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
