"""Turning an HTTP upload into a checked case, with limits that hold against hostile clients.

* The body is read with a size limit (413) and time limits (408, naming the one that fired):
  a minimum mean rate after a short grace, an idle gap between chunks, a total time. A
  client trickling bytes holds a reading slot for the grace and no longer; reading slots
  are per client address too (429), and decoding has slots of its own, so slow readers never
  hold what decoding and inference need.
* Multipart parts name their modality by field name or file name (BraTS 2020 or 2023
  names); one unnamed part, or a raw ``application/gzip`` body, is one 4-D NIfTI.
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
                 "or t2f/t1n/t1c/t2w (BraTS 2023), or send one 4-D NIfTI")


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


def upload_voxels(files: dict[str, bytes] | bytes, names: dict[str, str], max_voxels: int) -> int:
    """Voxels of the largest volume in an upload, read from the NIfTI headers alone (a 4-D file's
    first three axes); 413 naming the file when one is over ``max_voxels`` per volume. What
    admission prices a request by, before any voxel is decoded."""
    import math

    from singr.io import peek_nifti_shape

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


async def parse_upload(headers: Any, body: bytes) -> tuple[dict[str, bytes] | bytes, dict[str, str]]:
    """Multipart parts -> ({modality key: bytes}, {key: upload name}) or (4-D bytes, names)."""
    ctype = headers.get("content-type", "")
    main = ctype.split(";", 1)[0].strip().lower()
    if main != "multipart/form-data":
        if main in GZIP_TYPES:
            if not body:
                raise HTTPProblem(422, "invalid input", f"empty request body; {MODALITY_HELP}")
            return body, {"4d": "body"}
        raise HTTPProblem(415, "unsupported media type",
                          f"content type {main!r}; expected multipart/form-data with NIfTI files ({MODALITY_HELP}) "
                          "or a raw 4-D NIfTI body (application/gzip)")
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
