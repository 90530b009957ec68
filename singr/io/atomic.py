"""Write-then-rename: every file the project writes goes through :func:`atomic_path`.

The content is written to a temporary name in the destination folder and moved into
place with ``os.replace``, so a reader (another process, a restarted job, a user's
``cat``) never sees a half-written file, and a crash leaves the old file untouched.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["atomic_path", "atomic_write", "write_text", "write_json", "save_npy", "save_npz", "write_bytes"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The temporary name ends with the final name (``.tmp-<hex>-<name>``), so suffixes such
    as ``.nii.gz`` are kept and libraries that pick a format by extension behave. The
    parent folder is created. On error the temporary file is removed and ``path`` is left
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex[:12]}-{path.name}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | Path, write_fn: Callable[[Path], Any]) -> Path:
    """Call ``write_fn(tmp_path)`` and move the result onto ``path`` atomically. Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        write_fn(tmp)
        if not tmp.exists():
            raise RuntimeError(f"{path}: write function did not create the temporary file {tmp}")
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, obj: Any, *, indent: int = 2, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (``default`` as for :func:`json.dumps`)."""
    return write_text(path, json.dumps(obj, indent=indent, default=default) + "\n")


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return path


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], *, compress: bool = False) -> Path:
    """``np.savez`` (or ``np.savez_compressed``) of ``arrays`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)  # type: ignore[arg-type]
    return path
