"""NIfTI reading and writing: files on disk, and files held in memory (HTTP uploads).

Arrays keep the file's axis order; floating data comes back as float32 (scaling applied),
integer data as stored. Written files keep the input's *geometry* (affine, voxel size,
units, qform/sform codes) and nothing else from its header: free-text fields
(``descrip``, ``aux_file``, ``intent_name``) and header extensions can hold patient
names, so they are never copied into an output.

Uploaded bytes are read defensively (:func:`read_nifti_bytes`): the header is parsed from
the first bytes of the (gzip) stream and the voxel count checked against a limit *before*
the data is decompressed; decompression runs with a running cap and writes into one
buffer of the exact size, so a request costs a small multiple of its voxel count.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from ..errors import SingrInputError
from .atomic import atomic_write

__all__ = ["read_nifti", "write_nifti", "nifti_spacing", "nifti_image", "nifti_bytes", "read_nifti_bytes",
           "peek_nifti_shape",
           "NiftiBytesError", "check_affine", "check_voxel_size", "voxel_ml"]

_NIFTI_CLASSES = (nib.Nifti1Image, nib.Nifti2Image)
_GZIP_MAGIC = b"\x1f\x8b"


class NiftiBytesError(SingrInputError):
    """In-memory bytes that are not a (gzipped) single-file NIfTI (``kind="format"``) or that
    hold or decompress to more than allowed (``kind="too_large"``). The HTTP endpoint maps
    these to 415 and 413."""

    def __init__(self, message: str, *, kind: str = "format", case: str | None = None,
                 path: str | Path | None = None):
        super().__init__(message, case=case, path=path)
        self.kind = kind


def _as_float32(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and array.dtype != np.float32:
        return array.astype(np.float32)
    return array


def _drop_singleton_4th(array: np.ndarray) -> np.ndarray:
    return array[..., 0] if array.ndim == 4 and array.shape[3] == 1 else array


def check_affine(affine: np.ndarray, *, case: str | None = None, path: str | Path | None = None) -> np.ndarray:
    """The 4 x 4 affine as float64; an error naming the file when it is not finite or singular.

    A zero sform or a NaN in the header gives such an affine: volumes, HD95 in mm and the
    output's geometry would all be meaningless, so the input is refused.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise SingrInputError("the image affine (sform/qform) holds NaN or inf; expected a valid voxel-to-world "
                              "matrix", case=case, path=path)
    if abs(float(np.linalg.det(a[:3, :3]))) < 1e-12:
        raise SingrInputError("the image affine (sform/qform) is singular (zero voxel size or a zero sform); "
                              "expected a valid voxel-to-world matrix", case=case, path=path)
    return a


def voxel_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in millilitres: |det(affine[:3, :3])| mm^3 / 1000."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def check_voxel_size(head: bytes, *, case: str | None = None, path: str | Path | None = None) -> None:
    """Refuse a header whose voxel size (``pixdim[1:4]``, read from its raw bytes ``head``) is zero,
    negative or not finite. nibabel's own header check sets a zero size to 1 mm without a word, so
    such a file was segmented with volumes and distances on a made-up grid. Bytes that are no
    NIfTI header are left to the reader's own errors."""
    klass: Any = None
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        klass = nib.Nifti1Header
    elif len(head) >= 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        klass = nib.Nifti2Header
    if klass is None:
        return
    try:
        pixdim = [float(v) for v in klass(binaryblock=head[:klass.sizeof_hdr], check=False)["pixdim"][1:4]]
    except Exception:  # noqa: BLE001 - a header nibabel cannot parse is reported by the reader
        return
    if not all(math.isfinite(v) and v > 0 for v in pixdim):
        raise SingrInputError(f"the header's voxel size (pixdim[1:4]) is {pixdim}; expected finite sizes above 0 mm "
                              "(a zero, negative or NaN voxel size makes volumes and distances meaningless)",
                              case=case, path=path)


def read_nifti(path: str | Path, *, case: str | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read a NIfTI file (``.nii`` or ``.nii.gz``): ``(array, affine, header)``.

    ``array`` as stored (integer types kept; floating types as float32, scaling applied by
    nibabel), in the file's own axis order; ``affine`` 4 x 4 float64; ``header`` the nibabel
    header. A trailing singleton 4th axis (X, Y, Z, 1) is dropped; nothing else is squeezed.
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
        with ImageOpener(str(path)) as f:
            head = f.read(540)
    except Exception as err:  # noqa: BLE001 - truncated gzip and the like
        raise SingrInputError(f"cannot read the header ({type(err).__name__}: {err})", case=case, path=path) from err
    check_voxel_size(head, case=case, path=path)
    try:
        array = np.asarray(img.dataobj)
    except Exception as err:  # EOFError, OSError, zlib.error on truncated or corrupt data
        raise SingrInputError(f"cannot read the voxel data, file truncated or corrupt "
                              f"({type(err).__name__}: {err})", case=case, path=path) from err
    return _drop_singleton_4th(_as_float32(array)), np.asarray(img.affine, dtype=np.float64), img.header


def nifti_spacing(header: Any, ndim: int = 3) -> tuple[float, ...]:
    """Voxel spacing (mm) of the first ``ndim`` axes from a nibabel header (1.0 where absent)."""
    if header is None:
        return (1.0,) * ndim
    zooms = tuple(float(z) for z in header.get_zooms()[:ndim])
    return zooms + (1.0,) * (ndim - len(zooms))


def _geometry_header(array: np.ndarray, affine: np.ndarray, header: Any) -> Any:
    """A fresh header carrying only the geometry of ``header``: voxel size, units, codes."""
    klass = nib.Nifti2Header if isinstance(header, nib.Nifti2Header) else nib.Nifti1Header
    hdr = klass()
    hdr.set_data_dtype(array.dtype)
    hdr.set_data_shape(array.shape)
    if header is not None:
        zooms = list(header.get_zooms()[:3]) + [1.0] * (array.ndim - 3)
        hdr.set_zooms(tuple(float(z) for z in zooms[: array.ndim]))
        try:
            units = header.get_xyzt_units()
            hdr.set_xyzt_units(units[0] or "mm", units[1] or "unknown")
        except Exception:  # noqa: BLE001 - a header without units
            hdr.set_xyzt_units("mm")
    else:
        hdr.set_xyzt_units("mm")
    return hdr


def nifti_image(array: np.ndarray, affine: np.ndarray, header: Any = None, *,
                path: str | Path | None = None) -> "nib.Nifti1Image | nib.Nifti2Image":
    """The NIfTI image :func:`write_nifti` writes, in memory.

    Data types: bool -> uint8, int64 -> int32 when the values fit, other floats -> float32.
    The affine sets sform and qform (with the input's codes when it had them); only the
    geometry of ``header`` is kept (see the module docstring).
    """
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
    hdr = _geometry_header(arr, affine, header)
    klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = klass(arr, affine, header=hdr, dtype=arr.dtype)
    qcode = int(header["qform_code"]) if header is not None and int(header["qform_code"]) > 0 else 1
    scode = int(header["sform_code"]) if header is not None and int(header["sform_code"]) > 0 else 1
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    return img


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, header: Any = None) -> Path:
    """Write ``array`` to ``path`` (``.nii`` or ``.nii.gz``) atomically; see :func:`nifti_image`."""
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise SingrInputError("output file name must end with .nii or .nii.gz", path=path)
    img = nifti_image(array, affine, header, path=path)
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)))


def nifti_bytes(array: np.ndarray, affine: np.ndarray, header: Any = None, *, compresslevel: int = 3) -> bytes:
    """The ``.nii.gz`` bytes of what :func:`write_nifti` would write."""
    return gzip.compress(nifti_image(array, affine, header).to_bytes(), compresslevel=compresslevel)


# --------------------------------------------------------------------------- uploads

_DEFLATE_MAX_RATIO = 1032  # deflate inflates at most about 1032:1, so n gzip bytes never hold more than 1032 n


class _Stream:
    """Sequential reader over plain or gzip bytes that never inflates more than asked for.

    Gzip input is fed in slices of ``IN_CHUNK`` bytes and inflated in pieces of at most
    ``OUT_CHUNK`` bytes written straight into the caller's buffer, so reading costs the
    buffer and a few hundred kilobytes, whatever the sizes."""

    IN_CHUNK = 1 << 18
    OUT_CHUNK = 1 << 20

    def __init__(self, data: bytes, gz: bool, *, case: str | None, name: str | None):
        self.data, self.gz, self.case, self.name = memoryview(data), gz, case, name
        self.pos = 0
        self.tail: bytes = b""
        self.dec = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _input(self) -> bytes | memoryview:
        if self.tail:
            tail, self.tail = self.tail, b""
            return tail
        piece = self.data[self.pos:self.pos + self.IN_CHUNK]
        self.pos += len(piece)
        return piece

    def read_into(self, out: memoryview) -> int:
        """Fill ``out`` as far as the stream allows; returns the number of bytes written."""
        n = len(out)
        if not self.gz:
            k = min(n, len(self.data) - self.pos)
            out[:k] = self.data[self.pos:self.pos + k]
            self.pos += k
            return k
        got = 0
        while got < n:
            if self.dec.eof:  # next gzip member, if any (trailing garbage is ignored, as gzip does)
                left = bytes(self.dec.unused_data)  # all input past the member's end (tail repeats it)
                if (left + bytes(self.data[self.pos:self.pos + 2]))[:2] != _GZIP_MAGIC:
                    break
                self.tail = left
                self.dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
            src = self._input()
            if not len(src) and not self.dec.eof:
                try:  # flush what the decompressor still holds
                    chunk = self.dec.decompress(b"", min(n - got, self.OUT_CHUNK))
                except zlib.error as err:
                    raise NiftiBytesError(f"corrupt gzip data ({err}); expected a .nii.gz file", case=self.case,
                                          path=self.name) from err
                if not chunk:
                    break  # input exhausted mid-stream: the caller reports the short read
            else:
                try:
                    chunk = self.dec.decompress(src, min(n - got, self.OUT_CHUNK))  # at most what is needed
                except zlib.error as err:
                    raise NiftiBytesError(f"corrupt gzip data ({err}); expected a .nii.gz file", case=self.case,
                                          path=self.name) from err
                self.tail = self.dec.unconsumed_tail or b""
            out[got:got + len(chunk)] = chunk
            got += len(chunk)
        return got


def _read_data(stream: _Stream, head: bytearray, got: int, offset: int, nbytes: int) -> tuple[bytearray, int]:
    """The ``nbytes`` of voxel data that start at byte ``offset`` (``head`` holds the first ``got`` bytes).

    Memory follows the bytes that actually arrive, never the header's claims: the gap up to
    ``offset`` is skipped through a small scratch buffer, and the data buffer grows piece by piece.
    A 66-byte upload announcing a 1 GB ``vox_offset`` (or a full-size image) costs a megabyte, not
    the gigabyte a buffer sized from the header took. Returns fewer than ``nbytes`` bytes when the
    stream ends early (the caller reports it), with the number of the file's bytes seen."""
    buf = bytearray(head[offset:got]) if got > offset else bytearray()
    del buf[nbytes:]
    seen = got
    scratch = bytearray(min(_Stream.OUT_CHUNK, max(nbytes, offset - got, 1)))
    skip = max(0, offset - got)
    while skip:
        n = stream.read_into(memoryview(scratch)[:min(len(scratch), skip)])
        if n == 0:
            return bytearray(), seen
        skip -= n
        seen += n
    while len(buf) < nbytes:
        n = stream.read_into(memoryview(scratch)[:min(len(scratch), nbytes - len(buf))])
        if n == 0:
            break
        buf += memoryview(scratch)[:n]
        seen += n
    return buf, seen


def _open_nifti_bytes(data: bytes, name: str | None, case: str | None
                      ) -> tuple[_Stream, bytearray, int, Any, tuple[int, ...], np.dtype, int, bool]:
    """The stream, the first bytes, the checked header, its shape, data type and data offset."""
    if not data:
        raise NiftiBytesError("empty file; expected a NIfTI file (.nii or .nii.gz)", case=case, path=name)
    gz = bytes(data[:2]) == _GZIP_MAGIC
    if name and name.lower().endswith(".gz") and not gz:
        raise NiftiBytesError("file name ends with .gz but the content is not gzip data", case=case, path=name)
    stream = _Stream(data, gz, case=case, name=name)
    head = bytearray(540)
    got = stream.read_into(memoryview(head))
    klass: type | None = None
    if got >= 348 and bytes(head[344:348]) == b"n+1\x00":
        klass = nib.Nifti1Header
    elif got >= 540 and bytes(head[4:8]) == b"n+2\x00":
        klass = nib.Nifti2Header
    if klass is None:
        what = "gzip data that is not" if gz else "not"
        raise NiftiBytesError(f"{what} a single-file NIfTI image (no n+1/n+2 magic); expected .nii or .nii.gz",
                              case=case, path=name)
    size = klass.sizeof_hdr  # type: ignore[attr-defined]
    check_voxel_size(bytes(head[:size]), case=case, path=name)
    try:
        hdr = klass(binaryblock=bytes(head[:size]), check=True)
        shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = np.dtype(hdr.get_data_dtype())
        offset = int(hdr.get_data_offset())
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for a bad header
        raise NiftiBytesError(f"cannot read the NIfTI header ({type(err).__name__}: {err})", case=case,
                              path=name) from err
    if not shape or any(s < 1 for s in shape) or dtype.itemsize == 0 or offset < size:
        raise NiftiBytesError(f"NIfTI header announces an empty or invalid image (shape {shape}, data type "
                              f"{dtype}, data offset {offset})", case=case, path=name)
    return stream, head, got, hdr, shape, dtype, offset, gz


def peek_nifti_shape(data: bytes, *, name: str | None = None, case: str | None = None) -> tuple[int, ...]:
    """The image shape a NIfTI file held in memory announces, read from its header alone (a few
    hundred bytes decompressed); the header gets the checks :func:`read_nifti_bytes` makes first.
    What the endpoint's admission prices a request by before any voxel is decoded."""
    return _open_nifti_bytes(data, name, case)[4]


def read_nifti_bytes(data: bytes, *, name: str | None = None, case: str | None = None,
                     max_size: int | None = None, max_voxels: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, Any]:
    """:func:`read_nifti` for a file held in memory (an HTTP upload), same return value.

    Gzip is recognised by its magic bytes (``name`` ending in ``.gz`` with other content is
    an error); the content must be a single-file NIfTI-1 or NIfTI-2 image. The header is
    read first and refused (``kind="too_large"``) when the image holds more than
    ``max_voxels`` voxels or needs more than ``max_size`` bytes, before the rest is
    decompressed; the data is then decompressed into one buffer of exactly the size the
    header announces (a longer stream is never inflated further).
    """
    stream, head, got, hdr, shape, dtype, offset, gz = _open_nifti_bytes(data, name, case)
    nvox = math.prod(shape)
    if max_voxels is not None and nvox > max_voxels:
        raise NiftiBytesError(f"image of shape {shape} holds {nvox} voxels, over the limit of {max_voxels} "
                              "voxels per volume", kind="too_large", case=case, path=name)
    need = offset + nvox * dtype.itemsize
    if max_size is not None and need > max_size:
        raise NiftiBytesError(f"image of shape {shape} ({dtype}) needs {need} bytes, over the limit of "
                              f"{max_size} bytes per file", kind="too_large", case=case, path=name)
    most = len(data) * _DEFLATE_MAX_RATIO + 1024 if gz else len(data)  # what the bytes sent could hold
    if need > most:
        raise NiftiBytesError(f"{'truncated gzip data' if gz else 'file truncated'}: the header announces {need} "
                              f"bytes, more than the {len(data)} bytes sent can hold", case=case, path=name)
    buf, seen = _read_data(stream, head, got, offset, nvox * dtype.itemsize)
    if len(buf) < nvox * dtype.itemsize:
        what = "truncated gzip data" if gz else "file truncated"
        raise NiftiBytesError(f"{what}: {seen} bytes of the {need} its header announces", case=case, path=name)
    array: np.ndarray = np.ndarray(shape, dtype=dtype, buffer=buf, order="F")
    slope, inter = hdr.get_slope_inter()
    if slope is not None and (slope != 1.0 or (inter or 0.0) != 0.0):
        array = array.astype(np.float32) * np.float32(slope) + np.float32(inter or 0.0)
    elif dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
        array = array.astype(dtype.newbyteorder("="))
    return _drop_singleton_4th(_as_float32(array)), np.asarray(hdr.get_best_affine(), dtype=np.float64), hdr
