"""The predictor's watch: progress over every network call, and an exception that ends the work
(what the endpoint's compute deadlines, cancellation and job progress rest on)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from singr.engine.infer import InferenceSettings, Predictor, count_windows


class _Count(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 3, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x)


def _predictor(tta: bool, members: int = 1) -> tuple[Predictor, list[_Count]]:
    nets = [_Count() for _ in range(members)]
    settings = InferenceSettings(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.5, tta=tta, crop=False,
                                 precision="float32")
    pred = Predictor.from_model(nets[0], settings)
    pred.members = list(nets)
    return pred, nets


@pytest.mark.parametrize("shape,roi,overlap", [((40, 33, 16), (16, 16, 16), 0.5), ((10, 10, 10), (16, 16, 16), 0.25),
                                                ((64, 48, 20), (32, 32, 16), 0.5), ((17, 17, 17), (16, 16, 16), 0.0)])
def test_count_windows_is_monais(shape, roi, overlap):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    padded = tuple(max(s, r) for s, r in zip(shape, roi))
    interval = _get_scan_interval(padded, roi, 3, (overlap,) * 3)
    assert count_windows(shape, roi, overlap) == len(dense_patch_slices(padded, roi, interval))


@pytest.mark.parametrize("tta,members", [(False, 1), (True, 1), (False, 2)])
def test_watch_sees_every_call_and_ends_at_one(tta, members):
    pred, nets = _predictor(tta, members)
    seen: list[float] = []
    image = np.random.default_rng(0).random((2, 40, 33, 16)).astype(np.float32)
    ref = pred.signed_maps_batch([image])[0]
    calls_before = sum(n.calls for n in nets)
    out = pred.signed_maps_batch([image], watch=seen.append)[0]
    calls = sum(n.calls for n in nets) - calls_before
    np.testing.assert_array_equal(out, ref)  # watching changes nothing
    assert len(seen) == 2 * calls and seen == sorted(seen) and seen[-1] == 1.0
    assert pred.passes == members * (8 if tta else 1)
    assert calls == pred.passes * -(-count_windows((40, 33, 16), (16, 16, 16), 0.5) // 2)


def test_an_exception_in_the_watch_ends_the_prediction():
    pred, nets = _predictor(tta=True)

    class Stop(Exception):
        pass

    def watch(fraction: float) -> None:
        if fraction >= 0.25:
            raise Stop()

    image = np.random.default_rng(1).random((2, 40, 33, 16)).astype(np.float32)
    with pytest.raises(Stop):
        pred.predict(image, watch=watch)
    full = pred.passes * -(-count_windows((40, 33, 16), (16, 16, 16), 0.5) // 2)
    assert 0 < nets[0].calls < full / 2  # ended at the first call past a quarter
