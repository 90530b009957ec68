"""File input/output: atomic writes (:mod:`.atomic`) and NIfTI (:mod:`.nifti`)."""
from .atomic import atomic_path, atomic_write, save_npy, save_npz, write_bytes, write_json, write_text
from .nifti import (
                    NiftiBytesError,
                    check_affine,
                    nifti_bytes,
                    nifti_image,
                    nifti_spacing,
                    peek_nifti_shape,
                    read_nifti,
                    read_nifti_bytes,
                    voxel_ml,
                    write_nifti,
)

__all__ = ["atomic_path", "atomic_write", "save_npy", "save_npz", "write_bytes", "write_json", "write_text",
           "NiftiBytesError", "check_affine", "nifti_bytes", "nifti_image", "nifti_spacing", "peek_nifti_shape",
           "read_nifti", "read_nifti_bytes", "voxel_ml", "write_nifti"]
