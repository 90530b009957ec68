"""numba kernels of :mod:`singr.fastsing` (imported lazily: numba compiles on first use)."""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, fastmath=False)
def scan(dist, img, ld, l_eucl, l_grad, use_img):  # pragma: no cover - compiled
    """Forward then backward pass along axis 0 of ``dist`` (n0, n1, n2), in place.

    ``img`` (n0, n1, n2, C) float32; ``ld`` (3, 3) float32 step lengths for the (axis-1,
    axis-2) offsets. Each voxel takes min over its 3 x 3 neighbours q in the previous plane
    of ``d[q] + l_eucl * ld + l_grad * sum_c |I_c(p) - I_c(q)|`` (FastGeodis' arithmetic,
    float32, same order). Returns True when any voxel decreased.
    """
    n0, n1, n2 = dist.shape
    nc = img.shape[3]
    changed = False
    step = np.empty((3, 3), dtype=np.float32)
    for a in range(3):
        for b in range(3):
            step[a, b] = l_eucl * ld[a, b]
    for direction in range(2):
        for k in range(1, n0):
            z = k if direction == 0 else n0 - 1 - k
            zp = z - 1 if direction == 0 else z + 1
            for h in range(n1):
                h0 = max(h - 1, 0)
                h1 = min(h + 2, n1)
                for w in range(n2):
                    w0 = max(w - 1, 0)
                    w1 = min(w + 2, n2)
                    new = dist[z, h, w]
                    old = new
                    for hh in range(h0, h1):
                        for ww in range(w0, w1):
                            cur = dist[zp, hh, ww] + step[hh - h + 1, ww - w + 1]
                            if use_img:
                                l_dist = np.float32(0.0)
                                for c in range(nc):
                                    l_dist += abs(img[z, h, w, c] - img[zp, hh, ww, c])
                                cur = cur + l_grad * l_dist
                            if cur < new:
                                new = cur
                    if new < old:
                        dist[z, h, w] = new
                        changed = True
    return changed


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


@nb.njit(cache=True, nogil=True, fastmath=False)
def scan_pre(dist, diffs, ld, l_eucl, l_grad):  # pragma: no cover - compiled
    """:func:`scan` with the intensity terms read from :func:`pair_diffs` (same values)."""
    n0, n1, n2 = dist.shape
    changed = False
    step = np.empty((3, 3), dtype=np.float32)
    for a in range(3):
        for b in range(3):
            step[a, b] = l_eucl * ld[a, b]
    for k in range(1, n0):  # forward: q = (z - 1, h + dh, w + dw), pair stored at p
        z = k
        for h in range(n1):
            for w in range(n2):
                new = dist[z, h, w]
                old = new
                for dh in range(-1, 2):
                    hh = h + dh
                    if hh < 0 or hh >= n1:
                        continue
                    for dw in range(-1, 2):
                        ww = w + dw
                        if ww < 0 or ww >= n2:
                            continue
                        cur = dist[z - 1, hh, ww] + step[dh + 1, dw + 1]
                        cur = cur + l_grad * diffs[z, h, w, 3 * (dh + 1) + (dw + 1)]
                        if cur < new:
                            new = cur
                if new < old:
                    dist[z, h, w] = new
                    changed = True
    for k in range(1, n0):  # backward: q = (z + 1, h + dh, w + dw), pair stored at q with (-dh, -dw)
        z = n0 - 1 - k
        for h in range(n1):
            for w in range(n2):
                new = dist[z, h, w]
                old = new
                for dh in range(-1, 2):
                    hh = h + dh
                    if hh < 0 or hh >= n1:
                        continue
                    for dw in range(-1, 2):
                        ww = w + dw
                        if ww < 0 or ww >= n2:
                            continue
                        cur = dist[z + 1, hh, ww] + step[dh + 1, dw + 1]
                        cur = cur + l_grad * diffs[z + 1, hh, ww, 3 * (1 - dh) + (1 - dw)]
                        if cur < new:
                            new = cur
                if new < old:
                    dist[z, h, w] = new
                    changed = True
    return changed
