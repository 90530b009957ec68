"""The inference path (singr.engine.infer) on tiny volumes with toy networks, CPU only:
crop + paste-back, mirroring, ensembles, batching, training mode and dropout, precision."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from singr.engine import infer
from singr.engine.infer import InferenceSettings, Predictor, channels_last_copy, resolve_precision
from singr.engine.meta import ModelMeta
from singr.errors import SingrInputError

META = ModelMeta(in_channels=4, out_channels=3, region_names=("TC", "WT", "ET"), label_convention="brats2023")


def _settings(**kw) -> InferenceSettings:
    base = dict(roi_size=(16, 16, 16), overlap=0.5, mode="gaussian", multiple=8, precision="float32")
    base.update(kw)
    return InferenceSettings(**base)  # type: ignore[arg-type]


def _image(shape=(4, 24, 28, 20), seed: int = 0, box=((4, 19), (6, 24), (3, 15))) -> np.ndarray:
    """A normalised-looking image: noise inside a box-shaped 'brain' with a blob, zeros outside."""
    rng = np.random.default_rng(seed)
    im = np.zeros(shape, dtype=np.float32)
    sl = tuple(slice(a, b) for a, b in box)
    im[(slice(None),) + sl] = rng.normal(size=(shape[0],) + tuple(b - a for a, b in box))
    im[:, sl[0].start + 3:sl[0].start + 8, sl[1].start + 4:sl[1].start + 9, sl[2].start + 2:sl[2].start + 6] += 2.0
    return im


def _conv_net(seed: int = 0, symmetric: bool = False) -> nn.Module:
    """One 3x3x3 convolution (4 -> 3): local, so cropping with a zero margin changes nothing
    inside the brain. ``symmetric``: kernels mirror-symmetric on every axis (flip-equivariant)."""
    torch.manual_seed(seed)
    net = nn.Conv3d(4, 3, 3, padding=1)
    if symmetric:
        with torch.no_grad():
            w = net.weight
            for d in (2, 3, 4):
                w.copy_((w + w.flip(d)) / 2)
    return net


def test_crop_and_paste_back_equal_the_uncropped_prediction_inside_the_brain():
    im = _image()
    brain = np.any(im != 0, axis=0)
    net = _conv_net()
    cropped = Predictor([net], _settings(crop=True), META).signed_maps_batch([im])[0]
    whole = Predictor([net], _settings(crop=False), META).signed_maps_batch([im])[0]
    assert cropped.shape == (3,) + im.shape[1:] and cropped.dtype == np.float32
    # one window covers the whole volume as well as the crop: same output inside the brain
    one = _settings(roi_size=(32, 32, 32), mode="constant")
    c1 = Predictor([net], one.with_(crop=True), META).signed_maps_batch([im])[0]
    w1 = Predictor([net], one.with_(crop=False), META).signed_maps_batch([im])[0]
    np.testing.assert_allclose(c1[:, brain], w1[:, brain], atol=1e-5)
    assert np.all(c1[:, ~brain] == -1.0) and np.all(cropped[:, ~brain] == -1.0)
    assert np.any(whole[:, ~brain] != -1.0)  # without the crop nothing is masked
    assert np.abs(cropped[:, brain]).max() < 1 and np.any(cropped[:, brain] > 0)


def test_an_image_without_a_brain_is_minus_one_without_running_the_network():
    class Boom(nn.Module):
        def forward(self, x):  # pragma: no cover - must not run
            raise AssertionError("the network ran on an empty image")

    im = np.zeros((4, 10, 12, 8), dtype=np.float32)
    out = Predictor([Boom()], _settings(), META).signed_maps_batch([im])[0]
    assert out.shape == (3, 10, 12, 8) and np.all(out == -1.0)


def test_tta_with_a_flip_equivariant_network_equals_no_tta():
    im = _image(seed=1)
    net = _conv_net(symmetric=True)
    one = _settings(roi_size=(32, 32, 32))
    plain = Predictor([net], one, META).signed_maps_batch([im])[0]
    tta = Predictor([net], one.with_(tta=True), META).signed_maps_batch([im])[0]
    np.testing.assert_allclose(tta, plain, atol=1e-5)


def test_an_ensemble_of_two_identical_members_equals_one_member():
    im = _image(seed=2)
    a, b = _conv_net(seed=3), _conv_net(seed=3)
    one = Predictor([a], _settings(), META).signed_maps_batch([im])[0]
    two = Predictor([a, b], _settings(), META).signed_maps_batch([im])[0]
    np.testing.assert_allclose(two, one, atol=1e-6)


def test_predict_batch_equals_per_image_predict():
    # two images of one shape (segmented together, cropped to the union of their brains) and one other shape
    ims = [_image(seed=4) * 5 + 3, _image(seed=5, box=((2, 14), (10, 26), (5, 18))) * 2,
           _image(shape=(4, 20, 20, 16), seed=6, box=((3, 17), (2, 15), (4, 12)))]
    for im in ims:
        im[:, ~np.any(im != 3, axis=0)] = 0
    pred = Predictor([_conv_net(seed=7)], _settings(roi_size=(32, 32, 32)), META)
    batch = pred.predict_batch(ims)
    for im, p in zip(ims, batch):
        q = pred.predict(im)
        brain = np.any(im != 0, axis=0)
        np.testing.assert_allclose(p.signed[:, brain], q.signed[:, brain], atol=1e-5)
        assert np.all(p.signed[:, ~brain] == -1.0)
        assert np.array_equal(p.labels, q.labels) and p.labels.shape == im.shape[1:]


class _DropNet(nn.Module):
    """Norm + dropout + convolution: random outputs if dropout were on during prediction."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(4, 8, 3, padding=1)
        self.norm = nn.InstanceNorm3d(8, affine=True)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Conv3d(8, 3, 1)

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.norm(self.conv(x)))))


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_network_in_training_mode_is_returned_in_training_mode_and_dropout_is_off(precision):
    im = _image(seed=8)
    net = _DropNet().train()
    pred = Predictor.from_model(net, _settings(precision=precision), meta=META)
    a = pred.predict_prepared(im).signed
    b = pred.predict_prepared(im).signed
    assert net.training and all(m.training for m in net.modules())
    np.testing.assert_array_equal(a, b)  # dropout off: deterministic
    expect = Predictor.from_model(_DropNet().eval(), _settings(precision=precision), meta=META).predict_prepared(im)
    np.testing.assert_array_equal(a, expect.signed)
    # the borrowed network is left as it was: same modules, contiguous weights
    assert isinstance(net.norm, nn.InstanceNorm3d) and net.conv.weight.is_contiguous()


def test_the_channels_last_copy_computes_the_same_function():
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=3, in_channels=4, out_channels=3, features=(4, 4, 8, 8, 16, 4)).eval()
    fast = channels_last_copy(net)
    assert not any(type(m) is nn.InstanceNorm3d for m in fast.modules())
    assert any(type(m) is nn.InstanceNorm3d for m in net.modules())  # the original is untouched
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.inference_mode():
        ref = net(x)
        got = fast(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)


def test_bfloat16_is_close_to_float32():
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=3, in_channels=4, out_channels=3, features=(4, 4, 8, 8, 16, 4))
    im = _image(seed=9)
    brain = np.any(im != 0, axis=0)
    unet = _settings(roi_size=(32, 32, 32), multiple=16)
    f32 = Predictor([net], unet, META).signed_maps_batch([im])[0]
    bf = Predictor([net], unet.with_(precision="bfloat16"), META)
    assert bf.precision == "bfloat16" and bf.channels_last == (bf.device.type == "cpu")
    b16 = bf.signed_maps_batch([im])[0]
    d = np.abs(b16 - f32)[:, brain]
    assert d.mean() < 0.02 and d.max() < 0.2
    # labels agree except where S-hat is within bfloat16's rounding of 0
    disagree = ((b16 >= 0) != (f32 >= 0))[:, brain]
    assert np.all(np.abs(f32[:, brain][disagree]) < 0.1)
    assert disagree.mean() < 0.02


def test_precision_auto_is_bfloat16_only_on_a_cpu_with_native_bfloat16(monkeypatch):
    monkeypatch.setattr(infer, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bfloat16"
    assert resolve_precision("auto", torch.device("cuda")) == "float32"
    assert resolve_precision("float32", "cpu") == "float32" and resolve_precision("bfloat16", "cpu") == "bfloat16"
    monkeypatch.setattr(infer, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "float32"
    pred = Predictor([_conv_net()], _settings(precision="auto"), META)
    assert pred.precision == "float32" and not pred.channels_last
    with pytest.raises(SingrInputError):
        resolve_precision("half", "cpu")


def test_with_settings_keeps_the_members_and_switches_the_path():
    im = _image(seed=10)
    pred = Predictor([_conv_net(seed=11)], _settings(), META)
    other = pred.with_settings(precision="bfloat16")
    assert other.members is pred.members and other.settings.precision == "bfloat16"
    assert pred.settings.precision == "float32"
    a = pred.predict_prepared(im).signed
    b = other.predict_prepared(im).signed
    assert np.abs(a - b).mean() < 0.02


def test_regions_are_the_label_maps_when_the_thresholded_maps_do_not_nest():
    from singr.engine.postprocess import PostprocessRules
    from singr.regions import labels_to_regions

    pred = Predictor([_conv_net()], _settings(), dataclasses.replace(META, label_convention="brats2020"))
    signed = np.full((3, 6, 6, 6), -0.5, dtype=np.float32)
    signed[2, 0, 0, 0] = 0.3                 # ET >= 0 where TC and WT are < 0
    signed[0, 2:4, 2:4, 2:4] = 0.4           # TC >= 0 where WT < 0
    signed[1, 2:5, 2:5, 2:5] = 0.2           # WT around the TC
    signed[1, 0, 5, 5] = 0.1                 # one oedema voxel alone
    for p in (pred.from_signed(signed), pred.from_signed(signed, "brats2023")):
        np.testing.assert_array_equal(p.regions, labels_to_regions(p.labels, p.label_convention))
        tc, wt, et = p.regions
        assert et[0, 0, 0] and tc[0, 0, 0] and wt[0, 0, 0]   # the ET voxel is in TC and WT too
        assert np.all(wt[2:5, 2:5, 2:5]) and np.all(tc[2:4, 2:4, 2:4])
        assert not tc[4, 4, 4] and wt[0, 5, 5] and not tc[0, 5, 5]
        et_label = 4 if p.label_convention == "brats2020" else 3
        # volumes from the regions agree with the label map's voxel counts
        assert int(wt.sum()) == int((p.labels > 0).sum()) == 27 + 2
        assert int(tc.sum()) == int(np.isin(p.labels, (1, et_label)).sum()) == 8 + 1
        assert int(et.sum()) == int((p.labels == et_label).sum()) == 1
    # post-processing acts on the nested regions: removing WT components under 2 voxels takes the
    # lone ET voxel (a 1-voxel WT component once nested) and the lone oedema voxel out of every region
    ruled = Predictor([_conv_net()], _settings(), META, postprocess=PostprocessRules({"WT": 2}))
    p = ruled.from_signed(signed)
    np.testing.assert_array_equal(p.regions, labels_to_regions(p.labels, p.label_convention))
    assert not p.regions[:, 0, 0, 0].any() and not p.regions[:, 0, 5, 5].any()
    assert int(p.regions[1].sum()) == 27 and int(p.regions[0].sum()) == 8


def test_the_postprocess_setting_switches_a_models_rules_on_and_off():
    from singr.engine.postprocess import PostprocessRules

    signed = np.full((3, 6, 6, 6), -0.5, dtype=np.float32)
    signed[:2, 1:4, 1:4, 1:4] = 0.5
    wipe = PostprocessRules({"WT": 10**6})   # removes every WT component, and what nests in it
    on = Predictor([_conv_net()], _settings(), META, postprocess=wipe)
    off = on.with_settings(postprocess=False)
    assert on.applies_postprocess and not off.applies_postprocess and off.postprocess is wipe
    assert not on.from_signed(signed).regions.any()
    assert int(off.from_signed(signed).regions[1].sum()) == 27
    assert not Predictor([_conv_net()], _settings(), META).applies_postprocess  # no rules: nothing to apply


def test_settings_from_config_read_postprocess_and_precision():
    from singr.config import load_config

    cfg = load_config("smoke.yaml", ["infer.postprocess=false", "infer.precision=auto"])
    s = InferenceSettings.from_config(cfg)
    assert s.postprocess is False and s.precision == "auto"
    assert InferenceSettings.from_config(load_config("smoke.yaml")).postprocess is True
    assert InferenceSettings.from_config(cfg, postprocess=True).postprocess is True
