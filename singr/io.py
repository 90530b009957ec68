"""File input/output: atomic writes and NIfTI reading/writing.

Every file the project writes goes through :func:`atomic_path` / :func:`atomic_write`:
the content is written to a temporary name in the destination folder and moved into
place with ``os.replace``, so a reader never sees a half-written file.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import nibabel as nib
import numpy as np

from .errors import SingrInputError

__all__ = ["atomic_path", "atomic_write", "write_text", "write_json", "read_nifti", "write_nifti",
           "nifti_spacing", "nifti_image", "nifti_bytes", "read_nifti_bytes", "NiftiBytesError"]


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


def write_json(path: str | Path, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


_NIFTI_CLASSES = (nib.Nifti1Image, nib.Nifti2Image)


def read_nifti(path: str | Path, *, case: str | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read a NIfTI file (``.nii`` or ``.nii.gz``).

    Returns ``(array, affine, header)``: ``array`` as stored (integer types kept; floating
    types as float32, scaling applied by nibabel), in the file's own axis order; ``affine``
    4 x 4 float64; ``header`` the nibabel header. A trailing singleton 4th axis
    (X, Y, Z, 1) is dropped; nothing else is squeezed.

    Raises :class:`SingrInputError` naming ``case`` and ``path`` when the file is missing,
    unreadable, corrupt or not NIfTI.
    """
    path = Path(path)
    if not path.is_file():
        raise SingrInputError("file not found (expected a NIfTI file .nii or .nii.gz)", case=case, path=path)
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types: ImageFileError, OSError, EOFError, ...
        raise SingrInputError(f"cannot read as NIfTI ({type(err).__name__}: {err}); "
                              "expected a valid .nii or .nii.gz file", case=case, path=path) from err
    if not isinstance(img, _NIFTI_CLASSES):
        raise SingrInputError(f"not a NIfTI file (nibabel read it as {type(img).__name__}); "
                              "expected .nii or .nii.gz", case=case, path=path)
    try:
        array = np.asarray(img.dataobj)
    except Exception as err:  # EOFError, OSError, zlib.error on truncated or corrupt data
        raise SingrInputError(f"cannot read the voxel data, file truncated or corrupt "
                              f"({type(err).__name__}: {err})", case=case, path=path) from err
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    affine = np.asarray(img.affine, dtype=np.float64)
    return array, affine, img.header


def nifti_spacing(header: Any, ndim: int = 3) -> tuple[float, ...]:
    """Voxel spacing (mm) of the first ``ndim`` axes from a nibabel header."""
    zooms = tuple(float(z) for z in header.get_zooms()[:ndim])
    return zooms + (1.0,) * (ndim - len(zooms))


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, header: Any = None) -> Path:
    """Write ``array`` to ``path`` (``.nii`` or ``.nii.gz``) atomically.

    ``header`` (optional) is copied and its data type set to the array's; the affine sets
    both sform and qform. bool arrays are stored as uint8; int64 arrays as int32 when the
    values fit; float64 and float16 as float32.
    """
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise SingrInputError("output file name must end with .nii or .nii.gz", path=path)
    img = nifti_image(array, affine, header, path=path)
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)))


def nifti_image(array: np.ndarray, affine: np.ndarray, header: Any = None, *,
                path: str | Path | None = None) -> "nib.Nifti1Image | nib.Nifti2Image":
    """The NIfTI image :func:`write_nifti` writes (data types, header copy, sform/qform), in memory."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
        info = np.iinfo(np.int32)
        if arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max):
            arr = arr.astype(np.int32)
    elif arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise SingrInputError(f"affine must be 4 x 4, got shape {affine.shape}", path=path)
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    hdr = None
    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(arr.dtype)
        hdr.set_slope_inter(None, None)
    img = klass(arr, affine, header=hdr, dtype=arr.dtype)
    if hdr is None:
        img.header.set_xyzt_units("mm")
    img.set_qform(affine)
    img.set_sform(affine)
    return img


# --------------------------------------------------------------------------- in-memory NIfTI (HTTP uploads)

_GZIP_MAGIC = b"\x1f\x8b"
import zlib  # noqa: E402  (used only by the in-memory reader below)


class NiftiBytesError(SingrInputError):
    """In-memory bytes that are not a (gzipped) single-file NIfTI (``kind="format"``) or that
    decompress to more than allowed (``kind="too_large"``). The HTTP endpoint maps these to
    415 and 413."""

    def __init__(self, message: str, *, kind: str = "format", case: str | None = None,
                 path: str | Path | None = None):
        super().__init__(message, case=case, path=path)
        self.kind = kind


def _gunzip(data: bytes, max_size: int | None, *, case: str | None, name: str | None) -> bytes:
    out: list[bytes] = []
    total = 0
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                limit = 0 if max_size is None else max_size - total + 1
                chunk = d.decompress(rest, limit)
                total += len(chunk)
                out.append(chunk)
                if max_size is not None and total > max_size:
                    raise NiftiBytesError(f"decompresses to more than {max_size} bytes (the limit)",
                                          kind="too_large", case=case, path=name)
                rest = d.unconsumed_tail
                if not rest or d.eof:
                    break
        except zlib.error as err:
            raise NiftiBytesError(f"corrupt gzip data ({err}); expected a .nii.gz file", case=case, path=name) from err
        if not d.eof:
            raise NiftiBytesError("truncated gzip data; expected a complete .nii.gz file", case=case, path=name)
        rest = d.unused_data
        if rest and not rest.startswith(_GZIP_MAGIC):
            break  # trailing garbage after the gzip member: ignored, as gzip does
    return b"".join(out)


def read_nifti_bytes(data: bytes, *, name: str | None = None, case: str | None = None,
                     max_size: int | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
    """:func:`read_nifti` for a file held in memory (an HTTP upload), same return value.

    Gzip is recognised by its magic bytes (``name`` ending in ``.gz`` with other content is
    an error); uncompressed bytes must be a single-file NIfTI-1 or NIfTI-2 image.
    ``max_size`` bounds the decompressed size. Raises :class:`NiftiBytesError` for bytes
    that are not (gzipped) NIfTI or too large, naming ``name``.
    """
    data = bytes(data)
    if not data:
        raise NiftiBytesError("empty file; expected a NIfTI file (.nii or .nii.gz)", case=case, path=name)
    gz = data[:2] == _GZIP_MAGIC
    if name and name.lower().endswith(".gz") and not gz:
        raise NiftiBytesError("file name ends with .gz but the content is not gzip data", case=case, path=name)
    raw = _gunzip(data, max_size, case=case, name=name) if gz else data
    if max_size is not None and len(raw) > max_size:
        raise NiftiBytesError(f"larger than {max_size} bytes (the limit)", kind="too_large", case=case, path=name)
    klass = None
    if len(raw) >= 348 and raw[344:348] in (b"n+1\x00",):
        klass = nib.Nifti1Image
    elif len(raw) >= 540 and raw[4:8] == b"n+2\x00":
        klass = nib.Nifti2Image
    if klass is None:
        what = "gzip data that is not" if gz else "not"
        raise NiftiBytesError(f"{what} a single-file NIfTI image (no n+1/n+2 magic); expected .nii or .nii.gz",
                              case=case, path=name)
    try:
        img = klass.from_bytes(raw)
        array = np.asarray(img.dataobj)
    except Exception as err:  # nibabel raises many types
        raise NiftiBytesError(f"cannot read as NIfTI ({type(err).__name__}: {err}); "
                              "file truncated or corrupt", case=case, path=name) from err
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    return array, np.asarray(img.affine, dtype=np.float64), img.header


def nifti_bytes(array: np.ndarray, affine: np.ndarray, header: Any = None, *, compresslevel: int = 3) -> bytes:
    """The ``.nii.gz`` bytes of what :func:`write_nifti` would write."""
    import gzip

    return gzip.compress(nifti_image(array, affine, header).to_bytes(), compresslevel=compresslevel)
