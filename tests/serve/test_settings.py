"""The endpoint's settings have one list of keys, types and defaults (serve/settings.py): the
shipped Serve config is valid against it, a bad key or value is refused with its name."""
from __future__ import annotations

import pytest

from serve.launch import read_config
from serve.settings import DEFAULT_MODEL, EndpointSettings, endpoint_settings


def test_defaults_fill_what_is_not_given_and_none_means_default():
    s = endpoint_settings({"max_voxels": 1000, "tta": None})
    assert s["max_voxels"] == 1000 and s["tta"] is None and s["model"] == DEFAULT_MODEL
    assert s["max_upload_mb"] == EndpointSettings().max_upload_mb
    assert set(s) == set(EndpointSettings.model_fields)


def test_the_shipped_serve_config_holds_only_known_settings():
    http, args, dep, proxy = read_config(None)
    s = endpoint_settings(args)
    assert s["model"] == args["model"]
    assert http["host"] == "127.0.0.1" and dep["ray_actor_options"]["num_cpus"] >= 1


@pytest.mark.parametrize("args,named", [
    ({"max_voxel": 5}, "max_voxel"),            # a misspelt key
    ({"max_batch_size": 0}, "max_batch_size"),  # out of range
    ({"tta": "sometimes"}, "tta"),              # wrong type
])
def test_a_bad_setting_is_refused_by_name(args, named):
    with pytest.raises(ValueError, match=named):
        endpoint_settings(args)
