"""`singr serve`'s key: from a file or the environment; on the command line it works but warns
(other local users see it in ps); a bad key file stops the command before anything starts."""
from __future__ import annotations

import pytest

from serve.commands import api_key as _api_key
from singr.cli import main
from singr.errors import SingrInputError


def test_key_from_a_file(tmp_path):
    f = tmp_path / "key"
    f.write_text("s3cret-key\n# comment lines after the first are ignored\n")
    assert _api_key(None, str(f)) == "s3cret-key"
    assert _api_key(None, None) is None  # then $SINGR_API_KEY or the config decides


@pytest.mark.parametrize("content", ["", "\n\n", "   \n"])
def test_an_empty_key_file_is_refused(tmp_path, content):
    f = tmp_path / "key"
    f.write_text(content)
    with pytest.raises(SingrInputError, match="API key file is empty") as e:
        _api_key(None, str(f))
    assert str(f) in str(e.value)


def test_the_command_line_key_warns_and_both_are_refused(tmp_path, capsys):
    assert _api_key("k1", None) == "k1"
    assert "visible to every local user" in capsys.readouterr().err
    with pytest.raises(SingrInputError, match="either --api-key or --api-key-file"):
        _api_key("k1", str(tmp_path / "key"))


def test_a_missing_key_file_stops_serve_before_it_starts(tmp_path, capsys):
    missing = tmp_path / "nope" / "key"
    assert main(["serve", "--model", "x.safetensors", "--api-key-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the API key file" in err and str(missing) in err
