"""Synthetic BraTS-like cases written in the BraTS 2020 layout.

So that the demo and the tests run real NIfTI files through the real readers. A case is a
skull-stripped ellipsoidal "brain" with a wobbly surface, white matter, grey matter, CSF
and ventricles with different contrasts per modality, and a tumour with irregular
(smoothly deformed) shapes: necrotic core (label 1, dark on t1ce), enhancing rim (label 4,
bright on t1ce) and oedema (label 2, bright on flair and t2). Some cases have no
enhancing tumour or a small tumour. Imaging effects: partial-volume blur, a smooth
multiplicative bias field, Rician noise; annotation jitter flips a few label-boundary
voxels.

``ambiguity`` in [0, 1] (0: the historical generator, bit for bit) makes the borders
ambiguous, as the SiNGR paper's hard cases are: infiltrative oedema fading into the tissue,
stronger partial-volume blur, and per-case "rater" variability of the drawn label (threshold
level of the smooth membership, slice-wise 2-D annotation jitter); ``rater`` draws another
annotation of the same case. See :func:`synthesize_case`.

At BraTS size (240 x 240 x 155, 1 mm) ``brain_box`` generates the head in a box of a real
brain's extent (about 150 x 185 x 140 voxels, a 1.1 l brain) pasted into the zero field of
view, as skull-stripped BraTS volumes are, and ``dtype="int16"`` stores the intensities as
BraTS distributes them (whole numbers); together they write a full-size case in about 1.5 s on one core
(``configs/synthetic-brats-size.yaml``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage, special

from ..io import write_nifti
from .readers.base import MODALITIES

__all__ = ["synthesize_case", "synthesize_dataset", "case_name", "write_example_case", "EXAMPLE_FILES", "IMAGE_DTYPES"]

# Mean intensity per tissue and modality (flair, t1, t1ce, t2), before scaling.
_TISSUE = {
    "wm": (0.55, 0.85, 0.80, 0.45),
    "gm": (0.70, 0.60, 0.62, 0.65),
    "csf": (0.15, 0.25, 0.27, 1.00),
    "ed": (1.00, 0.50, 0.52, 0.90),
    "ncr": (0.60, 0.33, 0.22, 0.95),
    "et": (0.82, 0.58, 1.25, 0.72),
}
_SCALE = 600.0


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, cell: float) -> np.ndarray:
    """Smooth random field with unit standard deviation, correlation length about ``cell`` voxels.

    White noise on a coarse grid (node spacing ``cell / 2``), interpolated separably with
    Gaussian weights (one small matrix per axis): cheap and smooth. Short correlation
    lengths filter full-size white noise with a Gaussian instead.
    """
    cell = max(float(cell), 1.0)
    if cell <= 4.0:  # short correlation: filtering white noise is cheaper
        field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), cell / np.sqrt(2), mode="wrap")
        std = float(field.std())
        return (field - field.mean()) / (std if std > 0 else 1.0)
    step = cell / 2  # nodes denser than the kernel width: no lattice artefacts
    coarse = rng.standard_normal(tuple(int(np.ceil(s / step)) + 7 for s in shape)).astype(np.float32)
    mats = []
    for axis, s in enumerate(shape):
        nodes = (np.arange(coarse.shape[axis], dtype=np.float32) - 3.0) * step
        pos = np.arange(s, dtype=np.float32)
        weights = np.exp(-(((pos[:, None] - nodes[None, :]) / cell) ** 2))
        mats.append(weights / weights.sum(1, keepdims=True))
    # contract the last axis last so that the big array is written once, in C order
    field = np.tensordot(mats[0], coarse, axes=([1], [0]))            # (X, c1, c2)
    field = np.einsum("xjk,yj->xyk", field, mats[1], optimize=True)   # (X, Y, c2)
    field = (field.reshape(-1, field.shape[2]) @ mats[2].T).reshape(shape).astype(np.float32, copy=False)
    std = float(field.std())
    return (field - field.mean()) / (std if std > 0 else 1.0)


def _grid(shape: tuple[int, int, int]) -> list[np.ndarray]:
    return [np.arange(s, dtype=np.float32).reshape([-1 if i == a else 1 for i in range(3)])
            for a, s in enumerate(shape)]


def _jitter_labels(label: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Flip about ``fraction`` of the label-boundary voxels to a neighbour's label."""
    out = label.copy()
    for _ in range(2):
        axis = int(rng.integers(3))
        shift = int(rng.choice([-1, 1]))
        neighbour = np.roll(label, shift, axis=axis)
        flip = (neighbour != label) & (rng.random(label.shape) < fraction)
        out[flip] = neighbour[flip]
    return out


def _check_ambiguity(ambiguity: float) -> float:
    """``ambiguity`` as a float in [0, 1]; ValueError otherwise (also for NaN and booleans)."""
    if isinstance(ambiguity, bool) or not isinstance(ambiguity, (int, float, np.integer, np.floating)):
        raise ValueError(f"ambiguity must be a number in [0, 1], got {ambiguity!r}")
    a = float(ambiguity)
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise ValueError(f"ambiguity must be in [0, 1], got {ambiguity!r}")
    return a


def _sub_rng(seed: int | Sequence[int], *key: int) -> np.random.Generator:
    """An independent stream for ``(seed, *key)``; the main stream ``default_rng(seed)`` is untouched."""
    entropy = int(seed) if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=tuple(int(k) for k in key)))


def _signed_distance(level: np.ndarray) -> np.ndarray:
    """Signed distance in voxels to the zero set of a smooth ``level`` (positive inside).

    ``sign(level) max(|level| / |grad level|, c - 1)``: the first-order estimate (sub-voxel,
    exact for planes and spheres) near the border; far from it, where the estimate collapses for
    deformed levels, the chessboard distance ``c`` to the nearest voxel on the other side (a
    lower bound of the Euclidean one) keeps far voxels far.
    """
    grads = np.gradient(level)
    norm = np.sqrt(sum(g * g for g in grads))
    first = np.abs(level) / np.maximum(norm, np.float32(1e-3))
    inside = level > 0
    cheb = np.where(inside, ndimage.distance_transform_cdt(inside, "chessboard"),
                    ndimage.distance_transform_cdt(~inside, "chessboard")).astype(np.float32)
    return (np.where(inside, 1, -1) * np.maximum(first, cheb - 1)).astype(np.float32, copy=False)


# Ambiguity model (see synthesize_case): lengths in units of the core radius r_core, at ambiguity 1.
_AMBIGUITY_KEY = 0x616D62  # sub-stream of the anatomy's soft borders
_RATER_KEY = 0x726174      # sub-stream of one rater's drawing
_REGIONS = ("wt", "tc", "ncr")
_FADE = 0.3  # logistic width of the WT (oedema) membership
_CORE_FADE = 0.35  # TC and necrosis widths relative to the WT width (the enhancing rim is sharper)
_JITTER = 0.08  # sd of a slice's in-plane shift and of its dilation
_LEVEL_SPREAD = 1.0  # sd of logit(threshold level), unitless


def _rater_label(levels: dict[str, np.ndarray], widths: dict[str, np.ndarray | float], jitter: float,
                 spread: float, rng: np.random.Generator, brain: np.ndarray, no_et: bool, no_ncr: bool
                 ) -> np.ndarray:
    """One rater's label map from the regions' signed levels (voxels, positive inside).

    Region ``r`` is drawn where ``membership_r = sigmoid(level_r / width_r) > q``, i.e.
    ``level_r > width_r logit(q)``, with one level ``logit(q) ~ N(0, spread^2)`` (clipped at
    2.5 sd) per (case, rater); each axial slice ``k`` (last axis) is drawn as a 2-D annotator
    would: its contour shifted in-plane by ``N(0, jitter^2)`` voxels per axis and dilated
    (eroded when negative) by ``N(0, jitter^2)`` voxels, independently per slice and region.
    Labels are composed as in the nominal case, then cut to the brain.
    """
    shape = brain.shape
    logit_q = spread * float(np.clip(rng.standard_normal(), -2.5, 2.5))
    x, y, z = (np.broadcast_to(g, shape) for g in _grid(shape))  # type: ignore[arg-type]
    masks = {}
    for r in _REGIONS:
        dilate = jitter * np.asarray(rng.standard_normal(shape[2]), dtype=np.float32)
        dx, dy = jitter * np.asarray(rng.standard_normal((2, shape[2])), dtype=np.float32)
        shifted = ndimage.map_coordinates(levels[r], [x - dx, y - dy, z], order=1, mode="nearest")
        masks[r] = shifted + dilate > np.asarray(widths[r], dtype=np.float32) * np.float32(logit_q)
    label = np.zeros(shape, dtype=np.uint8)
    label[masks["wt"]] = 2
    if no_et:
        label[masks["tc"]] = 1
    elif no_ncr:
        label[masks["tc"]] = 4
    else:
        label[masks["tc"]] = 4
        label[masks["ncr"] & masks["tc"]] = 1
    label[~brain] = 0
    return label


_PLACE_KEY = 0x706C63  # sub-stream of the brain box's position in the field of view
_PLACE_JITTER = 4      # largest shift (voxels per axis) of the brain box from the centre


def _check_brain_box(shape: tuple[int, int, int], brain_box: Sequence[int] | None) -> tuple[int, int, int] | None:
    """``brain_box`` as three ints in [8, shape]; None when absent or equal to ``shape``."""
    if brain_box is None:
        return None
    box = tuple(int(b) for b in brain_box)
    if len(box) != 3 or any(b < 8 or b > s for b, s in zip(box, shape)):
        raise ValueError(f"brain_box must be three sizes between 8 and the shape {list(shape)}, got {list(brain_box)}")
    return None if box == shape else box  # type: ignore[return-value]


def synthesize_case(shape: Sequence[int] = (96, 96, 64), seed: int | Sequence[int] = 0, ambiguity: float = 0.0,
                    *, rater: int | None = None, brain_box: Sequence[int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case of ``shape``; with ``brain_box``, the case of that size pasted into zeros.

    ``brain_box`` (three sizes <= ``shape``; None: the whole ``shape``) is the box the head is
    generated in: the brain fills 76-88 % of it per axis, as it fills the field of view without
    one. The box is placed at the centre of ``shape`` shifted by up to 4 voxels per axis (a
    sub-stream of ``seed``), and everything outside it is 0 (skull-stripped background), so
    ``out[box] == synthesize_case(brain_box, seed, ambiguity, rater=rater)`` exactly; the cost
    is that of the box.
    """
    shape_t = tuple(int(s) for s in shape)
    if len(shape_t) != 3 or min(shape_t) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape_t}")
    box = _check_brain_box(shape_t, brain_box)  # type: ignore[arg-type]
    if box is None:
        return _synthesize_box(shape_t, seed, ambiguity, rater)
    inner_image, inner_label = _synthesize_box(box, seed, ambiguity, rater)
    rng = _sub_rng(seed, _PLACE_KEY)
    start = []
    for s, b in zip(shape_t, box):
        centre, margin = (s - b) // 2, min((s - b) // 2, s - b - (s - b) // 2, _PLACE_JITTER)
        start.append(centre + int(rng.integers(-margin, margin + 1)))
    where = tuple(slice(a, a + b) for a, b in zip(start, box))
    image = np.zeros((inner_image.shape[0],) + shape_t, dtype=inner_image.dtype)
    label = np.zeros(shape_t, dtype=inner_label.dtype)
    image[(slice(None),) + where] = inner_image
    label[where] = inner_label
    return image, label


def _synthesize_box(shape: Sequence[int], seed: int | Sequence[int], ambiguity: float,
                    rater: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case filling ``shape`` (see :func:`synthesize_case`).

    Returns ``image`` (4, X, Y, Z) float32 in canonical order (flair, t1, t1ce, t2),
    positive inside the brain and 0 outside, and ``label`` (X, Y, Z) uint8 with values in
    {0, 1, 2, 4} (BraTS 2020), tumour inside the brain. Deterministic given ``(seed, ambiguity, rater)``.

    ``ambiguity`` in [0, 1] makes the borders fuzzy. 0 is the historical generator, bit for bit
    (hard tissue classes, blur sigma 0.7, a few boundary voxels flipped; ``rater`` is then
    ignored: every rater draws the same label). For ``a > 0`` the anatomy (same geometry and
    noise as at 0) is described by smooth memberships ``m_r = sigmoid(d_r / w_r)`` of the
    regions WT, TC and necrosis, ``d_r`` the signed distance (voxels) to the nominal border (no
    voxel flips: as ``a -> 0`` the case tends to the legacy one without its flipped voxels):

    * infiltrative oedema: ``w_WT = 0.3 a r_core exp(0.25 g)`` (``g`` a smooth unit field
      clipped to [-2, 2], ``r_core`` the core radius), so the FLAIR/T2 brightness fades into
      the tissue over a few ``w_WT``; ``w_TC = w_NCR = 0.35 * 0.3 a r_core``;
    * partial volume: intensities are mixed by membership, then blurred with sigma ``0.7 + 0.8 a``;
    * rater variability: the label thresholds the memberships at a level ``q`` drawn per case
      and rater, ``logit(q) ~ N(0, a^2)``, and each axial slice (last axis) is shifted in-plane
      and dilated or eroded by ``N(0, (0.08 a r_core)^2)`` voxels (see ``_rater_label``).

    The image depends on ``seed`` and ``ambiguity`` only; the label's rater-specific draws come
    from ``(seed, rater)`` (``rater=None`` is rater 0), so two raters of one case can be compared.
    """
    shape = tuple(int(s) for s in shape)
    a = _check_ambiguity(ambiguity)
    if rater is not None and (isinstance(rater, bool) or not isinstance(rater, (int, np.integer)) or rater < 0):
        raise ValueError(f"rater must be a non-negative int or None, got {rater!r}")
    rng = np.random.default_rng(seed)
    x, y, z = _grid(shape)  # type: ignore[arg-type]
    centre = np.array(shape, dtype=np.float32) / 2 + rng.uniform(-0.03, 0.03, 3) * np.array(shape)
    radii = np.array(shape, dtype=np.float32) * rng.uniform(0.38, 0.44, 3)
    u, v, w = (x - centre[0]) / radii[0], (y - centre[1]) / radii[1], (z - centre[2]) / radii[2]
    d = np.sqrt(u * u + v * v + w * w)  # 0 at the centre, 1 on the mean brain surface
    cell = min(shape) / 4
    surface = 1.0 + 0.05 * _smooth_field(shape, rng, cell)
    brain = d < surface
    rel = d / surface  # depth inside the brain, 0..1
    folds = 0.04 * _smooth_field(shape, rng, cell / 3)

    tissue = np.full(shape, 0, dtype=np.uint8)  # 0 wm, 1 gm, 2 csf
    tissue[rel + folds > 0.78] = 1
    tissue[rel > 0.94] = 2
    for side in (-1, 1):  # lateral ventricles
        vd = ((u - side * 0.16) / 0.10) ** 2 + ((v + 0.05) / 0.38) ** 2 + ((w - 0.05) / 0.18) ** 2
        tissue[vd < 1.0] = 2

    # Tumour: centre well inside the brain, irregular nested regions.
    small = rng.random() < 0.15
    no_et = rng.random() < 0.2
    no_ncr = (not no_et) and rng.random() < 0.15
    base = min(shape)
    r_core = base * (rng.uniform(0.03, 0.05) if small else rng.uniform(0.07, 0.13))
    r_core = max(r_core, 1.5)
    ed_factor = rng.uniform(1.4, 2.2)
    limit = max(0.0, 0.8 - ed_factor * r_core / float(min(radii)))  # keep tumour + oedema inside
    tc = centre
    for _ in range(100):
        t = rng.normal(size=3)
        t = t / np.linalg.norm(t) * rng.uniform(0.0, max(limit, 1e-3))
        cand = centre + t * radii
        if brain[tuple(np.clip(np.round(cand).astype(int), 0, np.array(shape) - 1))]:
            tc = cand
            break
    dist = np.sqrt((x - tc[0]) ** 2 + (y - tc[1]) ** 2 + (z - tc[2]) ** 2) / r_core
    # Multiplicative deformations exp(a * field) stay positive; hard radii keep the regions
    # in one piece around the tumour centre.
    dt = dist * np.exp(0.25 * _smooth_field(shape, rng, max(r_core, 2.0)))
    core = (dt < 1.0) & (dist < 1.6)
    necro_level = rng.uniform(0.45, 0.7) * np.exp(0.15 * _smooth_field(shape, rng, max(r_core / 2, 2.0)))
    necro = dt < necro_level
    ed_dist = dist * np.exp(0.3 * _smooth_field(shape, rng, max(r_core, 2.0)))
    oedema = (ed_dist < ed_factor) & (dist < 1.5 * ed_factor)

    label = np.zeros(shape, dtype=np.uint8)
    label[oedema] = 2
    if no_et:
        label[core] = 1
    elif no_ncr:
        label[core] = 4
    else:
        label[core] = 4
        label[necro & core] = 1
    label[~brain] = 0
    label = _jitter_labels(label, rng, fraction=0.08)  # also at a > 0: keeps the later draws (noise) aligned
    label[~brain] = 0

    # Intensities: tissue means, tumour classes on top, texture, blur, bias, noise.
    classes = {"wm": (tissue == 0), "gm": (tissue == 1), "csf": (tissue == 2),
               "ed": label == 2, "ncr": label == 1, "et": label == 4}
    member: dict[str, np.ndarray] = {}
    sigma_pv = 0.7
    if a > 0.0:
        # The nominal borders are the zero sets of these levels (positive inside), as in the masks above.
        levels = {"wt": _signed_distance(np.minimum(ed_factor - ed_dist, 1.5 * ed_factor - dist)),
                  "tc": _signed_distance(np.minimum(1.0 - dt, 1.6 - dist)),
                  "ncr": _signed_distance(necro_level - dt)}
        width = a * _FADE * r_core
        aux = _sub_rng(seed, _AMBIGUITY_KEY)
        widths: dict[str, np.ndarray | float] = {
            "wt": width * np.exp(0.25 * np.clip(_smooth_field(shape, aux, max(r_core, 2.0)), -2, 2)),
            "tc": _CORE_FADE * width, "ncr": _CORE_FADE * width}
        member = {r: (special.expit(levels[r] / widths[r]) * brain).astype(np.float32) for r in _REGIONS}
        label = _rater_label(levels, widths, a * _JITTER * r_core, a * _LEVEL_SPREAD,
                             _sub_rng(seed, _RATER_KEY, 0 if rater is None else rater), brain, no_et, no_ncr)
        sigma_pv = 0.7 + 0.8 * a
    image = np.zeros((4,) + shape, dtype=np.float32)
    texture = 0.05 * _smooth_field(shape, rng, 3.0)
    bias = np.exp(0.12 * _smooth_field(shape, rng, min(shape) / 1.5)).astype(np.float32)
    sigma_noise = 0.025 * _SCALE
    for c in range(len(MODALITIES)):
        chan = np.zeros(shape, dtype=np.float32)
        if not member:
            for name, mask in classes.items():  # later classes overwrite (tumour over tissue)
                chan[mask] = _TISSUE[name][c]
        else:  # soft: tissue, oedema mixed in by WT membership, core (ET/NCR mix) by TC membership
            for name in ("wm", "gm", "csf"):
                chan[classes[name]] = _TISSUE[name][c]
            et, ncr = np.float32(_TISSUE["et"][c]), np.float32(_TISSUE["ncr"][c])
            core_val = ncr if no_et else et if no_ncr else et + member["ncr"] * (ncr - et)
            chan += member["wt"] * (np.float32(_TISSUE["ed"][c]) - chan)
            chan += member["tc"] * (core_val - chan)
        chan = ndimage.gaussian_filter(chan * (1.0 + texture), sigma=sigma_pv) * _SCALE
        chan *= bias * np.float32(1.0 + rng.uniform(-0.05, 0.05))
        n1 = rng.standard_normal(shape, dtype=np.float32) * sigma_noise
        n2 = rng.standard_normal(shape, dtype=np.float32) * sigma_noise
        chan = np.sqrt((chan + n1) ** 2 + n2 ** 2)  # Rician magnitude
        chan = np.maximum(chan, 1.0)
        chan[~brain] = 0.0
        image[c] = chan
    return image, label


def case_name(index: int) -> str:
    """BraTS 2020 case id for a 1-based index: ``BraTS20_Training_001``."""
    return f"BraTS20_Training_{index:03d}"


IMAGE_DTYPES = ("float32", "int16")
"""How :func:`synthesize_dataset` stores intensities: float32 as generated, or int16 rounded (BraTS's own)."""


def _stored(image: np.ndarray, dtype: str) -> np.ndarray:
    """``image`` as stored: float32 unchanged, or int16 rounded to the nearest whole number."""
    if dtype == "float32":
        return image
    return np.rint(np.clip(image, 0, np.iinfo(np.int16).max)).astype(np.int16)


def _check_dtype(dtype: str) -> str:
    if dtype not in IMAGE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(IMAGE_DTYPES)}, got {dtype!r}")
    return dtype


def synthesize_dataset(out_dir: str | Path, n_cases: int = 12, shape: Sequence[int] = (96, 96, 64), seed: int = 0,
                       compress: bool = True, progress: bool = True,
                       spacing: Sequence[float] = (1.0, 1.0, 1.0), ambiguity: float = 0.0,
                       brain_box: Sequence[int] | None = None, dtype: str = "float32") -> list[Path]:
    """Write ``n_cases`` synthetic cases in the BraTS 2020 layout; return their folders.

    ``out_dir/BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz``
    (``.nii`` when not ``compress``), affine diag(spacing), each file written atomically.
    Case i is generated from seed (seed, i), so it does not depend on ``n_cases``. A case
    whose five files all exist is skipped (whatever ``ambiguity`` wrote them: use a fresh
    ``out_dir`` per ambiguity). ``ambiguity`` in [0, 1] is passed to :func:`synthesize_case`
    (default rater); ValueError outside, before anything is written. ``brain_box``: see
    :func:`synthesize_case`; ``dtype`` (``IMAGE_DTYPES``): ``"int16"`` stores the intensities
    rounded, as BraTS does (about half the bytes and a quarter of the gzip time at full size).
    """
    from tqdm.auto import tqdm

    ambiguity = _check_ambiguity(ambiguity)
    dtype = _check_dtype(dtype)
    _check_brain_box(tuple(int(s) for s in shape), brain_box)  # type: ignore[arg-type]
    out_dir = Path(out_dir)
    ext = ".nii.gz" if compress else ".nii"
    affine = np.diag([float(s) for s in spacing] + [1.0])
    folders = []
    for i in tqdm(range(1, int(n_cases) + 1), desc="synthesising cases", disable=not progress):
        cid = case_name(i)
        folder = out_dir / cid
        files = {m: folder / f"{cid}_{m}{ext}" for m in (*MODALITIES, "seg")}
        folders.append(folder)
        if all(p.is_file() for p in files.values()):
            continue
        image, label = synthesize_case(shape, seed=(int(seed), i), ambiguity=ambiguity, brain_box=brain_box)
        image = _stored(image, dtype)
        for c, m in enumerate(MODALITIES):
            write_nifti(files[m], image[c], affine)
        write_nifti(files["seg"], label, affine)
    return folders


EXAMPLE_FILES = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2"}
"""File stem of the example case (BraTS 2023 name) -> the synthetic modality it holds."""


def write_example_case(out_dir: str | Path, shape: Sequence[int] = (96, 96, 64), seed: int = 0,
                       ambiguity: float = 0.0, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                       brain_box: Sequence[int] | None = None, dtype: str = "float32") -> Path:
    """One held-out synthetic case as a user's scan folder: ``out_dir/{t2f,t1n,t1c,t2w,seg}.nii.gz``
    (plain BraTS 2023 names, labels in the 2023 convention: 1 necrosis, 2 oedema, 3 enhancing).

    It is case 0 of ``seed`` (the data set of :func:`synthesize_dataset` numbers its cases from 1),
    so a model trained on that data set has never seen it. Returns ``out_dir``."""
    ambiguity = _check_ambiguity(ambiguity)
    out = Path(out_dir)
    image, label = synthesize_case(shape, seed=(int(seed), 0), ambiguity=ambiguity, brain_box=brain_box)
    image = _stored(image, _check_dtype(dtype))
    affine = np.diag([float(s) for s in spacing] + [1.0])
    for stem, modality in EXAMPLE_FILES.items():
        write_nifti(out / f"{stem}.nii.gz", image[MODALITIES.index(modality)], affine)
    write_nifti(out / "seg.nii.gz", np.where(label == 4, 3, label).astype(label.dtype), affine)
    return out
