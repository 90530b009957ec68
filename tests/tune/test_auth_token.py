"""Ray's token on a fresh machine: `ray start --head` makes none, so the local cluster and the
tests' heads make one first (tune.devcluster.ensure_auth_token), and keep an existing one."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tune.devcluster import ensure_auth_token

BIN = Path(sys.executable).parent


def _fresh_home(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"HOME": str(tmp_path), "RAY_AUTH_MODE": "token"})
    return env


def test_a_fresh_machine_gets_a_token_and_keeps_it(tmp_path):
    env = _fresh_home(tmp_path)
    token = tmp_path / ".ray" / "auth_token"
    # what failed on a fresh machine: `ray start --head` with token mode and no token refuses to start
    p = subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--port=1",
                        f"--temp-dir={tmp_path / 'ray'}"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "no authentication token was found" in p.stdout + p.stderr
    assert not token.exists()
    ensure_auth_token(BIN / "ray", env)
    first = token.read_text()
    assert len(first.strip()) >= 16
    ensure_auth_token(BIN / "ray", env)
    assert token.read_text() == first  # an existing token is kept (the running clusters use it)
