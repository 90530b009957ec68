"""``singr serve``: start the endpoint in a Ray instance of its own and block until Ctrl-C.

Defaults come from ``serve/config.yaml`` (or ``--config``); the command line overrides
the model, host, port and the deployment's size.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import time
import urllib.request
from pathlib import Path

import yaml

from singr.errors import SingrInputError

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_config(path: str | Path | None) -> tuple[dict, dict, dict]:
    """(http_options, application args, deployment options) of the first application."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SingrInputError(f"cannot read the Serve config ({e})", path=path) from e
    apps = cfg.get("applications") or [{}]
    app = apps[0]
    deps = app.get("deployments") or [{}]
    dep = {k: v for k, v in deps[0].items() if k != "name"}
    return dict(cfg.get("http_options") or {}), dict(app.get("args") or {}), dep


def run(model: str | None = None, host: str | None = None, port: int | None = None, config: str | None = None,
        tracking_uri: str | None = None, replicas: int | None = None, max_ongoing_requests: int | None = None,
        num_gpus: float | None = None, num_cpus: float | None = None, address: str = "local",
        wait_s: float | None = None) -> int:
    http, args, dep = read_config(config)
    host = host or http.get("host") or "127.0.0.1"
    port = int(port or http.get("port") or 8000)
    if _is_loopback(host):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if model:
        args["model"] = model
    from .model import parse_model_source

    kind, where = parse_model_source(args.get("model"))
    if kind == "checkpoint":
        if not Path(where).is_file():
            raise SingrInputError("checkpoint file not found", path=where)
        args["model"] = str(Path(where).resolve())
    else:
        from singr.tracking_uri import resolve_tracking_uri

        args["tracking_uri"] = resolve_tracking_uri(tracking_uri or args.get("tracking_uri"))
    actor = dict(dep.get("ray_actor_options") or {})
    if num_gpus is not None:
        actor["num_gpus"] = num_gpus
    if num_cpus is not None:
        actor["num_cpus"] = num_cpus
    dep["ray_actor_options"] = actor
    if replicas is not None:
        dep["num_replicas"] = replicas
    if max_ongoing_requests is not None:
        dep["max_ongoing_requests"] = max_ongoing_requests

    import ray
    from ray import serve

    from .app import make_app

    app = make_app(args, dep)

    def _stop(signum, frame):  # SIGTERM (and SIGINT where a shell ignored it) stop cleanly
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, _stop)
    ray.init(address=address, include_dashboard=False)
    try:
        serve.start(http_options={**http, "host": host, "port": port})
        serve.run(app, name="singr", route_prefix="/")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        print(f"[singr] serving on {base} (API docs {base}/docs); model {args['model']}; Ctrl-C to stop", flush=True)
        ready = _wait_ready(base + "/v1/health", timeout=600)
        print(f"[singr] {'model loaded, ready' if ready else 'model not ready: see ' + base + '/v1/health'}", flush=True)
        t_end = None if wait_s is None else time.time() + wait_s
        while t_end is None or time.time() < t_end:
            time.sleep(1)
    except KeyboardInterrupt:
        print("[singr] stopping", flush=True)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return 0


def _wait_ready(url: str, timeout: float) -> bool:
    import json

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                if r.status == 200:
                    return True
        except urllib.error.HTTPError as e:
            if e.code == 503:
                try:
                    if json.loads(e.read()).get("status") == "error":
                        return False
                except ValueError:
                    pass
        except OSError:
            pass
        time.sleep(0.5)
    return False
