"""numba kernels of the fast engine (:mod:`singr.sing.raster`); imported lazily, numba compiles
on first use and caches the machine code on disk.

Each kernel is one forward and one backward pass of FastGeodis' CPU raster scan along axis 0
of a (n0, n1, n2) distance array, in place: every voxel takes the minimum over its 3 x 3
neighbours q in the previous plane of ``d[q] + l_eucl * |step| + l_grad * sum_c |I_c(p) - I_c(q)|``
in float32 (FastGeodis' arithmetic). They are single-threaded and release the GIL; the
caller runs regions in threads.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, fastmath=False)
def pair_diffs(img):  # pragma: no cover - compiled
    """F[z, h, w, 3 * (dh + 1) + (dw + 1)] = sum_c |I_c(z, h, w) - I_c(z - 1, h + dh, w + dw)|.

    Summed over channels in order in float32, as FastGeodis does; the backward pass reads
    the same pairs from the other end (|a - b| == |b - a| exactly). 0 where q is outside.
    """
    n0, n1, n2, nc = img.shape
    out = np.zeros((n0, n1, n2, 9), dtype=np.float32)
    for z in range(1, n0):
        for h in range(n1):
            for w in range(n2):
                for dh in range(-1, 2):
                    hh = h + dh
                    if hh < 0 or hh >= n1:
                        continue
                    for dw in range(-1, 2):
                        ww = w + dw
                        if ww < 0 or ww >= n2:
                            continue
                        acc = np.float32(0.0)
                        for c in range(nc):
                            acc += abs(img[z, h, w, c] - img[z - 1, hh, ww, c])
                        out[z, h, w, 3 * (dh + 1) + (dw + 1)] = acc
    return out


@nb.njit(cache=True, nogil=True, fastmath=False, inline="always")
def _edge_voxel(dist, diffs, z, zp, qz, h, w, n1, n2, step, l_grad, forward):  # pragma: no cover
    """One voxel of :func:`scan_rows`, with bounds checks (rows and columns at the edges)."""
    new = dist[z, h, w]
    for dh in range(-1, 2):
        hh = h + dh
        if hh < 0 or hh >= n1:
            continue
        for dw in range(-1, 2):
            ww = w + dw
            if ww < 0 or ww >= n2:
                continue
            if forward:
                f = diffs[z, h, w, 3 * (dh + 1) + (dw + 1)]
            else:
                f = diffs[qz, hh, ww, 3 * (1 - dh) + (1 - dw)]
            cur = dist[zp, hh, ww] + step[dh + 1, dw + 1]
            cur = cur + l_grad * f
            new = min(new, cur)
    return new


@nb.njit(cache=True, nogil=True, fastmath=False)
def scan_rows(dist, diffs, ld, l_eucl, l_grad):  # pragma: no cover - compiled
    """The raster scan with the intensity terms read from :func:`pair_diffs` and the interior
    of each plane unrolled and branch-free.

    Same values bit for bit (the minimum of the same nine float32 sums, whatever the
    order); the interior loop has no bounds checks or data-dependent branches, so the
    compiler vectorises it across the row (3x faster than a plain transcription of
    FastGeodis' loop on a BraTS tumour's crop).
    """
    n0, n1, n2 = dist.shape
    step = np.empty((3, 3), dtype=np.float32)
    for a in range(3):
        for b in range(3):
            step[a, b] = l_eucl * ld[a, b]
    s00, s01, s02 = step[0, 0], step[0, 1], step[0, 2]
    s10, s11, s12 = step[1, 0], step[1, 1], step[1, 2]
    s20, s21, s22 = step[2, 0], step[2, 1], step[2, 2]
    g = l_grad
    changed = 0
    for direction in range(2):
        forward = direction == 0
        for k in range(1, n0):
            z = k if forward else n0 - 1 - k
            zp = z - 1 if forward else z + 1
            qz = z if forward else zp  # plane whose diffs hold the pair
            for h in range(n1):
                edge_row = h == 0 or h == n1 - 1
                for w in range(n2):
                    if not edge_row and 0 < w < n2 - 1:
                        continue  # interior: below
                    old = dist[z, h, w]
                    new = _edge_voxel(dist, diffs, z, zp, qz, h, w, n1, n2, step, g, forward)
                    dist[z, h, w] = new
                    changed += new < old
                if edge_row:
                    continue
                P = dist[zp]
                Z = dist[z]
                if forward:
                    F = diffs[z]
                    for w in range(1, n2 - 1):
                        old = Z[h, w]
                        new = old
                        new = min(new, P[h - 1, w - 1] + s00 + g * F[h, w, 0])
                        new = min(new, P[h - 1, w] + s01 + g * F[h, w, 1])
                        new = min(new, P[h - 1, w + 1] + s02 + g * F[h, w, 2])
                        new = min(new, P[h, w - 1] + s10 + g * F[h, w, 3])
                        new = min(new, P[h, w] + s11 + g * F[h, w, 4])
                        new = min(new, P[h, w + 1] + s12 + g * F[h, w, 5])
                        new = min(new, P[h + 1, w - 1] + s20 + g * F[h, w, 6])
                        new = min(new, P[h + 1, w] + s21 + g * F[h, w, 7])
                        new = min(new, P[h + 1, w + 1] + s22 + g * F[h, w, 8])
                        Z[h, w] = new
                        changed += new < old
                else:
                    F = diffs[zp]
                    for w in range(1, n2 - 1):
                        old = Z[h, w]
                        new = old
                        new = min(new, P[h - 1, w - 1] + s00 + g * F[h - 1, w - 1, 8])
                        new = min(new, P[h - 1, w] + s01 + g * F[h - 1, w, 7])
                        new = min(new, P[h - 1, w + 1] + s02 + g * F[h - 1, w + 1, 6])
                        new = min(new, P[h, w - 1] + s10 + g * F[h, w - 1, 5])
                        new = min(new, P[h, w] + s11 + g * F[h, w, 4])
                        new = min(new, P[h, w + 1] + s12 + g * F[h, w + 1, 3])
                        new = min(new, P[h + 1, w - 1] + s20 + g * F[h + 1, w - 1, 2])
                        new = min(new, P[h + 1, w] + s21 + g * F[h + 1, w, 1])
                        new = min(new, P[h + 1, w + 1] + s22 + g * F[h + 1, w + 1, 0])
                        Z[h, w] = new
                        changed += new < old
    return changed > 0


@nb.njit(cache=True, nogil=True, fastmath=False)
def scan_rows_spatial(dist, ld, l_eucl):  # pragma: no cover - compiled
    """:func:`scan_rows` for lambda = 0 (G^0): no intensity term, nothing to read but ``dist``.

    A separate kernel rather than a flag: the interior loop stays one straight line of
    nine min() that the compiler vectorises, which a run-time branch would prevent.
    """
    n0, n1, n2 = dist.shape
    step = np.empty((3, 3), dtype=np.float32)
    for a in range(3):
        for b in range(3):
            step[a, b] = l_eucl * ld[a, b]
    s00, s01, s02 = step[0, 0], step[0, 1], step[0, 2]
    s10, s11, s12 = step[1, 0], step[1, 1], step[1, 2]
    s20, s21, s22 = step[2, 0], step[2, 1], step[2, 2]
    changed = 0
    for direction in range(2):
        forward = direction == 0
        for k in range(1, n0):
            z = k if forward else n0 - 1 - k
            zp = z - 1 if forward else z + 1
            P = dist[zp]
            Z = dist[z]
            for h in range(n1):
                edge_row = h == 0 or h == n1 - 1
                for w in range(n2):
                    if not edge_row and 0 < w < n2 - 1:
                        continue
                    old = Z[h, w]
                    new = old
                    for dh in range(-1, 2):
                        hh = h + dh
                        if 0 <= hh < n1:
                            for dw in range(-1, 2):
                                ww = w + dw
                                if 0 <= ww < n2:
                                    new = min(new, P[hh, ww] + step[dh + 1, dw + 1])
                    Z[h, w] = new
                    changed += new < old
                if edge_row:
                    continue
                for w in range(1, n2 - 1):
                    old = Z[h, w]
                    new = old
                    new = min(new, P[h - 1, w - 1] + s00)
                    new = min(new, P[h - 1, w] + s01)
                    new = min(new, P[h - 1, w + 1] + s02)
                    new = min(new, P[h, w - 1] + s10)
                    new = min(new, P[h, w] + s11)
                    new = min(new, P[h, w + 1] + s12)
                    new = min(new, P[h + 1, w - 1] + s20)
                    new = min(new, P[h + 1, w] + s21)
                    new = min(new, P[h + 1, w + 1] + s22)
                    Z[h, w] = new
                    changed += new < old
    return changed > 0
