"""``singr serve``: start the endpoint in a Ray instance of its own and block until stopped.

Defaults come from the shipped ``serve/config.yaml`` (or ``--config``); the command line
overrides the model, host, port, API key and the deployment's size. Before Ray starts, the
model source is checked (a missing file, or a registry whose store does not exist, is an
error, exit 2). Once serving, if the model fails to load the command prints why and exits
with code 2 instead of answering 503 forever. Ctrl-C and SIGTERM stop it cleanly (Serve,
then Ray and every process it started).
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from singr.errors import SingrInputError

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_config(path: str | Path | None) -> tuple[dict, dict, dict, str]:
    """(http_options, application args, deployment options, proxy_location) of the first
    application; proxy_location defaults to HeadOnly (one HTTP proxy: on a local multi-node
    cluster every node has the address 127.0.0.1, so per-node proxies would share a port)."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SingrInputError(f"cannot read the Serve config ({e})", path=path) from e
    apps = cfg.get("applications") or [{}]
    app = apps[0]
    deps = app.get("deployments") or [{}]
    dep = {k: v for k, v in deps[0].items() if k != "name"}
    return dict(cfg.get("http_options") or {}), dict(app.get("args") or {}), dep, str(cfg.get("proxy_location",
                                                                                                   "HeadOnly"))


class _Stop(Exception):
    """Raised by the SIGTERM / SIGINT handler: leave the serving loop and shut down."""


def run(model: str | None = None, host: str | None = None, port: int | None = None, config: str | None = None,
        tracking_uri: str | None = None, replicas: int | None = None, max_ongoing_requests: int | None = None,
        num_gpus: float | None = None, num_cpus: float | None = None, address: str = "local",
        api_key: str | None = None, wait_s: float | None = None) -> int:
    http, args, dep, proxy = read_config(config)
    host = host or http.get("host") or "127.0.0.1"
    port = int(port or http.get("port") or 8000)
    key = api_key or os.environ.get("SINGR_API_KEY") or args.get("api_key")
    if not is_loopback(host) and not key:
        raise SingrInputError(f"binding to {host} (not loopback) needs an API key: pass --api-key or set "
                              "$SINGR_API_KEY (clients send it in the X-API-Key header)")
    args["api_key"] = key or None
    from tune.hub.store import resolve_tracking_uri
    from tune.nodes import NICENESS_ENV, driver_env

    if is_loopback(host):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.update(driver_env(address))  # a loopback-only cluster, whatever the host (as `python -m tune` does)
    if model:
        args["model"] = model

    from .model import check_source
    from .settings import DEFAULT_MODEL

    args["tracking_uri"] = resolve_tracking_uri(tracking_uri or args.get("tracking_uri"))
    kind, where = check_source(args.get("model") or DEFAULT_MODEL, args["tracking_uri"])
    args["model"] = where
    if kind == "registry":  # the version exists, before any Ray starts
        from tune.hub.fetch import find_version

        find_version(where, args["tracking_uri"])
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

    def _stop(signum: int, frame: Any) -> None:
        raise _Stop()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    import ray
    from ray import serve

    from .app import make_app

    code = 0
    try:
        if address == "local":  # replicas at nice 0, not Ray's default 15, so that a busy machine does not
            os.environ.setdefault(NICENESS_ENV, "0")  # starve the endpoint (tune.session.RaySession)
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        for s in (signal.SIGTERM, signal.SIGINT):  # ray.init installs its own SIGTERM handler: ours again
            signal.signal(s, _stop)
        serve.start(proxy_location=proxy, http_options={**http, "host": host, "port": port})
        try:
            serve.run(make_app(args, dep), name="singr", route_prefix="/", blocking=False)
        except RuntimeError as e:  # a replica whose model fails to load fails its health check at start
            print(f"[singr] error: the model failed to load: {_deploy_error(serve) or e}", flush=True)
            return 2
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        print(f"[singr] serving on {base} (viewer {base}/, API docs {base}/docs); model {args['model']}; "
              "Ctrl-C to stop", flush=True)
        status, detail = _wait_ready(base + "/v1/health", timeout=600)
        if status == "error":
            print(f"[singr] error: the model failed to load: {detail}", flush=True)
            code = 2
        else:
            state = "model loaded, ready" if status == "ready" else f"model not ready: see {base}/v1/health"
            print(f"[singr] {state}",
                  flush=True)
            t_end = None if wait_s is None else time.time() + wait_s
            while t_end is None or time.time() < t_end:
                time.sleep(0.5)
    except _Stop:
        print("[singr] stopping", flush=True)
    finally:
        for s in (signal.SIGTERM, signal.SIGINT):  # a second signal must not interrupt the shutdown
            signal.signal(s, signal.SIG_IGN)
        try:
            if ray.is_initialized():
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    return code


def _deploy_error(serve: Any) -> str:
    """Why the application failed to deploy, from Serve's status (the replica's health-check
    message carries the model's load error); empty when Serve says nothing more."""
    try:
        app = serve.status().applications.get("singr")
        msgs = [d.message for d in (app.deployments.values() if app else []) if d.message]
        return " ".join(msgs + ([app.message] if app and app.message and not msgs else []))
    except Exception:  # noqa: BLE001 - the status is only for the message
        return ""


def _wait_ready(url: str, timeout: float) -> tuple[str, str]:
    """("ready" | "error" | "timeout", detail) from polling the health route."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                if r.status == 200:
                    return "ready", ""
        except urllib.error.HTTPError as e:
            if e.code == 503:
                try:
                    body = json.loads(e.read())
                    if body.get("error") == "model failed to load":
                        return "error", str(body.get("detail"))
                except ValueError:
                    pass
        except OSError:
            pass
        time.sleep(0.5)
    return "timeout", ""
