"""`singr serve`'s deployment size (serve/launch.py deployment_options): the shipped config
autoscales; --replicas N is a fixed N (the config's autoscaling dropped, since Serve refuses
both); --min-replicas/--max-replicas set the bounds; the replicas' resources stay with
autoscaling; a bad block is refused before Ray starts, in one line naming the key or flag.
No Ray is started here."""
from __future__ import annotations

import pytest

from serve.launch import DEFAULT_CONFIG, deployment_options, describe_scaling, read_config
from singr.cli import main
from singr.errors import SingrInputError


def _shipped() -> dict:
    return read_config(None)[2]


def test_the_shipped_config_autoscales_one_to_two_replicas():
    dep = deployment_options(_shipped(), DEFAULT_CONFIG)
    auto = dep["autoscaling_config"]
    assert "num_replicas" not in dep
    assert auto["min_replicas"] == 1 and auto["max_replicas"] == 2
    assert 0 < auto["target_ongoing_requests"] <= dep["max_ongoing_requests"]
    assert auto["upscale_delay_s"] < auto["downscale_delay_s"]
    assert describe_scaling(dep).startswith("1 to 2 replicas (autoscaling")
    from ray.serve.config import AutoscalingConfig

    AutoscalingConfig(**auto)  # Ray's own schema takes it


def test_replicas_is_a_fixed_number_and_drops_autoscaling():
    dep = deployment_options(_shipped(), DEFAULT_CONFIG, replicas=3, num_gpus=1)
    assert dep["num_replicas"] == 3 and "autoscaling_config" not in dep
    assert dep["ray_actor_options"]["num_gpus"] == 1
    assert describe_scaling(dep) == "3 replicas"


def test_bounds_from_the_command_line_keep_the_rest_and_the_resources():
    dep = deployment_options(_shipped(), DEFAULT_CONFIG, min_replicas=2, max_replicas=4, num_gpus=1, num_cpus=2)
    assert dep["autoscaling_config"]["min_replicas"] == 2 and dep["autoscaling_config"]["max_replicas"] == 4
    assert dep["autoscaling_config"]["target_ongoing_requests"] == _shipped()["autoscaling_config"][
        "target_ongoing_requests"]
    assert dep["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1}  # every replica's, autoscaled ones too
    # a config with a fixed size: the bounds make it autoscale (num_replicas dropped)
    fixed = {"num_replicas": 2, "max_ongoing_requests": 8, "ray_actor_options": {"num_cpus": 1}}
    dep = deployment_options(fixed, "x.yaml", max_replicas=3)
    assert "num_replicas" not in dep and dep["autoscaling_config"] == {"max_replicas": 3}
    assert deployment_options(fixed, "x.yaml") == fixed  # nothing asked: as configured


@pytest.mark.parametrize("block,named", [
    ({"min_replicas": 0, "max_replicas": 2}, "autoscaling_config.min_replicas must be a whole number >= 1"),
    ({"min_replicas": 3, "max_replicas": 2}, "autoscaling_config.min_replicas (3) is above"),
    ({"max_replicas": "two"}, "autoscaling_config.max_replicas must be a whole number"),
    ({"max_replicas": 2.5}, "autoscaling_config.max_replicas must be a whole number"),
    ({"target_ongoing_requests": 0}, "autoscaling_config.target_ongoing_requests must be a number > 0"),
    ({"target_ongoing_requests": 40}, "target_ongoing_requests (40) is above max_ongoing_requests (16)"),
    ({"upscale_delay_s": -1}, "autoscaling_config.upscale_delay_s must be a number >= 0"),
    ({"initial_replicas": 3, "max_replicas": 2}, "autoscaling_config.initial_replicas (3) must lie between"),
    ({"upscale_delay": 1}, "autoscaling_config.upscale_delay is not an autoscaling setting"),
    ({"aggregation_function": "median"}, "autoscaling_config.aggregation_function"),
    ([1, 2], "autoscaling_config must be a mapping"),
])
def test_a_bad_block_is_refused_naming_the_key_and_the_file(block, named, tmp_path):
    dep = {**_shipped(), "autoscaling_config": block}
    with pytest.raises(SingrInputError) as e:
        deployment_options(dep, tmp_path / "serve.yaml")
    assert named in str(e.value) and str(tmp_path / "serve.yaml") in str(e.value)
    assert "\n" not in str(e.value)


def test_fixed_and_autoscaled_at_once_is_refused():
    with pytest.raises(SingrInputError, match="num_replicas and autoscaling_config exclude each other"):
        deployment_options({**_shipped(), "num_replicas": 2}, "serve.yaml")
    with pytest.raises(SingrInputError, match="either --replicas N .* or --min-replicas/--max-replicas"):
        deployment_options(_shipped(), "serve.yaml", replicas=2, max_replicas=3)
    with pytest.raises(SingrInputError, match="--max-replicas must be a whole number >= 1, got 0"):
        deployment_options(_shipped(), "serve.yaml", max_replicas=0)
    with pytest.raises(SingrInputError, match=r"--min-replicas \(3\) is above .*max_replicas \(2\)"):
        deployment_options(_shipped(), "serve.yaml", min_replicas=3)


def test_singr_serve_stops_on_a_bad_bound_before_ray_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # `singr serve` sets it: restored afterwards
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("applications:\n  - name: singr\n    args: {model: x.safetensors}\n    deployments:\n"
                   "      - name: SingrSegmenter\n        autoscaling_config: {min_replicas: 2, max_replicas: 1}\n")
    assert main(["serve", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "min_replicas (2) is above" in err and str(cfg) in err
    assert main(["serve", "--replicas", "2", "--max-replicas", "3"]) == 2
    assert "not both" in capsys.readouterr().err
