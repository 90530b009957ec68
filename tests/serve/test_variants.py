"""Model variants beside the champion on one endpoint (serve/variants.py): a request names an
alias or a version of the served registered model with ``?model=`` or Serve's
``serve_multiplexed_model_id`` header; anything else is refused (400), a version or alias the
registry lacks is 404, and a file-served champion has no variants (400).

The id rules are checked without Ray; the loading against a real MLflow SQLite registry (two
versions of the smoke model, aliases ``champion`` -> 1 and ``challenger`` -> 2), first
in-process, then through a tiny Serve deployment defined here (it inherits the mixin and
answers with the chosen model's identity), so that these tests do not depend on serve/app.py.

No ``from __future__ import annotations`` here: the tiny deployment is pickled by value, and
FastAPI must see its routes' ``Request`` annotation as the class, not as a string."""
import asyncio
import time
import types
from pathlib import Path

import pytest
from fastapi import Request

from serve.upload import HTTPProblem
from serve.variants import ModelVariants, describe, requested_variant, variant_uri

SERVED = "models:/singr-variants@champion"


def _request(query: dict | None = None, headers: dict | None = None) -> types.SimpleNamespace:
    return types.SimpleNamespace(query_params=query or {}, headers=headers or {})


# --------------------------------------------------------------------------- the id rules (no Ray)

@pytest.mark.parametrize("vid,uri", [
    ("challenger", "models:/singr-variants@challenger"),
    ("3", "models:/singr-variants/3"),
    ("v3", "models:/singr-variants/3"),
    ("latest", "models:/singr-variants"),
    ("models:/singr-variants@challenger", "models:/singr-variants@challenger"),
    ("models:/singr-variants/2", "models:/singr-variants/2"),
    ("singr-variants@challenger", "models:/singr-variants@challenger"),
])
def test_an_id_names_an_alias_or_a_version_of_the_served_model(vid, uri):
    assert variant_uri(vid, SERVED) == uri
    assert variant_uri(vid, "singr-variants@champion") == uri  # the short form of the served source too


@pytest.mark.parametrize("vid,why", [
    ("models:/other@champion", "names another registered model"),
    ("other@champion", "names another registered model"),
    ("../../etc/passwd", "expected an alias"),
    ("/srv/models/best.safetensors", "expected an alias"),
    ("best.safetensors", "expected an alias"),
    ("..", "expected an alias"),
    ("runs:/0123/model", "expected an alias"),
    ("models:/singr-variants", "expected an alias"),
    ("models:/singr-variants@bad alias", "expected an alias"),
    ("x" * 300, "expected an alias"),
])
def test_anything_else_is_refused_with_400(vid, why):
    with pytest.raises(HTTPProblem) as e:
        variant_uri(vid, SERVED)
    assert e.value.status == 400 and why in e.value.detail and len(e.value.detail) < 300


@pytest.mark.parametrize("served", ["/srv/models/best.safetensors", "runs:/0123/model", "model-folder"])
def test_a_champion_that_is_not_a_registry_model_has_no_variants(served):
    with pytest.raises(HTTPProblem) as e:
        variant_uri("challenger", served)
    assert e.value.status == 400 and "not a registry model" in e.value.detail
    assert "/srv" not in e.value.detail


def test_the_request_names_its_variant_by_query_or_header():
    assert requested_variant(_request()) is None
    assert requested_variant(_request({"model": "challenger"})) == "challenger"
    assert requested_variant(_request(headers={"serve_multiplexed_model_id": "2"})) == "2"
    assert requested_variant(_request({"model": "2"}, {"serve-multiplexed-model-id": "2"})) == "2"
    with pytest.raises(HTTPProblem) as e:
        requested_variant(_request({"model": "1"}, {"serve_multiplexed_model_id": "2"}))
    assert e.value.status == 400 and "give one" in e.value.detail


# --------------------------------------------------------------------------- a real registry

@pytest.fixture(scope="module")
def registry(smoke_model, tmp_path_factory) -> dict:
    """An MLflow SQLite registry with two versions of the smoke model: champion -> 1, challenger -> 2."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("variants_registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        exp = mlflow.create_experiment("variants", artifact_location=(root / "artifacts").as_uri())

        class Wrapper(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return model_input

        for _ in range(2):
            with mlflow.start_run(experiment_id=exp):
                mlflow.pyfunc.log_model(name="model", python_model=Wrapper(), pip_requirements=["mlflow"],
                                        artifacts={"checkpoint": str(smoke_model["checkpoint"])},
                                        registered_model_name="singr-variants")
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.set_registered_model_alias("singr-variants", "champion", "1")
        client.set_registered_model_alias("singr-variants", "challenger", "2")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return {"uri": uri, "client": client, "checkpoint": Path(smoke_model["checkpoint"])}


class _Replica(ModelVariants):
    """The deployment's side of the contract, in-process: the champion in ``self.loaded``."""

    def __init__(self, **settings):
        from serve.model import load_model

        self.settings = {"tracking_uri": None, "device": "cpu", "trust_checkpoint": False, "roi_size": None,
                         "sw_batch_size": None, "tta": None, **settings}
        self.loaded = load_model(self.settings["model"], self.settings["tracking_uri"], "cpu")
        self.asked: list[str] = []

    async def load_variant(self, model_id: str):  # Serve's multiplexed loader needs a replica: recorded here
        self.asked.append(model_id)
        return await asyncio.to_thread(self._load_variant, model_id)


@pytest.mark.slow
def test_variants_in_process_follow_the_registry(registry, monkeypatch):
    import serve.variants as sv

    rep = _Replica(model=SERVED, tracking_uri=registry["uri"])
    run = asyncio.run
    champ = run(rep.model_for(_request()))
    assert champ is rep.loaded and champ.identity["version"] == "1" and champ.identity["alias"] == "champion"
    assert run(rep.model_for(_request({"model": "champion"}))) is rep.loaded
    one = run(rep.model_for(_request({"model": "1"})))  # the champion's version by number: the same predictor
    assert one.predictor is rep.loaded.predictor and one.identity["version"] == "1" and not rep.asked
    two = run(rep.model_for(_request({"model": "challenger"})))
    assert rep.asked == ["models:/singr-variants/2"]
    assert two.identity["version"] == "2" and two.identity["alias"] == "challenger"
    assert two.identity["uri"] == "models:/singr-variants@challenger" and two.predictor is not rep.loaded.predictor
    assert two.identity["name"] == "singr-variants" and two.identity["source"] == "mlflow"
    for bad, status in (("7", 404), ("nosuch", 404), ("../x", 400), ("models:/other@champion", 400)):
        with pytest.raises(HTTPProblem) as e:
            run(rep.model_for(_request({"model": bad})))
        assert e.value.status == status, (bad, e.value.detail)
        assert str(Path(registry["uri"][len("sqlite:///"):]).parent) not in e.value.detail  # no server path
    # the alias moves: followed once the cached lookup is older than RESOLVE_TTL_S
    registry["client"].set_registered_model_alias("singr-variants", "challenger", "1")
    assert run(rep.model_for(_request({"model": "challenger"}))).identity["version"] == "2"  # cached
    monkeypatch.setattr(sv, "RESOLVE_TTL_S", 0.0)
    moved = run(rep.model_for(_request({"model": "challenger"})))
    assert moved.identity["version"] == "1" and moved.predictor is rep.loaded.predictor
    registry["client"].set_registered_model_alias("singr-variants", "challenger", "2")
    # a file-served champion has no variants, and says so without its path
    plain = _Replica(model=str(registry["checkpoint"]))
    assert run(plain.model_for(_request())) is plain.loaded
    with pytest.raises(HTTPProblem) as e:
        run(plain.model_for(_request({"model": "challenger"})))
    assert e.value.status == 400 and str(registry["checkpoint"].parent) not in e.value.detail


# --------------------------------------------------------------------------- through Ray Serve

def _deployment():
    """A tiny deployment that inherits the mixin: GET /which -> the chosen model's identity,
    GET /models -> the listing. Defined in a function so that Ray pickles it by value."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from ray import serve

    from serve.model import load_model
    from serve.variants import ModelVariants

    api = FastAPI()

    @api.exception_handler(HTTPProblem)
    async def _problem(request: Request, exc: HTTPProblem) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    @serve.ingress(api)
    class Tiny(ModelVariants):
        async def __init__(self, **settings):
            self.settings = settings
            self.loaded = await asyncio.to_thread(load_model, settings["model"], settings["tracking_uri"], "cpu")

        @api.get("/which")
        async def which(self, request: Request):
            loaded = await self.model_for(request)
            return {**describe(loaded), "same_as_champion": loaded.predictor is self.loaded.predictor}

        @api.get("/models")
        async def models(self):
            return self.variants_listing()

    return Tiny


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_champion_and_challenger_on_one_serve_endpoint(registry):
    import os

    import httpx
    import ray
    from ray import serve

    from tune.nodes import free_port

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="singr-variants-test")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = {"model": SERVED, "tracking_uri": registry["uri"], "device": "cpu", "trust_checkpoint": False}
        t0 = time.perf_counter()
        serve.run(_deployment().bind(**settings), name="variants", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=120) as h:
            r = h.get("/which")
            assert r.status_code == 200, r.text
            champ = r.json()
            assert champ["version"] == "1" and champ["alias"] == "champion" and champ["same_as_champion"]
            t1 = time.perf_counter()
            by_query = h.get("/which", params={"model": "challenger"})
            first_load = time.perf_counter() - t1
            assert by_query.status_code == 200, by_query.text
            assert by_query.json()["version"] == "2" and by_query.json()["alias"] == "challenger"
            assert not by_query.json()["same_as_champion"]
            by_header = h.get("/which", headers={"serve_multiplexed_model_id": "challenger"}).json()
            assert by_header["version"] == "2" and by_header["alias"] == "challenger"
            assert h.get("/which", params={"model": "2"}).json()["version"] == "2"
            assert h.get("/which", params={"model": "models:/singr-variants@challenger"}).json()["version"] == "2"
            same = h.get("/which", params={"model": "1"}).json()
            assert same["version"] == "1" and same["same_as_champion"]
            for bad, status in (("nosuch", 404), ("9", 404), ("../mlflow.db", 400), ("models:/other@x", 400)):
                r = h.get("/which", params={"model": bad})
                assert r.status_code == status and set(r.json()) == {"error", "detail", "file", "case"}, r.text
            r = h.get("/which", params={"model": "1"}, headers={"serve_multiplexed_model_id": "2"})
            assert r.status_code == 400, r.text
            listing = h.get("/models").json()
            assert listing["champion"]["version"] == "1" and listing["registry_model"] == "singr-variants"
            assert [v["version"] for v in listing["variants"]] == ["2"]
        print(f"\n[serve] variants: champion v1 and challenger v2 on one endpoint; deployment up in "
              f"{t1 - t0:.1f} s, first challenger request (download + load) {first_load:.1f} s")
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
