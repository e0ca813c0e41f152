"""Training and evaluation as plain functions, and ``fit``, which runs them epoch by epoch into a run directory.

A run directory holds ``config.json``, ``history.jsonl`` (one line per epoch), ``summary.json``,
``last.pt`` and ``best.pt``. Everything random follows (seed, epoch), so ``fit(config, resume=True)``
continues an interrupted run and ends with the numbers an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnistlab import __version__, perf
from mnistlab.config import TrainConfig
from mnistlab.data.loader import Loaders, get_dataloaders, make_loaders
from mnistlab.errors import MnistlabError
from mnistlab.fileio import atomic_write_json, atomic_write_text
from mnistlab.models.checkpoint import build_model, read_checkpoint, save_checkpoint

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
ArrayPair = tuple[np.ndarray, np.ndarray]
LAST_K = 3  # the "last epochs" over which test accuracy is reported (mean and min)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        accelerator = getattr(torch, "accelerator", None)
        if accelerator is not None and accelerator.is_available():
            return torch.device(accelerator.current_accelerator())
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MnistlabError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise MnistlabError("device 'mps' was asked for but MPS is not available; use --device cpu")
    return torch.device(name)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )  # fmt: skip
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
            pct_start=config.pct_start, div_factor=config.div_factor, final_div_factor=config.final_div_factor,
        )  # fmt: skip
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.gamma, patience=config.patience
        )
    return None


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    *,
    batch_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    averaged: torch.optim.swa_utils.AveragedModel | None = None,
    label_smoothing: float = 0.0,
    device: torch.device = torch.device("cpu"),
    progress: tqdm | None = None,
) -> dict[str, float]:
    """One pass over ``batches``; ``batch_scheduler`` (one-cycle) is stepped and ``averaged`` (the moving
    average of the weights) updated after every batch."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        log_probs = model(images)
        # cross_entropy re-normalises log-probabilities to themselves, and adds label smoothing
        loss = F.cross_entropy(log_probs, labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model)
        # accumulate on the device: no host sync per batch
        loss_sum += loss.detach() * len(labels)
        correct += (log_probs.detach().argmax(1) == labels).sum()
        seen += len(labels)
        if progress is not None:
            progress.update(1)
    if seen == 0:
        raise MnistlabError("the training split is empty; lower --val-size or raise --limit")
    return {"loss": loss_sum.item() / seen, "acc": 100.0 * correct.item() / seen}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Batches,
    *,
    device: torch.device = torch.device("cpu"),
    keep_predictions: bool = False,
) -> dict[str, Any]:
    """Mean loss and accuracy (%) over ``batches``; with ``keep_predictions``, also the predicted classes."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    predictions: list[torch.Tensor] = []
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        log_probs = model(images)
        loss_sum += F.nll_loss(log_probs, labels, reduction="sum").item()
        predicted = log_probs.argmax(1)
        correct += int((predicted == labels).sum())
        seen += len(labels)
        if keep_predictions:
            predictions.append(predicted.cpu())
    result: dict[str, Any] = {
        "loss": loss_sum / max(seen, 1),
        "acc": 100.0 * correct / max(seen, 1),
        "n": seen,
    }
    if keep_predictions:
        result["predictions"] = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64)
    return result


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and with what a run was made."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, timeout=5).stdout.strip()
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "mnistlab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} cores",
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _loaders(config: TrainConfig, device: torch.device, data: tuple[ArrayPair, ArrayPair] | None) -> Loaders:
    common = dict(
        batch_size=config.batch_size, augment=config.augment, val_size=config.val_size, seed=config.seed,
        limit=config.limit, device=device,
    )  # fmt: skip
    if data is not None:
        return make_loaders(data[0], data[1], **common)  # type: ignore[arg-type]
    return get_dataloaders(data_dir=config.data_dir, **common)  # type: ignore[arg-type]


def summarize_history(history: list[dict[str, Any]], has_val: bool) -> dict[str, Any]:
    """The run's headline numbers, derived from its per-epoch history."""
    last = history[-1]
    tail = [h["test_acc"] for h in history[-LAST_K:] if h.get("test_acc") is not None]
    key = "val_acc" if has_val else "train_acc"
    best = max(history, key=lambda h: h[key])
    return {
        "epochs": len(history),
        "best_train_acc": max(h["train_acc"] for h in history),
        "best_val_acc": best["val_acc"] if has_val else None,
        "best_epoch": best["epoch"],
        "selected_by": key,
        "test_acc_at_best": best.get("test_acc"),
        "last_test_acc": last.get("test_acc"),
        "last_val_acc": last.get("val_acc"),
        f"test_acc_last{LAST_K}": tail,
        f"test_acc_last{LAST_K}_mean": sum(tail) / len(tail) if tail else None,
        f"test_acc_last{LAST_K}_min": min(tail) if tail else None,
        "train_seconds": sum(h["seconds"] for h in history),
    }


def fit(
    config: TrainConfig,
    *,
    data: tuple[ArrayPair, ArrayPair] | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``config.model`` per ``config`` into ``config.output_dir``; return the summary.

    ``data`` replaces real MNIST with in-memory arrays (tests); ``stop_after`` ends after that many
    epochs as if the run had been killed (tests of resume).
    """
    start = time.perf_counter()
    out = Path(config.output_dir)
    device = resolve_device(config.device)
    perf.configure(config.threads)
    loaders = _loaders(config, device, data)
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.to_dict()).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # measured faster for these convs on CPU
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(loaders.train))
    averaged = make_average(model, config.ema)
    scored = averaged.module if averaged is not None else model  # the weights evaluated, reported and shipped
    history: list[dict[str, Any]] = []
    best_key = "val_acc" if loaders.val is not None else "train_acc"
    best_score = -math.inf

    if resume:
        state = read_checkpoint(out / "last.pt")
        recorded = TrainConfig.from_dict(state["config"]).to_dict()  # fields added since get their defaults
        if _identity(json.loads(json.dumps(recorded))) != _identity(json.loads(json.dumps(config.to_dict()))):
            raise MnistlabError(
                f"{out} was started with a different config; resume it with its own config.json"
            )
        model.load_state_dict(state["train_state_dict"] if averaged is not None else state["state_dict"])
        if averaged is not None:
            averaged.load_state_dict(state["average"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        best_score = state["best_score"]
        log(f"resuming {out} after epoch {len(history)}")
    elif (out / "last.pt").exists():
        raise MnistlabError(
            f"{out} already holds a run; pass --resume to continue it or choose another --output-dir"
        )
    atomic_write_json(out / "config.json", config.to_dict())
    forward = torch.compile(model) if config.compile else model
    has_params = sum(p.numel() for p in model.parameters())

    for epoch in range(len(history) + 1, config.epochs + 1):
        torch.manual_seed(config.seed * 1_000 + epoch)  # dropout's masks follow (seed, epoch): resumable
        loaders.train.set_epoch(epoch)
        epoch_start = time.perf_counter()
        with tqdm(total=len(loaders.train), desc=f"epoch {epoch}/{config.epochs}", leave=False,
                  disable=not progress) as bar:  # fmt: skip
            train = train_one_epoch(
                forward, loaders.train, optimizer,
                batch_scheduler=scheduler if config.scheduler == "onecycle" else None, averaged=averaged,
                label_smoothing=config.label_smoothing, device=device, progress=bar,
            )  # fmt: skip
        lr = optimizer.param_groups[0]["lr"]
        judged = forward if averaged is None else scored
        val = evaluate(judged, loaders.val, device=device) if loaders.val is not None else None
        test = evaluate(judged, loaders.test, device=device) if config.test_every_epoch else None
        if config.scheduler == "step":
            scheduler.step()  # type: ignore[union-attr]
        elif config.scheduler == "plateau":
            # on the validation loss; without a split, on the training loss — never on test
            scheduler.step(val["loss"] if val is not None else train["loss"])  # type: ignore[union-attr,call-arg]
        record = {
            "epoch": epoch,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "val_loss": val["loss"] if val else None,
            "val_acc": val["acc"] if val else None,
            "test_loss": test["loss"] if test else None,
            "test_acc": test["acc"] if test else None,
            "lr": lr,
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(record)
        log(_epoch_line(record, config.epochs))
        atomic_write_text(out / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        if record[best_key] > best_score:
            best_score = record[best_key]
            save_checkpoint(out / "best.pt", scored, config.to_dict(), epoch=epoch)
        resume_state = (
            {} if averaged is None
            else {"train_state_dict": _cpu(model.state_dict()), "average": _cpu(averaged.state_dict())}
        )  # fmt: skip
        save_checkpoint(
            out / "last.pt", scored, config.to_dict(), epoch=epoch, history=history, best_score=best_score,
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict() if scheduler is not None else None,
            **resume_state,
        )  # fmt: skip
        if stop_after is not None and epoch >= stop_after and epoch < config.epochs:
            return {"stopped_after": epoch}

    summary = {
        "model": config.model,
        "params": has_params,
        "seed": config.seed,
        **summarize_history(history, loaders.val is not None),
        "wall_seconds": time.perf_counter() - start,
        "data": {
            "train": loaders.train.num_samples,
            "val": loaders.val.num_samples if loaders.val else 0,
            "test": loaders.test.num_samples,
        },  # fmt: skip
        "provenance": provenance(device),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def make_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics (None when decay is 0)."""
    if not decay:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True
    )


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


EXECUTION_ONLY = ("threads", "device", "data_dir", "compile", "extra")


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that decides the numbers; how and where it runs may change on resume."""
    return {k: v for k, v in config.items() if k not in EXECUTION_ONLY}


def _epoch_line(h: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {h['epoch']:>2}/{epochs}", f"loss {h['train_loss']:.4f}", f"train {h['train_acc']:.2f}%"]
    if h["val_acc"] is not None:
        parts.append(f"val {h['val_acc']:.2f}%")
    if h["test_acc"] is not None:
        parts.append(f"test {h['test_acc']:.2f}%")
    parts += [f"lr {h['lr']:.4g}", f"{h['seconds']:.1f}s"]
    return "  ".join(parts)


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run directory, as ``fit`` wrote them to ``history.jsonl``."""
    text = (Path(run_dir) / "history.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
