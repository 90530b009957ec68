"""Readers by data layout (one module each), a shared stack-and-check (:mod:`.base`) and the
registry that ``data.layout: auto`` consults (:mod:`.registry`)."""
from .base import BRATS2023_NAMES, LGG_CHANNELS, MODALITIES, CaseFiles, LoadedCase, canonical_modality
from .files import find_case_folder_files, load_case_from_files
from .registry import LAYOUTS, READERS, detect_layout, discover_cases, load_case
from .upload import load_case_from_bytes

__all__ = ["BRATS2023_NAMES", "LGG_CHANNELS", "MODALITIES", "CaseFiles", "LoadedCase", "canonical_modality",
           "find_case_folder_files", "load_case_from_files", "LAYOUTS", "READERS", "detect_layout",
           "discover_cases", "load_case", "load_case_from_bytes"]
