"""``python -m tune.submit`` (``scripts/submit.sh``): submit a sweep to a Ray cluster as a job,
exactly as ``ray job submit`` does, with the paths a job needs made absolute first.

A job runs in a copy of the working folder on the cluster (files ignored by git, such as
``data/`` and ``runs/``, are not copied), so a relative ``data.root`` would name a folder
that is not there. This command loads the config where you type it, resolves every path
(``data.root``, ``data.cache_dir``, ``data.split_file``, ``output_dir``,
``tune.storage_path``; an sqlite MLflow store) against the current folder, and passes them
as ``key=value`` overrides, with the tracking URI in the job's environment. On a real
cluster these must lie on storage every node mounts (see README, "Running on a cluster").

    bash scripts/submit.sh --address http://127.0.0.1:8265 -c configs/synthetic.yaml tune.num_samples=4

Token authentication (``ray start --head``, Ray 2.59+): the command sets ``RAY_AUTH_MODE=token``
for ``ray job submit`` and prints the ``ray job status/logs`` commands, which need it too.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from singr.errors import SingrInputError

from .session import check_address, check_tracking_store

REPO = Path(__file__).resolve().parents[1]


def job_overrides(config: str, overrides: Sequence[str]) -> tuple[str, list[str], str]:
    """(config argument for the job, overrides with absolute paths, tracking URI)."""
    from singr.engine.pipeline import run_paths

    from .config import load_service_config
    from .hub.store import resolve_tracking_uri

    cfg = load_service_config(config, overrides)
    paths = run_paths(cfg)

    def absolute(p: str | Path) -> str:
        return str(Path(os.path.abspath(os.path.expanduser(str(p)))))

    values = {"data.root": absolute(cfg.data.root), "data.cache_dir": absolute(paths.cache_dir),
              "output_dir": absolute(cfg.output_dir), "tune.storage_path": absolute(cfg.tune.storage_path)}
    if cfg.data.split_file:
        values["data.split_file"] = absolute(cfg.data.split_file)
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri)
    values["mlflow.tracking_uri"] = uri
    job_config = absolute(config) if Path(config).exists() else config
    return job_config, [*overrides, *(f"{k}={json.dumps(v)}" for k, v in values.items())], uri


def submit(address: str, config: str, overrides: Sequence[str], working_dir: str | Path = REPO,
           wait: bool = True, quiet: bool = True) -> int:
    """Submit the sweep; with ``wait``, follow its logs and return its exit code."""
    job_config, over, uri = job_overrides(config, overrides)
    check_address(address)
    cfg_name = Path(job_config).name
    if uri.startswith(("http://", "https://")):
        from .config import load_service_config

        check_tracking_store(uri, load_service_config(config, overrides).mlflow.experiment)
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"},
                   "excludes": [".venv", "runs", "data", "mlartifacts", "mlflow.db", ".git", "reports/**/*.png"]}
    ray_bin = Path(sys.executable).parent / "ray"
    cmd = [str(ray_bin), "job", "submit", "--address", address, "--working-dir", str(working_dir),
           "--runtime-env-json", json.dumps(runtime_env)]
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", "python", "-m", "tune", "-c", job_config, *(["-q"] if quiet else []), *over]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    print(f"[submit] {cfg_name} to {address}; paths made absolute; MLflow {uri}", flush=True)
    print(f"[submit] follow it: RAY_AUTH_MODE=token {ray_bin} job list|status|logs --address {address} [JOB_ID]",
          flush=True)
    return subprocess.run(cmd, env=env).returncode


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/submit.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265"),
                    help="the cluster's dashboard (default $RAY_DASHBOARD_ADDRESS or http://127.0.0.1:8265)")
    ap.add_argument("--config", "-c", default="synthetic.yaml", help="the sweep's config (a path or a shipped name)")
    ap.add_argument("--working-dir", default=str(REPO), help="folder uploaded as the job's working dir (the repo)")
    ap.add_argument("--no-wait", action="store_true", help="return once submitted")
    ap.add_argument("--verbose", "-v", action="store_true", help="progress bars in the job's log")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    try:
        return submit(a.address, a.config, a.overrides, a.working_dir, wait=not a.no_wait, quiet=not a.verbose)
    except SingrInputError as e:
        print(f"submit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
