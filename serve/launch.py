"""``singr serve``: start the endpoint in a Ray instance of its own and block until stopped.

Defaults come from the shipped ``serve/config.yaml`` (or ``--config``); the command line
overrides the model, host, port, API key and the deployment's size. The deployment either
autoscales (the config's ``autoscaling_config``: between ``min_replicas`` and ``max_replicas``
replicas, aiming at ``target_ongoing_requests`` per replica; ``--min-replicas/--max-replicas``
set the bounds) or has a fixed size (``num_replicas``, or ``--replicas N``, which turns the
config's autoscaling off): :func:`deployment_options`. Before Ray starts, the model source and
the deployment's size are checked (a missing file, a registry whose store does not exist, an
autoscaling bound out of range, is an error, exit 2). Once serving, if the model fails to load
the command prints why and exits with code 2 instead of answering 503 forever. Ctrl-C and
SIGTERM stop it cleanly (Serve, then Ray and every process it started).
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
import urllib.error
import urllib.request
import warnings
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


_BOUNDS = {"min_replicas": "--min-replicas", "max_replicas": "--max-replicas"}


def deployment_options(dep: dict, path: str | Path | None = None, *, replicas: int | None = None,
                       min_replicas: int | None = None, max_replicas: int | None = None,
                       max_ongoing_requests: int | None = None, num_gpus: float | None = None,
                       num_cpus: float | None = None) -> dict:
    """The deployment's options for Serve: the config's ``deployments[0]`` (``dep``, from ``path``)
    with the command line's overrides, checked before Ray starts.

    A fixed size or autoscaling, never both (Serve refuses ``num_replicas`` beside
    ``autoscaling_config``): ``replicas`` (``--replicas N``) is N replicas and drops the config's
    ``autoscaling_config``; ``min_replicas``/``max_replicas`` set the autoscaling bounds (a block
    is made when the config has none) and drop ``num_replicas``. ``ray_actor_options``
    (``num_cpus``, ``num_gpus``) apply to every replica, the autoscaler's included. A
    :class:`SingrInputError` names the flag, or the key and the config file."""
    dep = dict(dep)
    bounds = {k: v for k, v in (("min_replicas", min_replicas), ("max_replicas", max_replicas)) if v is not None}
    if replicas is not None and bounds:
        raise SingrInputError("pass either --replicas N (a fixed number of replicas) or --min-replicas/"
                              "--max-replicas (autoscaling), not both")
    for flag, v in (("--replicas", replicas), *((_BOUNDS[k], v) for k, v in bounds.items())):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SingrInputError(f"{flag} must be a whole number >= 1, got {v!r}")
    actor = dict(dep.get("ray_actor_options") or {})
    if num_gpus is not None:
        actor["num_gpus"] = num_gpus
    if num_cpus is not None:
        actor["num_cpus"] = num_cpus
    dep["ray_actor_options"] = actor
    if max_ongoing_requests is not None:
        dep["max_ongoing_requests"] = max_ongoing_requests
    if replicas is not None:
        dep.pop("autoscaling_config", None)
        dep["num_replicas"] = replicas
        return dep
    auto = dep.get("autoscaling_config")
    if bounds:
        if isinstance(dep.get("num_replicas"), int):
            dep.pop("num_replicas")
        auto = {**(auto if isinstance(auto, dict) else {}), **bounds}
        dep["autoscaling_config"] = auto
    if auto is None:
        return dep
    where: dict[str, Any] = {"path": path} if path is not None else {}
    key = "deployments[0].autoscaling_config"
    if not isinstance(auto, dict):
        raise SingrInputError(f"{key} must be a mapping (min_replicas, max_replicas, target_ongoing_requests ...), "
                              f"got {type(auto).__name__}", **where)
    if isinstance(dep.get("num_replicas"), int) and not isinstance(dep["num_replicas"], bool):
        raise SingrInputError("deployments[0]: num_replicas and autoscaling_config exclude each other; keep one "
                              "(singr serve --replicas N serves a fixed N)", **where)
    _check_autoscaling(auto, dep.get("max_ongoing_requests"), key, bounds, where)
    return dep


def _check_autoscaling(auto: dict, max_ongoing: Any, key: str, given: dict, where: dict) -> None:
    """The autoscaling block's sizes and delays, each error naming the key (or the flag that set it);
    then Ray's own schema (its other keys), when Ray is installed."""
    def name(k: str) -> str:
        return _BOUNDS[k] if k in given else f"{key}.{k}"

    def loc(k: str) -> dict:
        return {} if k in given else where

    def whole(k: str, lo: int, default: int | None) -> int | None:
        v = auto.get(k, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise SingrInputError(f"{name(k)} must be a whole number >= {lo}, got {v!r}", **loc(k))
        return v

    lo = whole("min_replicas", 1, 1) or 1  # the endpoint loads its model at start: no scaling to zero
    hi = whole("max_replicas", 1, 1) or 1  # (Ray's defaults: 1 and 1)
    if lo > hi:
        both_flags = "min_replicas" in given and "max_replicas" in given
        raise SingrInputError(f"{name('min_replicas')} ({lo}) is above {name('max_replicas')} ({hi})",
                              **({} if both_flags else where))
    init = whole("initial_replicas", 1, None)
    if init is not None and not lo <= init <= hi:
        raise SingrInputError(f"{key}.initial_replicas ({init}) must lie between min_replicas ({lo}) and "
                              f"max_replicas ({hi})", **where)
    for k in ("target_ongoing_requests", "upscale_delay_s", "downscale_delay_s", "look_back_period_s"):
        v = auto.get(k)
        positive = k in ("target_ongoing_requests", "look_back_period_s")
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or positive and v == 0):
            raise SingrInputError(f"{key}.{k} must be a number {'> 0' if positive else '>= 0'}, got {v!r}", **where)
    target = auto.get("target_ongoing_requests")
    if target is not None and isinstance(max_ongoing, int) and target > max_ongoing:
        raise SingrInputError(f"{key}.target_ongoing_requests ({target}) is above max_ongoing_requests "
                              f"({max_ongoing}): a replica would never hold enough requests to scale up", **where)
    try:
        from pydantic import ValidationError
        from ray.serve.config import AutoscalingConfig
    except ImportError:  # no Ray: `singr serve` says what to install
        return
    unknown = sorted(set(auto) - set(AutoscalingConfig.model_fields))
    if unknown:
        raise SingrInputError(f"{key}.{unknown[0]} is not an autoscaling setting; known: "
                              f"{', '.join(AutoscalingConfig.model_fields)}", **where)
    try:
        with warnings.catch_warnings():  # Ray's deprecation notes: Ray repeats them when it deploys
            warnings.simplefilter("ignore")
            AutoscalingConfig(**auto)
    except (ValidationError, TypeError) as e:
        errs = e.errors() if isinstance(e, ValidationError) else []
        first: Any = errs[0] if errs else {}
        field = ".".join(str(p) for p in first.get("loc", ()))
        why = first.get("msg") or str(e).splitlines()[0]
        raise SingrInputError(f"{key}{'.' + field if field else ''}: {why}", **where) from None


def describe_scaling(dep: dict) -> str:
    """How many replicas, in words: ``"1 replica"``, ``"1 to 2 replicas (autoscaling, target 2 ongoing
    requests per replica)"``."""
    auto = dep.get("autoscaling_config")
    if isinstance(auto, dict):
        lo, hi = auto.get("min_replicas", 1), auto.get("max_replicas", 1)
        return (f"{lo} to {hi} replicas (autoscaling, target {auto.get('target_ongoing_requests', 2)} ongoing "
                "requests per replica)")
    n = dep.get("num_replicas", 1)
    return f"{n} replica{'' if n == 1 else 's'}"


class _Stop(Exception):
    """Raised by the SIGTERM / SIGINT handler: leave the serving loop and shut down."""


def run(model: str | None = None, host: str | None = None, port: int | None = None, config: str | None = None,
        tracking_uri: str | None = None, replicas: int | None = None, max_ongoing_requests: int | None = None,
        num_gpus: float | None = None, num_cpus: float | None = None, address: str = "local",
        api_key: str | None = None, wait_s: float | None = None, min_replicas: int | None = None,
        max_replicas: int | None = None) -> int:
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
    # checked after the environment is set: the check imports Ray's schema, and Ray reads it when first imported
    dep = deployment_options(dep, Path(config) if config else DEFAULT_CONFIG, replicas=replicas,
                             min_replicas=min_replicas, max_replicas=max_replicas,
                             max_ongoing_requests=max_ongoing_requests, num_gpus=num_gpus, num_cpus=num_cpus)
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
        from .proxy_errors import CALLBACK, CALLBACK_ENV

        os.environ.setdefault(CALLBACK_ENV, CALLBACK)  # the proxy's own errors as JSON
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        for s in (signal.SIGTERM, signal.SIGINT):  # ray.init installs its own SIGTERM handler: ours again
            signal.signal(s, _stop)
        serve.start(proxy_location=proxy, http_options={**http, "host": host, "port": port},
                    # on a cluster the proxies get the driver's environment only through the controller's
                    controller_options={"runtime_env": {"env_vars": {CALLBACK_ENV: os.environ[CALLBACK_ENV]}}})
        try:
            serve.run(make_app(args, dep), name="singr", route_prefix="/", blocking=False)
        except RuntimeError as e:  # a replica whose model fails to load fails its health check at start
            print(f"[singr] error: the model failed to load: {_deploy_error(serve) or e}", flush=True)
            return 2
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        print(f"[singr] serving on {base} (viewer {base}/, API docs {base}/docs); model {args['model']}; "
              f"{describe_scaling(dep)}; Ctrl-C to stop", flush=True)
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
