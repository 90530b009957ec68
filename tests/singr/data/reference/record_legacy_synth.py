"""Record ``legacy_synth.npz``: what ``synthesize_case(shape, seed)`` (ambiguity 0) gave before
``ambiguity`` existed, for ``test_synth.py::test_ambiguity_zero_is_the_legacy_generator``.

Per case: the label map whole (exact), the brain mask (``image > 0``, exact), and the image at
``N_SAMPLES`` fixed voxels of each channel plus each channel's mean over the brain (compared within a
tolerance: float rounding of the smooth fields differs with the CPU and the BLAS). Recorded on x86-64
(numpy 2.4, scipy 1.17) from a generator whose bytes matched the sha256 sums recorded before
``ambiguity`` was added, so the file is the legacy generator's output. Run from the repository root:
``python tests/singr/data/reference/record_legacy_synth.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CASES = {"a": ((32, 32, 24), 0), "b": ((32, 32, 24), (0, 1)), "c": ((48, 48, 32), 5), "d": ((24, 20, 16), 11)}
N_SAMPLES = 256
FILE = Path(__file__).with_name("legacy_synth.npz")


def sample_index(shape: tuple[int, int, int], key: str) -> np.ndarray:
    """``N_SAMPLES`` flat voxel indices, the same on every machine (integer draws only)."""
    rng = np.random.default_rng(list(key.encode()))
    return np.sort(rng.choice(int(np.prod(shape)), N_SAMPLES, replace=False))


def record() -> None:
    from singr.data import synthesize_case

    out: dict[str, np.ndarray] = {}
    for key, (shape, seed) in CASES.items():
        img, lab = synthesize_case(shape, seed)
        brain = img[0] > 0
        out[f"{key}_label"] = lab
        out[f"{key}_brain"] = np.packbits(brain)
        out[f"{key}_samples"] = img.reshape(img.shape[0], -1)[:, sample_index(shape, key)]
        out[f"{key}_means"] = img[:, brain].astype(np.float64).mean(1)
    tmp = FILE.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **out)
    tmp.replace(FILE)


if __name__ == "__main__":
    record()
    print(f"wrote {FILE} ({FILE.stat().st_size} bytes)")
