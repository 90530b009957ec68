"""Data: readers by layout (:mod:`.readers`), splits, synthetic cases, training patches."""
from .readers import (
                      BRATS2023_NAMES,
                      LAYOUTS,
                      LGG_CHANNELS,
                      MODALITIES,
                      CaseFiles,
                      LoadedCase,
                      canonical_modality,
                      detect_layout,
                      discover_cases,
                      find_case_folder_files,
                      load_case,
                      load_case_from_bytes,
                      load_case_from_files,
)
from .splits import SPLIT_KEYS, load_or_create_split, make_split, split_sizes
from .synth import case_name, synthesize_case, synthesize_dataset

__all__ = [
    "BRATS2023_NAMES", "LAYOUTS", "LGG_CHANNELS", "MODALITIES", "CaseFiles", "LoadedCase",
    "canonical_modality", "detect_layout", "discover_cases", "find_case_folder_files", "load_case",
    "load_case_from_bytes", "load_case_from_files", "SPLIT_KEYS", "load_or_create_split", "make_split",
    "split_sizes", "case_name", "synthesize_case", "synthesize_dataset",
]
