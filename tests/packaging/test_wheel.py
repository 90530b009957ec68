"""The project installs as a wheel (not editable) and runs from any folder: configs and the
Serve config ship as package data, found with importlib.resources."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_wheel_installs_and_runs_from_another_folder(tmp_path):
    dist = tmp_path / "dist"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(dist)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    wheel = next(dist.glob("singr-*.whl"))
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())  # the viewer and the API docs ship in the wheel
    for f in ("serve/static/index.html", "serve/static/niivue/niivue.umd.js", "serve/static/swagger/swagger-ui.css",
              "serve/config.yaml", "singr/configs/synthetic.yaml", "singr/io/compressed.py"):
        assert f in names, f
    assert "Python recognizes" not in p.stderr  # the data folders are declared: no setuptools warning page
    env_dir = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, MONAI, Ray ...) come from the project's environment; singr itself
    # comes only from the wheel (a path line does not run the editable install's finder)
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["MPLBACKEND"] = "Agg"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True, timeout=600)

    singr = str(env_dir / "bin" / "singr")
    r = run(singr, "--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("singr 0.")
    r = run(str(py), "-c", "import singr, serve.launch, tune; print(singr.__file__); "
            "print(serve.launch.DEFAULT_CONFIG.is_file()); from singr.config import config_dir; print(config_dir())")
    where, serve_cfg, configs = r.stdout.split()
    assert r.returncode == 0 and where.startswith(site) and serve_cfg == "True", r.stdout + r.stderr
    assert configs.startswith(site) and (Path(configs) / "synthetic.yaml").is_file()
    r = run(singr, "synth", "-c", "synthetic.yaml", "--n-cases", "2", "--shape", "16", "16", "16", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((work / "data" / "synthetic").glob("BraTS20_Training_*/*_seg.nii.gz"))) == 2
    r = run(singr, "config", "--show", "-c", "smoke.yaml", "train.epochs=3")
    assert r.returncode == 0 and "epochs: 3" in r.stdout
    r = run(str(py), "-m", "tune", "--help")
    assert r.returncode == 0 and "python -m tune" in r.stdout
    r = run(singr, "config", "--schema", "--out", "schema.json")
    assert r.returncode == 0 and '"tune"' in (work / "schema.json").read_text()
