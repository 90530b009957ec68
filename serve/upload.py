"""Turning an HTTP upload into a checked case, with limits that hold against hostile clients.

* The body is read with a size limit (413) and time limits (408, naming the one that fired):
  a minimum mean rate after a short grace, an idle gap between chunks, a total time. A
  client trickling bytes holds a reading slot for the grace and no longer; reading slots
  are per client address too (429), and decoding has slots of its own, so slow readers never
  hold what decoding and inference need.
* Multipart parts name their modality by field name or file name (BraTS 2020 or 2023
  names); one unnamed part, or a raw ``application/gzip`` body, is one 4-D NIfTI; a zip (the
  raw body, or the one file of a multipart upload) is the case's DICOM series
  (:mod:`serve.dicom_upload`).
* Every file goes through :func:`singr.data.readers.load_case_from_bytes`: the header is
  checked against a voxel limit before any data is decompressed (413), and the volumes
  get the same checks as files on disk (422).
* Every problem becomes an :class:`HTTPProblem`, answered as the documented JSON body
  ``{"error", "detail", "file", "case"}``.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Any, AsyncGenerator

from singr.errors import SingrInputError

GZIP_TYPES = {"application/gzip", "application/x-gzip", "application/octet-stream", "application/nifti",
              "application/x-nifti", "application/x-nifti-gz", ""}
MODALITY_HELP = ("name each file by modality: form field names or file names flair/t1/t1ce/t2 (BraTS 2020) "
                 "or t2f/t1n/t1c/t2w (BraTS 2023), or send one 4-D NIfTI, or one zip of the case's DICOM series")


class HTTPProblem(Exception):
    """An HTTP error answer with the endpoint's JSON body."""

    def __init__(self, status: int, error: str, detail: str, file: str | None = None, case: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.file, self.case = status, error, detail, file, case
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, "file": self.file, "case": self.case}


def problem_from(err: Exception) -> HTTPProblem:
    """The HTTP answer for an exception raised while reading an upload."""
    from singr.io import NiftiBytesError

    if isinstance(err, HTTPProblem):
        return err
    if isinstance(err, NiftiBytesError):
        if err.kind == "too_large":
            return HTTPProblem(413, "too large", err.reason, err.path, err.case)
        return HTTPProblem(415, "not a NIfTI file", err.reason, err.path, err.case)
    if isinstance(err, SingrInputError):
        return HTTPProblem(422, "invalid input", err.reason, err.path, err.case)
    return HTTPProblem(422, "invalid input", f"could not interpret the upload ({type(err).__name__}: {err})")


def modality_key(field: str | None, filename: str | None) -> str | None:
    """The modality a multipart part names, from its field name, else its file name."""
    from singr.data.readers import canonical_modality

    cands = []
    if field:
        cands.append(field)
    if filename:
        stem = re.sub(r"\.(nii(\.gz)?|gz)$", "", filename.strip().rsplit("/", 1)[-1], flags=re.IGNORECASE)
        cands += [stem, re.split(r"[-_.\s]", stem)[-1]]
    for c in cands:
        if canonical_modality(c) is not None:
            return c
    return None


async def read_body(request: Any, limit: int, timeout_s: float = 120.0, idle_timeout_s: float = 15.0,
                    min_rate_kbps: float = 0.0, grace_s: float = 5.0) -> bytes:
    """The request body, at most ``limit`` bytes (413), or a 408 that names the limit that fired:

    * ``upload_min_rate_kbps``: after ``grace_s`` seconds the body must keep arriving at
      ``min_rate_kbps`` kB/s on average (a client trickling 200 B/s is cut after about
      ``grace_s``, whatever ``timeout_s``);
    * ``upload_idle_s``: no gap between chunks longer than ``idle_timeout_s``;
    * ``upload_timeout_s``: the whole body within ``timeout_s``.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPProblem(413, "too large", f"request body of {int(length)} bytes is over the limit of {limit} bytes")
    chunks, total = [], 0
    start = time.monotonic()
    rate = float(min_rate_kbps) * 1000.0
    it = request.stream().__aiter__()
    while True:
        now = time.monotonic()
        limits = {"upload_timeout_s": start + timeout_s, "upload_idle_s": now + idle_timeout_s}
        if rate > 0:  # by then the next bytes must have come, or the mean rate since the grace is below the minimum
            limits["upload_min_rate_kbps"] = start + grace_s + total / rate
        fired, until = min(limits.items(), key=lambda kv: kv[1])
        try:
            chunk = await asyncio.wait_for(it.__anext__(), timeout=max(0.0, until - now))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            took = time.monotonic() - start
            detail = {
                "upload_timeout_s": f"the upload took longer than upload_timeout_s = {timeout_s:g} s",
                "upload_idle_s": f"no data for upload_idle_s = {idle_timeout_s:g} s",
                "upload_min_rate_kbps": f"the upload ran below upload_min_rate_kbps = {min_rate_kbps:g} kB/s "
                                        f"(after a grace of {grace_s:g} s)",
            }[fired]
            raise HTTPProblem(408, "request timeout", f"{detail}: {total} bytes in {took:.1f} s; send the files at "
                              "network speed") from None
        total += len(chunk)
        if total > limit:
            raise HTTPProblem(413, "too large", f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def upload_voxels(files: Any, names: dict[str, str], max_voxels: int, max_unpacked: int = 1 << 31) -> int:
    """Voxels of the largest volume in an upload, read from the NIfTI headers alone (a 4-D file's
    first three axes), or bounded from a DICOM zip's directory (:func:`zip_voxels`,
    at most ``max_unpacked`` bytes unpacked); 413 naming the file when one is over ``max_voxels``
    per volume. What admission prices a request by, before any voxel is decoded."""
    import math

    from singr.io import peek_nifti_shape

    from .dicom_upload import DicomUpload

    if isinstance(files, DicomUpload):
        return zip_voxels(files, max_voxels, max_unpacked)
    items = files.items() if isinstance(files, dict) else [("4d", files)]
    most = 0
    for key, data in items:
        name = names.get(key, key)
        shape = peek_nifti_shape(data, name=name)
        vox = math.prod(shape[:3])
        if vox > max_voxels:
            raise HTTPProblem(413, "too large", f"volume of shape {'x'.join(map(str, shape[:3]))} holds {vox} voxels, "
                              f"over the limit of {max_voxels} (max_voxels; a BraTS case has 8928000); resample or "
                              "crop to the head", file=name)
        most = max(most, vox)
    return most


def zip_voxels(upload: Any, max_voxels: int, max_unpacked: int, n_modalities: int = 4) -> int:
    """An upper bound on the voxels of one volume of the zip, from its directory alone (module
    docstring); :class:`~serve.upload.HTTPProblem` 413 over ``max_unpacked`` bytes or
    ``max_voxels``, 422 for a broken zip."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(upload.data)) as zf:
            total = sum(m.file_size for m in zf.infolist() if not m.is_dir())
    except (zipfile.BadZipFile, ValueError) as e:
        raise HTTPProblem(422, "invalid input", f"not a readable zip ({e}); send a zip of the case's DICOM series",
                          file=upload.name) from None
    if total > max_unpacked:
        raise HTTPProblem(413, "too large", f"the zip unpacks to {total} bytes, over the limit of {max_unpacked} "
                          "(4 x max_upload_mb)", file=upload.name)
    voxels = total // (2 * max(1, int(n_modalities)))
    if voxels > max_voxels:
        raise HTTPProblem(413, "too large", f"the zip's {total} bytes hold about {voxels} voxels a series, over the "
                          f"limit of {max_voxels} (max_voxels; a BraTS case has 8928000)", file=upload.name)
    return int(voxels)


async def parse_upload(headers: Any, body: bytes) -> tuple[Any, dict[str, str]]:
    """Multipart parts -> ({modality key: bytes}, {key: upload name}) or (4-D bytes, names), or
    (:class:`~serve.dicom_upload.DicomUpload`, names) for a zip of DICOM series."""
    from .dicom_upload import ZIP_TYPES, DicomUpload, is_zip

    ctype = headers.get("content-type", "")
    main = ctype.split(";", 1)[0].strip().lower()
    if main != "multipart/form-data":
        if main in GZIP_TYPES | ZIP_TYPES and is_zip(body, None, main):
            return DicomUpload(body, "upload.zip"), {"dicom": "upload.zip"}
        if main in GZIP_TYPES:
            if not body:
                raise HTTPProblem(422, "invalid input", f"empty request body; {MODALITY_HELP}")
            return body, {"4d": "body"}
        raise HTTPProblem(415, "unsupported media type",
                          f"content type {main!r}; expected multipart/form-data with NIfTI files ({MODALITY_HELP}), "
                          "a raw 4-D NIfTI body (application/gzip) or a zip of DICOM series (application/zip)")
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=16, max_fields=16).parse()
    except MultiPartException as e:
        raise HTTPProblem(422, "invalid input", f"malformed multipart body ({e.message})") from None
    except Exception as e:  # noqa: BLE001 - the parser raises several types for broken bodies
        raise HTTPProblem(422, "invalid input", f"malformed multipart body ({type(e).__name__}: {e})") from None
    try:
        parts: list[tuple[str, str | None, bytes]] = []
        for field, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise HTTPProblem(422, "invalid input", f"form field {field!r} is text, not a file; {MODALITY_HELP}",
                                  file=field)
            parts.append((field, value.filename, await value.read()))
    finally:
        await form.close()
    if not parts:
        raise HTTPProblem(422, "invalid input", f"no files uploaded; {MODALITY_HELP}")
    zips = [(f, n) for f, n, data in parts if is_zip(data, n)]
    if zips:
        if len(parts) > 1:
            raise HTTPProblem(422, "invalid input", f"a zip of DICOM series ({zips[0][1] or zips[0][0]!r}) comes "
                              f"alone: put all the case's series in the one zip ({len(parts)} files were sent)",
                              file=zips[0][1] or zips[0][0])
        field, fname, data = parts[0]
        return DicomUpload(data, fname or f"{field}.zip"), {"dicom": fname or field}
    keys = [modality_key(f, n) for f, n, _ in parts]
    if len(parts) == 1 and keys[0] is None:
        f, n, data = parts[0]
        return data, {"4d": n or f}
    files: dict[str, bytes] = {}
    names: dict[str, str] = {}
    for (field, fname, data), key in zip(parts, keys):
        label = fname or field
        if key is None:
            raise HTTPProblem(422, "invalid input", f"cannot tell which modality the upload {label!r} (form field "
                              f"{field!r}) is; {MODALITY_HELP}", file=label)
        if key in files:
            raise HTTPProblem(422, "invalid input", f"modality {key!r} uploaded twice; expected each once", file=label)
        files[key], names[key] = data, label
    return files, names
