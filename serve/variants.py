"""Model variants on one endpoint: any registered version or alias of the served model beside
its champion, so that a user can compare the champion and a challenger on the same URL.

A request asks for a variant with Serve's header ``serve_multiplexed_model_id: <id>`` or the
query parameter ``?model=<id>``; without either it gets the champion (the model the replica
loaded at start, ``self.loaded``). The id names an alias or a version of the *same*
registered model as the champion, and nothing else:

* ``challenger`` (an alias) -> ``models:/<name>@challenger``; ``3`` or ``v3`` (a version) ->
  ``models:/<name>/3``; ``latest`` -> the newest version;
* ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``<name>@<alias>``, when
  ``<name>`` is the champion's.

Anything else (a path, ``..``, another model's name, a ``runs:/`` URI) is 400, as is any
variant when the champion is not a registry model (a file); an alias or version that the
registry lacks is 404. An alias is looked up again after :data:`RESOLVE_TTL_S` seconds, so a
moved ``@challenger`` is followed; a variant that is the champion's own version is the
champion (loaded once). Other variants are loaded in a worker thread (the event loop keeps
answering) by ``@serve.multiplexed``: at most :data:`MAX_VARIANTS` per replica besides the
champion, the least recently used unloaded first, with the champion's device and overrides
(``roi_size``, ``sw_batch_size``, ``tta``). A replica holds its variants under
``models:/<name>/<version>`` (an alias is resolved first), which is what Serve's router matches
the header against: a header in that form goes to a replica that holds the version, any other
form to the replica with the fewest variants loaded.
"""
from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Optional

from ray import serve

from .model import LoadedModel, load_model, scrub_paths
from .upload import HTTPProblem

__all__ = ["HEADER", "QUERY", "MAX_VARIANTS", "RESOLVE_TTL_S", "ModelVariants", "describe", "requested_variant",
           "served_name", "variant_uri"]

log = logging.getLogger("ray.serve")

HEADER = "serve_multiplexed_model_id"
"""Serve's multiplexing header (``serve-multiplexed-model-id`` is read as the same)."""
QUERY = "model"
"""The query parameter: ``?model=challenger``."""
MAX_VARIANTS = 2
"""Variants a replica keeps loaded besides its champion (LRU)."""
RESOLVE_TTL_S = 30.0
"""How long an alias -> version lookup is trusted."""

_ALIAS = re.compile(r"[A-Za-z0-9_\-]{1,255}", re.ASCII)  # MLflow's alias characters
_VERSION = re.compile(r"[vV]?(\d{1,9})", re.ASCII)       # 3, v3 (MLflow reserves v<n> for versions)
_OVERRIDES = ("roi_size", "sw_batch_size", "tta")
_REGISTRY_KEYS = ("source", "uri", "name", "alias", "version", "tags", "description")  # as serve.model.load_model


def served_name(source: str) -> Optional[str]:
    """The registered model's name of a served model source (``models:/<name>@<alias>``,
    ``models:/<name>/<version>``, ``<name>@<alias>``), None when it is not a registry model."""
    from singr.engine.source import parse_model_source, parse_registry_uri
    from singr.errors import SingrInputError

    kind, where = parse_model_source(str(source))
    if kind != "registry":
        return None
    try:
        return parse_registry_uri(where)[0]
    except SingrInputError:
        return None


def variant_uri(variant: str, served: str) -> str:
    """The registry URI a variant id names, ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or
    ``models:/<name>`` (``latest``), for the champion served from ``served``; HTTPProblem 400 for an
    id that names anything else, or when the champion is not a registry model."""
    from singr.engine.source import parse_registry_uri
    from singr.errors import SingrInputError

    vid = str(variant).strip()
    name = served_name(served)
    if name is None:
        raise HTTPProblem(400, "invalid model variant", f"model {vid[:80]!r}: this endpoint serves a model file, "
                          "not a registry model, so it has no other versions or aliases to serve")
    shown = vid if len(vid) <= 80 else vid[:77] + "..."
    if m := _VERSION.fullmatch(vid):
        return f"models:/{name}/{int(m.group(1))}"
    if vid.lower() == "latest":
        return f"models:/{name}"
    if _ALIAS.fullmatch(vid):
        return f"models:/{name}@{vid}"
    if vid.startswith("models:/") or "@" in vid:  # a full URI, or <name>@<alias>; never looked up on disk
        try:
            got, alias, version = parse_registry_uri(vid if vid.startswith("models:/") else f"models:/{vid}")
        except SingrInputError:
            got, alias, version = None, None, None
        if got is not None and got != name:
            raise HTTPProblem(400, "invalid model variant", f"model {shown!r} names another registered model; this "
                              f"endpoint serves versions and aliases of {name!r} only")
        if got == name and alias and _ALIAS.fullmatch(alias):
            return f"models:/{name}@{alias}"
        if got == name and version:
            return f"models:/{name}/{int(version)}"
    raise HTTPProblem(400, "invalid model variant", f"model {shown!r}: expected an alias (e.g. challenger), a version "
                      f"number (e.g. 3) or models:/{name}@<alias> of the served model {name!r}")


def requested_variant(request: Any) -> Optional[str]:
    """The variant id a request asks for: Serve's multiplexing header (as Serve's request context
    holds it), else the ``model`` query parameter; None for the champion. Both given and different
    is 400."""
    try:
        header = serve.get_multiplexed_model_id() or ""
    except Exception:  # noqa: BLE001 - outside a replica (no Serve context): no header
        header = ""
    if not header:  # Serve's context holds it when the proxy routed the request; the raw header otherwise
        headers = getattr(request, "headers", None) or {}
        header = headers.get(HEADER) or headers.get(HEADER.replace("_", "-")) or ""
    params = getattr(request, "query_params", None) or {}
    query = params.get(QUERY) or ""
    header, query = header.strip(), query.strip()
    if header and query and header != query:
        raise HTTPProblem(400, "invalid model variant", f"the {HEADER} header asks for {header[:80]!r} and "
                          f"?{QUERY}= for {query[:80]!r}; give one")
    return header or query or None


def describe(loaded: Any) -> dict[str, Any]:
    """A loaded model's identity in short: source, uri, name, version, alias, architecture."""
    ident = getattr(loaded, "identity", None) or {}
    return {k: ident.get(k) for k in ("source", "uri", "name", "version", "alias", "architecture")}


class ModelVariants:
    """Mixin for the deployment class: ``await self.model_for(request)`` is the model a request
    asks for. The class sets ``self.loaded`` (the champion, a :class:`serve.model.LoadedModel`,
    None while loading) and ``self.settings`` (``model``, ``tracking_uri``, ``device``,
    ``trust_checkpoint`` and the overrides) in its constructor."""

    loaded: Any
    settings: dict[str, Any]

    async def model_for(self, request: Any) -> Any:
        """The champion (``self.loaded``) when the request names no variant, else the variant (a
        :class:`LoadedModel` whose identity names the alias or version asked for). Call it once the
        champion is loaded; HTTPProblem 400 / 404 / 503 otherwise (see the module docstring)."""
        vid = requested_variant(request)
        if vid is None:
            return self.loaded
        if self.loaded is None:
            raise HTTPProblem(503, "loading", "the model is loading", headers={"Retry-After": "2"})
        uri = variant_uri(vid, self.settings["model"])
        ident = self.loaded.identity
        if uri == _canonical(self.settings["model"]) or uri == ident.get("uri"):
            return self.loaded
        from singr.engine.source import parse_registry_uri

        name, alias, _ = parse_registry_uri(uri)
        version = await self._resolve(uri, vid)
        if ident.get("source") == "mlflow" and ident.get("name") == name and str(ident.get("version")) == version:
            variant = self.loaded  # the champion's own version under another name: no second copy
        else:
            variant = await self.load_variant(f"models:/{name}/{version}")
        return LoadedModel(predictor=variant.predictor,
                           identity={**variant.identity, "alias": alias, "uri": uri if alias else
                                     f"models:/{name}/{version}"})

    async def _resolve(self, uri: str, vid: str) -> str:
        """The version number ``uri`` names now (alias lookups cached :data:`RESOLVE_TTL_S` s); 404
        when the registry has no such version or alias."""
        cache: dict[str, tuple[str, float]] = self.__dict__.setdefault("_variant_versions", {})
        hit = cache.get(uri)
        if hit and time.monotonic() - hit[1] < RESOLVE_TTL_S:
            return hit[0]
        from singr.errors import SingrInputError
        from tune.hub.fetch import find_version
        from tune.hub.store import resolve_tracking_uri

        try:
            mv = await asyncio.to_thread(find_version, uri, resolve_tracking_uri(self.settings.get("tracking_uri")))
        except SingrInputError as e:
            log.info("model variant %r: %s", vid, e)
            raise HTTPProblem(404, "no such model variant", f"model {vid[:80]!r}: the registry has no "
                              f"{uri.removeprefix('models:/')}; see GET /v1/models for what is served") from None
        cache[uri] = (str(mv.version), time.monotonic())
        return str(mv.version)

    @serve.multiplexed(max_num_models_per_replica=MAX_VARIANTS)
    async def load_variant(self, model_id: str) -> LoadedModel:
        """Serve's multiplexed loader: ``models:/<name>/<version>`` (checked by :meth:`model_for`)
        loaded in a worker thread, with the champion's device and overrides."""
        try:
            loaded = await asyncio.to_thread(self._load_variant, model_id)
        except HTTPProblem:
            raise
        except Exception as e:  # noqa: BLE001 - answered as JSON, paths cut
            raise HTTPProblem(503, "model variant failed to load",
                              scrub_paths(f"{model_id}: {type(e).__name__}: {str(e).splitlines()[0][:300]}"),
                              headers={"Retry-After": "5"}) from None
        self.__dict__.setdefault("_variants", weakref.WeakValueDictionary())[model_id] = loaded
        return loaded

    def _load_variant(self, uri: str) -> LoadedModel:
        """Download ``uri`` once per replica (into one temporary folder: a variant unloaded and asked
        for again is read from there, not downloaded again) and build its predictor."""
        if not re.fullmatch(r"models:/[^/@]+/\d+", uri) or _name_of(uri) != served_name(self.settings["model"]):
            raise HTTPProblem(400, "invalid model variant", f"model {uri[:80]!r} is not a version of the served model")
        from tune.hub.fetch import download_model

        t0 = time.perf_counter()
        files: dict[str, tuple[Path, dict]] = self.__dict__.setdefault("_variant_files", {})
        if uri not in files:
            root = self.__dict__.setdefault("_variant_dir", Path(tempfile.mkdtemp(prefix="singr-variants-")))
            files[uri] = download_model(uri, self.settings.get("tracking_uri"),
                                        dst=root / uri.removeprefix("models:/").replace("/", "-"))
        local, reg = files[uri]
        loaded = load_model(str(local), None, self.settings.get("device", "auto"),
                            trust_checkpoint=bool(self.settings.get("trust_checkpoint")))
        loaded.identity.update(scrub_paths({k: reg.get(k) for k in _REGISTRY_KEYS}))
        overrides = {k: self.settings[k] for k in _OVERRIDES if self.settings.get(k) is not None}
        if overrides:
            loaded.predictor = loaded.predictor.with_settings(**overrides)
        log.info("model variant %s loaded in %.1f s", uri, time.perf_counter() - t0)
        return loaded

    def variants_listing(self) -> dict[str, Any]:
        """``{"champion": describe(champion), "variants": [describe(v) ...]}``: the variants this
        replica holds now (those it unloaded are gone), for ``GET /v1/models``; how to ask for one."""
        held = list(self.__dict__.get("_variants", {}).values())
        return {"champion": describe(self.loaded) if self.loaded is not None else None,
                "variants": [describe(v) for v in held],
                "max_variants_per_replica": MAX_VARIANTS,
                "select": f"?{QUERY}=<alias or version> or the header {HEADER}: <alias or version>",
                "registry_model": served_name(self.settings["model"])}


def _name_of(uri: str) -> str:
    return uri.removeprefix("models:/").split("/")[0].split("@")[0]


def _canonical(source: str) -> Optional[str]:
    """``models:/...`` form of a registry source (``<name>@<alias>`` expanded), None for a file."""
    from singr.engine.source import parse_model_source

    kind, where = parse_model_source(str(source))
    return where if kind == "registry" else None
