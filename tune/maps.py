"""Stage 1: SiNG distance maps for every lambda of the search grid, with Ray Data actors.

One row per case of the train and validation splits. Each actor of an ActorPoolStrategy
pool preprocesses its cases and fills the distance cache
(``singr.preprocess.prepare_case_maps``, the per-case step of ``singr preprocess``: read,
check, z-score, written once; then ``DistanceCache.get_or_compute`` per region) for every
lambda of the plan (``tune.lam_grid`` for a search; every variant's lambda for a grid, see
``SweepPlan.lam_grid``). A grid whose variants read several data folders runs this once per
folder (``group=``, a :class:`tune.plan.DataGroup`: its config, cache and lambdas). Entries
already in the cache are loaded, not recomputed, so a
second sweep computes nothing twice; the returned counts say how many maps were computed
and how many came from the cache. Delta is applied at load time by the training data set.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .plan import DataGroup, SweepPlan


class MapActor:
    """Ray Data callable class: one per actor; computes the maps of a batch of cases."""

    def __init__(self, cfg: Any, lams: list[float], threads: int):
        import torch

        from singr.device import resolve_device
        from singr.engine.pipeline import discover, sing_settings

        torch.set_num_threads(max(1, int(threads)))
        self.cfg = cfg
        self.by_id = {c.case_id: c for c in discover(cfg)}
        # no lambdas: hard-label runs only, no maps (cases still prepared)
        self.settings = [sing_settings(cfg, lam) for lam in lams]
        self.device = resolve_device(cfg.sing.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from singr.preprocess import prepare_case_maps
        from singr.sing import DistanceCache

        root = self.cfg.data.cache_dir
        from .nodes import node_label

        node = node_label()
        spacing = tuple(self.cfg.data.spacing) if self.cfg.data.spacing else None
        from singr.errors import SingrInputError

        out: dict[str, list[Any]] = {"case_id": [], "computed": [], "cached": [], "node": [], "error": []}
        for cid in batch["case_id"]:
            cid = str(cid)
            cache = DistanceCache(root)
            try:
                prepare_case_maps(self.by_id[cid], root, self.settings, spacing, self.device, cache)
                out["error"].append("")
            except SingrInputError as e:  # bad data: reported by the driver in one line, not a Ray traceback
                out["error"].append(str(e))
            out["case_id"].append(cid)
            out["computed"].append(cache.misses)
            out["cached"].append(cache.hits)
            out["node"].append(node)
        return {k: np.asarray(v) for k, v in out.items()}


def map_pool(cfg: Any, resources: dict[str, float], n_cases: int) -> tuple[int, dict[str, float]]:
    """(pool size, per-actor resources): a GPU share per actor where GPUs exist, CPUs otherwise."""
    t = cfg.tune
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 1.0))
    per = {"num_cpus": float(t.map_cpus)}
    if gpus > 0 and float(t.map_gpus) > 0:
        per["num_gpus"] = float(t.map_gpus)
        fit = int(gpus / per["num_gpus"] + 1e-9)
    else:
        fit = int(cpus / per["num_cpus"] + 1e-9)
    size = int(t.map_actors) if t.map_actors else max(1, fit)
    return max(1, min(size, n_cases)), per


def compute_maps(plan: SweepPlan, case_ids: list[str], progress: bool = True,
                 group: DataGroup | None = None) -> dict[str, Any]:
    """Run the Ray Data pipeline over ``case_ids`` (of ``group``'s data folder; default: the
    sweep's config and ``plan.lam_grid``); returns {cases, maps_computed, maps_cached, actors, nodes}."""
    import ray

    cfg = group.cfg if group is not None else plan.cfg
    lams = list(group.lams) if group is not None else plan.lam_grid
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(progress)
    size, per_actor = map_pool(cfg, ray.cluster_resources(), len(case_ids))
    per: dict[str, Any] = dict(per_actor)
    threads = max(1, int(per["num_cpus"]))
    items = ray.data.from_items([{"case_id": c} for c in case_ids], override_num_blocks=len(case_ids))
    ds: Any = items.map_batches(MapActor, batch_size=1,  # type: ignore[call-overload]
                                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
                                fn_constructor_kwargs={"cfg": cfg, "lams": lams, "threads": threads},
                                **per)
    rows = ds.take_all()
    bad = [str(r["error"]) for r in rows if str(r["error"])]
    if bad:
        from singr.errors import SingrInputError

        more = f" (and {len(bad) - 1} more case(s))" if len(bad) > 1 else ""
        raise SingrInputError(f"{bad[0]}{more}; fix the data, then run the same command again")
    nodes: dict[str, list[str]] = {}
    for r in rows:
        nodes.setdefault(str(r["node"]), []).append(str(r["case_id"]))
    out: dict[str, Any] = {"cases": len(rows), "maps_computed": int(sum(int(r["computed"]) for r in rows)),
                           "maps_cached": int(sum(int(r["cached"]) for r in rows)), "actors": size,
                           "nodes": nodes}
    return out
