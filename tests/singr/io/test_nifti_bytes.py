"""Uploads read defensively: the voxel limit is checked from the header before any data is
decompressed, a gzip stream is never inflated past what the header announces, memory stays a
small multiple of the image, and written label maps carry geometry but no free text."""
from __future__ import annotations

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from singr.io import NiftiBytesError, nifti_bytes, read_nifti_bytes, write_nifti


def _gz(array: np.ndarray, affine=None, header=None) -> bytes:
    return gzip.compress(nib.Nifti1Image(array, np.eye(4) if affine is None else affine, header=header).to_bytes(),
                         compresslevel=1)


def test_voxel_limit_is_checked_before_decompressing():
    bomb = _gz(np.zeros((320, 320, 320), np.uint8))  # 32.8 M voxels in ~32 kB
    assert len(bomb) < 200_000
    tracemalloc.start()
    with pytest.raises(NiftiBytesError, match=r"32768000 voxels, over the limit of 16777216") as e:
        read_nifti_bytes(bomb, name="t2.nii.gz", max_voxels=256 ** 3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert e.value.kind == "too_large" and e.value.path == "t2.nii.gz"
    assert peak < 2_000_000  # nothing was inflated (32.8 MB if it had been)


def test_a_stream_is_never_inflated_past_its_header():
    small = nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)).to_bytes()
    lying = gzip.compress(small + b"\0" * (300 << 20))  # 300 MB of zeros after a 1000-voxel image
    tracemalloc.start()
    arr, _, _ = read_nifti_bytes(lying, max_size=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert arr.shape == (10, 10, 10) and arr.sum() == 1000
    assert peak < 3 * len(lying)  # the 300 MB were never produced


def test_memory_is_a_small_multiple_of_the_image():
    a = np.random.default_rng(0).random((96, 96, 64)).astype(np.float32)
    data = _gz(a)
    tracemalloc.start()
    arr, _, _ = read_nifti_bytes(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(arr, a)
    assert peak < 2.5 * a.nbytes  # one buffer of the announced size, viewed as the array


@pytest.mark.parametrize("cut,needle", [(0.5, "truncated gzip data"), (0.001, "NIfTI")])
def test_truncated_uploads(cut, needle):
    data = _gz(np.ones((40, 40, 40), np.float32) * np.arange(40))
    with pytest.raises(NiftiBytesError, match=needle):
        read_nifti_bytes(data[: max(12, int(len(data) * cut))])


def test_label_maps_keep_geometry_and_drop_free_text(tmp_path):
    hdr = nib.Nifti1Header()
    hdr["descrip"] = b"Patient: Jane Doe, DOB 1970-01-01"
    hdr["aux_file"] = b"jane.doc"
    hdr["intent_name"] = b"secret"
    hdr.extensions.append(nib.nifti1.Nifti1Extension(6, b"Jane Doe comment"))
    hdr["qform_code"], hdr["sform_code"] = 1, 2
    affine = np.diag([0.9, 0.9, 2.5, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    up = nib.Nifti1Image(np.ones((8, 9, 10), np.float32), affine, header=hdr)
    labels = np.zeros((8, 9, 10), np.uint8)
    for out in (nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(labels, affine, up.header))),
                nib.load(str(write_nifti(tmp_path / "seg.nii.gz", labels, affine, up.header)))):
        h = out.header
        assert bytes(h["descrip"]).strip(b"\0") == b"" and bytes(h["aux_file"]).strip(b"\0") == b""
        assert bytes(h["intent_name"]).strip(b"\0") == b"" and len(h.extensions) == 0
        assert np.allclose(out.affine, affine) and h.get_zooms()[:3] == pytest.approx((0.9, 0.9, 2.5))
        assert int(h["sform_code"]) == 2 and int(h["qform_code"]) == 1
        assert b"Jane" not in out.to_bytes() if hasattr(out, "to_bytes") else True
