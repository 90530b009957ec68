"""The training loop: Adam on random patches, sliding-window validation, best/last checkpoints.

One epoch = ``train.iters_per_epoch`` batches of ``train.batch_size`` random patches.
Every ``train.val_every`` epochs (and at the last) the model segments the validation
cases with sliding-window inference; the checkpoint with the best validation mean Dice is
kept as ``best.pt``, the latest as ``last.pt`` (resume point). Per-epoch rows go to
``<output_dir>/log.csv``.

The loop is plain PyTorch so that a distributed runner (``tune/``) can call
:func:`fit` with its own rank, world size, model wrapper (DDP) and epoch callback.
"""
from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import dump_config
from ..io import write_json, write_text
from ..losses import build_loss, is_regression_loss
from ..metrics import case_metrics, summarize
from ..models import model_from_config, size_multiple
from .checkpoint import load_checkpoint, save_checkpoint
from .data import PatchDataset, RunPaths, discover, prepare, run_paths, sing_settings, split_cases
from .infer import logits_to_regions, predict_logits

EpochCallback = Callable[[int, dict[str, Any], "Path | None"], None]


def resolve_train_device(name: str) -> torch.device:
    from ..sing import resolve_device

    return torch.device(resolve_device(name))


def loss_from_config(cfg: dict[str, Any]) -> torch.nn.Module:
    name = cfg["loss"]["name"]
    kwargs: dict[str, Any] = {}
    if name == "focal_l1":
        kwargs = {"gamma": float(cfg["loss"]["gamma"]), "eps": float(cfg["loss"]["eps"])}
    elif name == "focal_l1_dagger":
        kwargs = {"gamma": float(cfg["loss"]["gamma"])}
    elif name == "product":
        kwargs = {"mode": str(cfg["loss"].get("product_mode", "image"))}
    return build_loss(name, **kwargs)


def seed_everything(seed: int) -> None:
    from monai.utils import set_determinism

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    set_determinism(seed=seed)


def infer_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Sliding-window settings; UNETR has a fixed input size, so its window is the patch."""
    name = cfg["model"]["name"]
    fixed = name == "unetr"
    return dict(roi_size=cfg["train"]["patch_size"] if fixed else cfg["infer"]["roi_size"],
                overlap=float(cfg["infer"]["overlap"]), sw_batch_size=int(cfg["infer"]["sw_batch_size"]),
                mode=cfg["infer"]["mode"], multiple=size_multiple(name), fixed_roi=fixed)


def validate(model: torch.nn.Module, cfg: dict[str, Any], cache_dir: Path, case_ids: Sequence[str],
             device: torch.device, progress: bool = False) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Segment ``case_ids`` (preprocessed) and return (mean metrics, per-case rows)."""
    from tqdm.auto import tqdm

    from ..preprocess import load_prepared

    rows = []
    for cid in tqdm(case_ids, desc="validate", unit="case", leave=False, disable=not progress):
        prep = load_prepared(cache_dir, cid)
        logits = predict_logits(model, prep.image, device=device, **infer_kwargs(cfg))
        pred = logits_to_regions(logits)
        row = {"case": cid, **case_metrics(pred, prep.regions, prep.spacing, prep.region_names)}
        rows.append(row)
    summ = summarize(rows)
    means = {k: float(v["mean"]) for k, v in summ.items()}
    return means, rows


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def build_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, best: float,
                cfg: dict[str, Any], meta: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    net = model.module if hasattr(model, "module") else model
    return {"model_state": net.state_dict(), "optimizer_state": optimizer.state_dict(), "epoch": epoch,
            "best_metric": best, "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
            "meta": meta, "metrics": metrics, "torch_rng": torch.get_rng_state()}


def fit(
    cfg: dict[str, Any],
    *,
    progress: bool = True,
    resume: bool = True,
    on_epoch_end: EpochCallback | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    device: torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    prepared: bool = False,
) -> dict[str, Any]:
    """Train per ``cfg``; returns ``{"best_metric", "best_epoch", "best_checkpoint", "last_checkpoint", ...}``.

    ``rank``/``world_size`` shard the training cases and the batches per epoch (the
    global batch is ``batch_size * world_size``); only rank 0 validates and writes files.
    ``wrap_model`` wraps the network (e.g. DDP). ``resume_from`` names a checkpoint to
    continue from; otherwise ``<checkpoints>/last.pt`` is used when ``resume``.
    """
    paths: RunPaths = run_paths(cfg)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else paths.checkpoints
    tr = cfg["train"]
    seed_everything(int(tr["seed"]) + rank)
    dev = device or resolve_train_device(tr["device"])
    cases = discover(cfg)
    split = split_cases(cfg, cases, paths) if rank == 0 or paths.split_file.exists() else None
    if split is None:  # other ranks wait for rank 0 to write the split
        for _ in range(600):
            if paths.split_file.exists():
                break
            time.sleep(0.5)
        split = split_cases(cfg, cases, paths)
    by_id = {c.case_id: c for c in cases}
    if not prepared:
        prepare(cfg, [by_id[c] for c in split["train"] + split["val"]], paths, progress=progress and rank == 0)
    regression = is_regression_loss(cfg["loss"]["name"])
    train_ids = split["train"][rank::world_size] or split["train"]
    val_ids = split["val"] if tr["val_max_cases"] is None else split["val"][: int(tr["val_max_cases"])]
    from ..preprocess import load_prepared

    first = load_prepared(paths.cache_dir, train_ids[0], mmap=True)
    meta = {"in_channels": int(first.image.shape[0]), "out_channels": len(first.region_names),
            "region_names": list(first.region_names), "label_convention": first.label_convention,
            "modalities": list(first.modalities), "model": cfg["model"]["name"],
            "loss": cfg["loss"]["name"], "regression": regression,
            "lam": float(cfg["sing"]["lam"]), "delta": float(cfg["sing"]["delta"]),
            "gamma": float(cfg["loss"]["gamma"]), "spacing": list(first.spacing)}
    model = model_from_config(cfg, meta["in_channels"], meta["out_channels"]).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(tr["lr"]), weight_decay=float(tr["weight_decay"]))
    start_epoch, best, best_epoch = 0, -1.0, -1
    src = Path(resume_from) if resume_from else (ckpt_dir / "last.pt")
    if (resume or resume_from) and src.exists():
        state = load_checkpoint(src, map_location=dev)
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        start_epoch, best = int(state["epoch"]) + 1, float(state["best_metric"])
        best_epoch = int(state.get("metrics", {}).get("best_epoch", -1))
        if progress and rank == 0:
            print(f"[singr] resuming from {src} at epoch {start_epoch}")
    if wrap_model is not None:
        model = wrap_model(model)
    loss_fn = loss_from_config(cfg)
    iters = max(1, int(tr["iters_per_epoch"]) // world_size)
    ds = PatchDataset(paths.cache_dir, train_ids, tr["patch_size"], iters * int(tr["batch_size"]), regression,
                      sing_settings(cfg), float(cfg["sing"]["delta"]), cfg["augment"],
                      seed=int(tr["seed"]) * 1000 + rank, in_memory=bool(cfg["data"]["cache_in_memory"]))
    nw = int(cfg["data"]["num_workers"])
    loader = torch.utils.data.DataLoader(ds, batch_size=int(tr["batch_size"]), shuffle=False, num_workers=nw,
                                         persistent_workers=False, drop_last=True,
                                         pin_memory=dev.type == "cuda")
    use_amp = bool(tr["amp"]) and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    is_main = rank == 0
    if is_main:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text(paths.output_dir / "config.yaml", dump_config(cfg))
    from tqdm.auto import tqdm

    epochs = int(tr["epochs"])
    bar = tqdm(range(start_epoch, epochs), desc="train", unit="epoch", disable=not (progress and is_main),
               initial=start_epoch, total=epochs)
    last_metrics: dict[str, Any] = {}
    for epoch in bar:
        t0 = time.time()
        ds.set_epoch(epoch)
        model.train()
        losses = []
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}", unit="batch", leave=False,
                          disable=not (progress and is_main)):
            x, y = batch["image"].to(dev, non_blocking=True), batch["target"].to(dev, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, enabled=use_amp):
                out = model(x)
            loss = loss_fn(out.float(), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan")}
        do_val = (epoch + 1) % int(tr["val_every"]) == 0 or epoch + 1 == epochs
        ckpt_path: Path | None = None
        if is_main:
            if do_val and val_ids:
                net = model.module if hasattr(model, "module") else model
                means, _ = validate(net, cfg, paths.cache_dir, val_ids, dev, progress=progress)
                row.update({f"val_{k}": v for k, v in means.items()})
                if means.get("Dice_mean", -1.0) > best:
                    best, best_epoch = means["Dice_mean"], epoch + 1
                    save_checkpoint(ckpt_dir / "best.pt", build_state(model, optimizer, epoch, best, cfg, meta,
                                                                      {**row, "best_epoch": best_epoch}))
            row["epoch_seconds"] = round(time.time() - t0, 3)
            ckpt_path = save_checkpoint(ckpt_dir / "last.pt", build_state(model, optimizer, epoch, best, cfg, meta,
                                                                          {**row, "best_epoch": best_epoch}))
            _append_log(paths.output_dir / "log.csv", row)
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", best_dice=f"{best:.3f}")
        last_metrics = row
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, dict(row, best_val_Dice_mean=best), ckpt_path)
    result = {"best_metric": best, "best_epoch": best_epoch,
              "best_checkpoint": str(ckpt_dir / "best.pt"), "last_checkpoint": str(ckpt_dir / "last.pt"),
              "last_metrics": last_metrics, "output_dir": str(paths.output_dir), "split_file": str(paths.split_file)}
    if is_main:
        write_json(paths.output_dir / "train_result.json", result)
    return result
