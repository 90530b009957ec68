"""Where a model is: one rule for every command and the endpoint (singr.engine.source), and the
stores and service commands the core finds by entry point, never by import."""
from __future__ import annotations

import json

import pytest

import singr.cli as cli
from singr.engine import source
from singr.errors import SingrInputError


@pytest.mark.parametrize("given,kind,where", [
    ("models:/brain@champion", "registry", "models:/brain@champion"),
    ("models:/brain/3", "registry", "models:/brain/3"),
    ("brain@champion", "registry", "models:/brain@champion"),        # the short form
    ("runs:/0a1b/model", "run", "runs:/0a1b/model"),
    ("best.safetensors", "file", "best.safetensors"),                # a checkpoint name, even if absent
    ("runs/exp/best.pt", "file", "runs/exp/best.pt"),
    ("some@thing/else", "file", "some@thing/else"),                  # a path with an @ in it
])
def test_one_rule_for_every_source(given, kind, where):
    assert source.parse_model_source(given) == (kind, where)


def test_an_existing_folder_named_like_a_registry_model_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "brain@champion").mkdir()
    assert source.parse_model_source("brain@champion")[0] == "file"
    assert not source.is_remote(["brain@champion"])
    assert source.is_remote(["models:/brain@champion"]) and not source.is_remote(["a.safetensors", "b.safetensors"])


def test_registry_uris_parse_into_name_alias_version():
    assert source.parse_registry_uri("models:/brain@champion") == ("brain", "champion", None)
    assert source.parse_registry_uri("models:/brain/7") == ("brain", None, "7")
    assert source.parse_registry_uri("models:/brain") == ("brain", None, None)
    with pytest.raises(SingrInputError, match="cannot parse model URI"):
        source.parse_registry_uri("models:/brain/latest/x")


def test_files_stay_as_they_are_and_stores_come_by_entry_point(tmp_path, monkeypatch):
    assert source.local_model([str(tmp_path / "a.safetensors"), "b.safetensors"]) == [
        str(tmp_path / "a.safetensors"), "b.safetensors"]
    seen = []

    class Entry:
        name = "fake"

        def load(self):
            def fetch(src, tracking_uri):
                seen.append((src, tracking_uri))
                return tmp_path / "model", {"source": "fake"}
            return fetch

    import singr.plugins as plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [Entry()] if group == source.STORE_GROUP else [])
    assert source.local_model(["brain@champion"], "sqlite:///x.db") == [str(tmp_path / "model")]
    assert seen == [("models:/brain@champion", "sqlite:///x.db")]


def test_no_store_installed_says_what_to_install(monkeypatch):
    import singr.plugins as plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    with pytest.raises(SingrInputError, match=r"entry points are not installed \(run `pip install -e \.`"):
        source.fetch_model("models:/brain@champion")  # the tune package is here: its metadata is not
    monkeypatch.setattr(plugins, "find_spec", lambda name: None)
    with pytest.raises(SingrInputError, match=r"needs the tune extra \(pip install 'singr\[tune\]'\)"):
        source.fetch_model("models:/brain@champion")


def test_the_installed_package_publishes_the_mlflow_store():
    names = {e.name: e.value for e in source.plugins(source.STORE_GROUP)}
    assert names.get("mlflow") == "tune.hub.fetch:download_model"


def test_service_commands_plug_in_and_say_what_is_missing(monkeypatch, capsys):
    assert {"tune", "report", "serve"} <= set(cli.build_parser()._subparsers._group_actions[0].choices)
    import singr.plugins as plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    assert cli.main(["serve"]) == 2
    assert "`singr serve` is not registered" in capsys.readouterr().err  # serve is importable here
    monkeypatch.setattr(plugins, "find_spec", lambda name: None)
    assert cli.main(["serve"]) == 2
    assert "`singr serve` needs the serve extra (pip install 'singr[serve]')" in capsys.readouterr().err


def test_config_schema_covers_the_whole_file_when_the_service_is_installed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "schema.json"
    assert cli.main(["config", "--schema", "--out", str(out)]) == 0
    assert {"TuneSection", "MlflowSection", "TrainConfig"} <= set(json.loads(out.read_text())["$defs"])
    import singr.plugins as plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    assert cli.main(["config", "--schema", "--out", str(out)]) == 0
    defs = set(json.loads(out.read_text())["$defs"])
    assert "TrainConfig" in defs and "TuneSection" not in defs  # the core's own schema: service sections untyped
    assert "warning: the core's schema only" in capsys.readouterr().err
