"""Uploads read defensively: the voxel limit is checked from the header before any data is
decompressed, a gzip stream is never inflated past what the header announces, memory stays a
small multiple of the image, and written label maps carry geometry but no free text."""
from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from singr.errors import SingrInputError
from singr.io import NiftiBytesError, nifti_bytes, read_nifti, read_nifti_bytes, write_nifti


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


def _lying_offset(offset: int, body: bytes = b"") -> bytes:
    """A 2 x 2 x 2 float32 header whose vox_offset points far past the bytes that follow."""
    hdr = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).header
    hdr.set_data_offset(offset)
    return hdr.binaryblock + b"\0" * 4 + body


@pytest.mark.parametrize("gz", [True, False])
def test_a_header_cannot_make_the_reader_allocate(gz):
    """A 66-byte gzip upload announcing vox_offset 1e9 once made the replica allocate about 1 GB
    before refusing it; now it is refused from its size, and memory stays at a few kB."""
    raw = _lying_offset(1_000_000_000)
    data = gzip.compress(raw) if gz else raw
    assert len(data) < 400
    tracemalloc.start()
    with pytest.raises(NiftiBytesError, match="truncated") as e:
        read_nifti_bytes(data, name="t1.nii.gz" if gz else "t1.nii", max_size=2 << 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "1000000032 bytes" in str(e.value) and e.value.path == ("t1.nii.gz" if gz else "t1.nii")
    assert peak < 64 * 1024, peak


def test_a_refused_upload_costs_a_small_multiple_of_what_it_holds():
    """Within what its bytes could hold, a truncated stream costs about what it inflates to, never
    what the header announces (here 64 MB announced, 3 MB present)."""
    hdr = nib.Nifti1Image(np.zeros((256, 256, 256), np.float32), np.eye(4)).header
    hdr.set_data_offset(352)
    present = np.random.default_rng(0).random((3 << 20) // 4).astype(np.float32).tobytes()
    data = gzip.compress(hdr.binaryblock + b"\0" * 4 + present, compresslevel=1)  # 3 of the 64 MB announced
    assert len(data) * 1032 > 256 ** 3 * 4  # the size bound alone cannot refuse it
    tracemalloc.start()
    with pytest.raises(NiftiBytesError, match="truncated gzip data"):
        read_nifti_bytes(data, max_size=1 << 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 * (3 << 20), peak


def _with_pixdim(value: float, axis: int, codes: tuple[int, int]) -> bytes:
    """A valid 4 x 4 x 4 image whose header bytes are then edited: pixdim[axis] and (qform, sform) codes."""
    raw = bytearray(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)).to_bytes())
    hdr = nib.Nifti1Header(binaryblock=bytes(raw[:348]), check=False)
    hdr["pixdim"][axis] = value
    hdr["qform_code"], hdr["sform_code"] = codes
    raw[:348] = hdr.binaryblock
    return gzip.compress(bytes(raw))


@pytest.mark.parametrize("codes", [(1, 0), (0, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("value,axis", [(0.0, 1), (-1.0, 2), (float("nan"), 3), (float("inf"), 1)])
def test_a_degenerate_voxel_size_is_refused_naming_the_file(codes, value, axis):
    """pixdim[1] = 0 with only a qform (or no codes) was answered with volumes on 1 mm: nibabel sets a
    zero voxel size to 1 without a word. Every zero, negative or non-finite voxel size is refused."""
    with pytest.raises(SingrInputError, match=r"voxel size \(pixdim\[1:4\]\)") as e:
        read_nifti_bytes(_with_pixdim(value, axis, codes), name="flair.nii.gz", case="c1")
    assert not isinstance(e.value, NiftiBytesError)  # a 422 at the endpoint, not a 415
    assert e.value.path == "flair.nii.gz" and e.value.case == "c1"


def test_a_valid_voxel_size_still_reads():
    arr, affine, hdr = read_nifti_bytes(_with_pixdim(0.9, 1, (1, 0)), name="flair.nii.gz")
    assert arr.shape == (4, 4, 4) and hdr.get_zooms()[0] == pytest.approx(0.9)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_a_file_on_disk_with_a_zero_voxel_size_is_refused(tmp_path, suffix):
    data = _with_pixdim(0.0, 1, (1, 0))
    f = tmp_path / f"flair{suffix}"
    f.write_bytes(data if suffix == ".nii.gz" else gzip.decompress(data))
    with pytest.raises(SingrInputError, match=r"voxel size \(pixdim\[1:4\]\) is \[0.0, 1.0, 1.0\]") as e:
        read_nifti(f, case="c1")
    assert Path(e.value.path) == f
