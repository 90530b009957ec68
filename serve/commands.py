"""``singr serve``: the endpoint's subcommand of ``singr``, plugged in through the entry-point
group ``singr.commands`` (pyproject.toml). Ray is imported only when the command runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from singr.errors import SingrInputError

__all__ = ["add_serve", "api_key"]


def add_serve(sub: Any) -> None:
    """``singr serve``: start the HTTP endpoint."""
    p = sub.add_parser("serve", help="start the HTTP inference endpoint (Ray Serve)",
                       description="Start the HTTP endpoint (viewer at /, POST /v1/segment, GET /v1/health, "
                       "GET /v1/model; API docs at /docs) in a Ray instance of its own; Ctrl-C or SIGTERM stops it. "
                       "Defaults come from serve/config.yaml.")
    p.add_argument("--model", help="checkpoint, model folder, or MLflow registry model models:/<name>@<alias> "
                   "(default: the config's)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--config", dest="serve_config", help="Serve config file (default: the shipped serve/config.yaml)")
    p.add_argument("--replicas", type=int, help="a fixed number of replicas: turns the config's autoscaling off "
                   "(default: the config's autoscaling_config, 1 to 2 replicas)")
    p.add_argument("--min-replicas", type=int, help="autoscaling: the fewest replicas (default: the config's, 1)")
    p.add_argument("--max-replicas", type=int, help="autoscaling: the most replicas (default: the config's, 2); "
                   "Serve adds one while the replicas hold more than target_ongoing_requests each (serve/config.yaml)")
    p.add_argument("--max-ongoing-requests", type=int, help="per replica (default: the config's)")
    p.add_argument("--num-gpus", type=float, help="GPUs per replica (default: the config's, 0)")
    p.add_argument("--num-cpus", type=float, help="CPUs per replica (default: the config's, 1)")
    p.add_argument("--api-key-file", metavar="FILE", help="require the key on this file's first line in the "
                   "X-API-Key header (default $SINGR_API_KEY; a key is required when binding to a non-loopback "
                   "address)")
    p.add_argument("--api-key", help="the key itself (visible to other local users in ps: prefer --api-key-file "
                   "or $SINGR_API_KEY)")
    p.add_argument("--address", default="local",
                   help="Ray address: 'local' starts a Ray instance of its own (default); 'auto' joins a running one")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .launch import run  # Ray is imported only here
    except ImportError as e:
        raise SingrInputError(f"the HTTP endpoint needs the serve extra (pip install 'singr[serve]'): {e}") from None
    return run(model=args.model, host=args.host, port=args.port, config=args.serve_config,
               tracking_uri=args.tracking_uri, replicas=args.replicas, min_replicas=args.min_replicas,
               max_replicas=args.max_replicas,
               max_ongoing_requests=args.max_ongoing_requests, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
               address=args.address, api_key=api_key(args.api_key, args.api_key_file))


def api_key(given: str | None, path: str | None) -> str | None:
    """The endpoint's key from ``--api-key-file`` (first line, stripped) or ``--api-key``; the latter
    is visible to every local user in ``ps``, so it is accepted with a warning. None: the
    environment's ``$SINGR_API_KEY`` or the config decides."""
    if given and path:
        raise SingrInputError("pass either --api-key or --api-key-file, not both")
    if path:
        try:
            lines = Path(path).read_text().strip().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SingrInputError(f"cannot read the API key file ({type(e).__name__}: {e})", path=path) from None
        if not lines or not lines[0].strip():
            raise SingrInputError("the API key file is empty; expected the key on its first line", path=path)
        return lines[0].strip()
    if given:
        print("singr serve: warning: a key given with --api-key is visible to every local user (ps, /proc); "
              "prefer --api-key-file FILE or $SINGR_API_KEY", file=sys.stderr)
    return given
