"""Training and evaluation as plain functions, and ``fit``, which runs them epoch by epoch into run directories.

A run directory holds ``config.json``, ``history.jsonl`` (one line per epoch), ``summary.json``,
``last.pt`` and ``best.pt`` (``rundir``). Everything random follows (seed, epoch), so ``fit(config,
resume=True)`` continues an interrupted run and ends with the numbers an uninterrupted one would have.

``fit_group`` trains several configs that differ only in seed (and output directory) as one stacked
network (``models.stacking``): each keeps its initial weights, batch order and augmentation, the loss is
the sum of their losses, and the optimizer, schedule and moving average act per element, so each model is
updated as it would be alone. ``fit`` is a group of one, which computes exactly what a plain network does.
On CUDA the training step of a full batch is replayed as one captured graph (``graphstep``).
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
from mnistlab.data.loader import Loaders, TensorLoader, get_dataloaders, make_loaders
from mnistlab.errors import MnistlabError
from mnistlab.fileio import atomic_write_json, atomic_write_text
from mnistlab.models.checkpoint import build_model, read_checkpoint, save_checkpoint
from mnistlab.models.stacking import StackedNet, stack, stack_states, unstack, unstack_state
from mnistlab.rundir import BEST, CONFIG, HISTORY, LAST, LAST_K, SUMMARY, run_status

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
ArrayPair = tuple[np.ndarray, np.ndarray]
Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
EVAL_BATCH = {"cpu": 1000, "cuda": 5000}  # images per evaluation batch (and per slot when stacked)


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
) -> Scheduler | None:
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


def make_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics (None when decay is 0)."""
    if not decay:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True
    )


def slot_losses(log_probs: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Each slot's mean loss over its batch, [K], from log-probabilities [B, K, 10] and labels [B, K]."""
    if log_probs.shape[1] == 1:  # one model: the loss exactly as a plain network computes it
        return F.cross_entropy(log_probs[:, 0], labels[:, 0], label_smoothing=label_smoothing).unsqueeze(0)
    flat = F.cross_entropy(log_probs.flatten(0, 1), labels.flatten(), reduction="none",
                           label_smoothing=label_smoothing)  # fmt: skip
    return flat.view(labels.shape).mean(0)


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
) -> dict[str, list[float]]:
    """One pass over ``batches`` ([B, K, 28, 28] images, [B, K] labels) of a stacked network; the loss is
    the sum of the K slots' losses. ``batch_scheduler`` (one-cycle) is stepped and ``averaged`` (the moving
    average of the weights) updated after every batch. Returns each slot's mean loss and accuracy (%)."""
    model.train()
    loss_sum = correct = None
    seen = 0
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        log_probs = model(images)  # (B, K, 10)
        losses = slot_losses(log_probs, labels, label_smoothing)  # (K,)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model)
        # accumulate on the device: no host sync per batch
        batch_loss = losses.detach() * len(labels)
        batch_correct = (log_probs.detach().argmax(-1) == labels).sum(0)
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        seen += len(labels)
        if progress is not None:
            progress.update(1)
    if seen == 0:
        raise MnistlabError("the training split is empty; lower --val-size or raise --limit")
    return {
        "loss": [v / seen for v in loss_sum.tolist()],
        "acc": [100.0 * c / seen for c in correct.tolist()],
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Batches,
    *,
    device: torch.device = torch.device("cpu"),
    keep_predictions: bool = False,
) -> dict[str, Any]:
    """Mean loss and accuracy (%) of a plain model over ``batches``; with ``keep_predictions``, also the
    predicted classes."""
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


@torch.inference_mode()
def evaluate_slots(
    model: StackedNet, loader: TensorLoader, *, device: torch.device
) -> list[dict[str, float]]:
    """Each slot's mean loss and accuracy (%) on ``loader``'s split (every slot sees every image)."""
    model.eval()
    slots = model.slots
    loss_sum = torch.zeros(slots, dtype=torch.float64, device=device)
    correct = torch.zeros(slots, dtype=torch.int64, device=device)
    for images, labels in loader.stacked((0,) * slots):
        log_probs = model(images.to(device))  # (B, K, 10)
        labels = labels.to(device)
        # per slot, summed in float64 as a plain evaluation sums batch by batch
        loss_sum += torch.stack(
            [F.nll_loss(log_probs[:, k], labels[:, k], reduction="sum") for k in range(slots)]
        )
        correct += (log_probs.argmax(-1) == labels).sum(0)
    n = loader.num_samples
    return [{"loss": loss / max(n, 1), "acc": 100.0 * hits / max(n, 1)}
            for loss, hits in zip(loss_sum.tolist(), correct.tolist())]  # fmt: skip


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and with what a run was made (the commit of this code's checkout, wherever the run's folder is)."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True, cwd=source
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, timeout=5, cwd=source).stdout.strip()
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


# -------------------------------------------------------------------------------------------------- fit

EXECUTION_ONLY = ("threads", "device", "data_dir", "compile", "output_dir", "cuda_graph")
GROUP_FREE = ("seed", "output_dir")  # what may differ between the runs of one stacked group


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that decides the numbers; how and where it runs may change on resume."""
    return {k: v for k, v in config.items() if k not in EXECUTION_ONLY}


def stackable(configs: list[TrainConfig]) -> str | None:
    """Why ``configs`` cannot train as one stacked group (None if they can)."""
    first = {k: v for k, v in configs[0].to_dict().items() if k not in GROUP_FREE}
    for config in configs[1:]:
        other = {k: v for k, v in config.to_dict().items() if k not in GROUP_FREE}
        if other != first:
            changed = sorted(k for k in first if first[k] != other.get(k))
            return f"the runs differ in {', '.join(changed)}, not only in seed and output directory"
    if len(configs) > 1 and (reason := recipe_unstackable(configs[0])):
        return reason
    if len({c.output_dir for c in configs}) < len(configs):
        return "two runs share an output directory"
    return None


def recipe_unstackable(config: TrainConfig) -> str | None:
    """Why this recipe's seeds cannot share one stacked network (None if they can)."""
    if config.scheduler == "plateau":
        return "a plateau schedule lowers each run's rate on its own validation loss"
    return None


def fit(config: TrainConfig, **kwargs: Any) -> dict[str, Any]:
    """Train ``config.model`` per ``config`` into ``config.output_dir``; return the summary."""
    return fit_group([config], **kwargs)[0]


def fit_group(
    configs: list[TrainConfig],
    *,
    data: tuple[ArrayPair, ArrayPair] | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
    after_epoch: Callable[[int, list[list[dict[str, Any]]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``configs`` (one model and recipe, one seed each) as one stacked network, each into its own
    run directory; return their summaries.

    ``data`` replaces real MNIST with in-memory arrays (tests); ``stop_after`` ends after that many
    epochs as if the run had been killed (tests of resume). ``after_epoch(epoch, histories)`` sees each
    epoch's records once they are saved; an exception it raises (a search pruning a trial) ends the runs there.
    """
    reason = stackable(configs)
    if reason is not None:
        raise MnistlabError(f"these runs cannot train stacked: {reason}")
    start = time.perf_counter()
    first = configs[0]
    outs = [Path(c.output_dir) for c in configs]
    seeds = tuple(c.seed for c in configs)
    device = resolve_device(first.device)
    perf.configure(first.threads)
    loaders = _loaders(first, device, data)
    if loaders.train.num_samples == 0:
        raise MnistlabError("the training split is empty; lower --val-size or raise --limit")
    model = _build(configs, device)
    optimizer = make_optimizer(model, first)
    scheduler = make_scheduler(optimizer, first, len(loaders.train))
    averaged = make_average(model, first.ema)
    scored = averaged.module if averaged is not None else model  # the weights evaluated, reported and shipped
    histories: list[list[dict[str, Any]]] = [[] for _ in configs]
    best_scores = [-math.inf] * len(configs)
    best_key = "val_acc" if loaders.val is not None else "train_acc"

    if resume:
        histories, best_scores = _restore(configs, model, optimizer, scheduler, averaged)
        log(f"resuming {', '.join(map(str, outs))} after epoch {len(histories[0])}")
    else:
        for out in outs:
            if run_status(out) != "todo":
                raise MnistlabError(
                    f"{out} already holds a run; pass --resume to continue it or choose another --output-dir"
                )
    for config, out in zip(configs, outs):
        atomic_write_json(out / CONFIG, config.to_dict())
    forward = torch.compile(model) if first.compile else model
    judged = forward if averaged is None else scored
    graphed = _graphed_trainer(first, model, optimizer, scheduler, averaged, loaders.train, seeds, device)

    for epoch in range(len(histories[0]) + 1, first.epochs + 1):
        torch.manual_seed(first.seed * 1_000 + epoch)  # dropout's masks follow (seed, epoch): resumable
        loaders.train.set_epoch(epoch)
        epoch_start = time.perf_counter()
        if graphed is not None:
            train = graphed.run_epoch(epoch)
        else:
            with tqdm(total=len(loaders.train), desc=f"epoch {epoch}/{first.epochs}", leave=False,
                      disable=not progress) as bar:  # fmt: skip
                train = train_one_epoch(
                    forward, loaders.train.stacked(seeds), optimizer,
                    batch_scheduler=scheduler if first.scheduler == "onecycle" else None, averaged=averaged,
                    label_smoothing=first.label_smoothing, device=device, progress=bar,
                )  # fmt: skip
        lr = optimizer.param_groups[0]["lr"]
        vals = evaluate_slots(judged, loaders.val, device=device) if loaders.val is not None else None
        tests = evaluate_slots(judged, loaders.test, device=device) if first.test_every_epoch else None
        _step_per_epoch(scheduler, first, vals, train)
        seconds = time.perf_counter() - epoch_start
        for k, (config, out) in enumerate(zip(configs, outs)):
            val = vals[k] if vals else None
            test = tests[k] if tests else None
            record = {
                "epoch": epoch,
                "train_loss": train["loss"][k],
                "train_acc": train["acc"][k],
                "val_loss": val["loss"] if val else None,
                "val_acc": val["acc"] if val else None,
                "test_loss": test["loss"] if test else None,
                "test_acc": test["acc"] if test else None,
                "lr": lr,
                "seconds": seconds,
            }
            histories[k].append(record)
            log(_epoch_line(record, config.epochs) + (f"  [seed {config.seed}]" if len(configs) > 1 else ""))
            atomic_write_text(out / HISTORY, "".join(json.dumps(h) + "\n" for h in histories[k]))
        _save(configs, model, scored, optimizer, scheduler, averaged, histories, best_scores, best_key)
        if after_epoch is not None:
            after_epoch(epoch, histories)
        if stop_after is not None and epoch >= stop_after and epoch < first.epochs:
            return [{"stopped_after": epoch} for _ in configs]

    summaries = []
    params = sum(p.numel() for p in model.parameters()) // len(configs)
    for config, out, history in zip(configs, outs, histories):
        summary = {
            "model": config.model,
            "params": params,
            "seed": config.seed,
            **summarize_history(history, loaders.val is not None),
            "wall_seconds": time.perf_counter() - start,
            "data": {
                "train": loaders.train.num_samples,
                "val": loaders.val.num_samples if loaders.val else 0,
                "test": loaders.test.num_samples,
            },  # fmt: skip
            "provenance": {**provenance(device), "stacked": len(configs), "cuda_graph": graphed is not None},
        }
        atomic_write_json(out / SUMMARY, summary)
        summaries.append(summary)
    return summaries


def _loaders(config: TrainConfig, device: torch.device, data: tuple[ArrayPair, ArrayPair] | None) -> Loaders:
    common = dict(
        batch_size=config.batch_size, augment=config.augment, val_size=config.val_size, seed=config.seed,
        limit=config.limit, device=device, test_batch_size=EVAL_BATCH.get(device.type, 1000),
    )  # fmt: skip
    if data is not None:
        return make_loaders(data[0], data[1], **common)  # type: ignore[arg-type]
    return get_dataloaders(data_dir=config.data_dir, **common)  # type: ignore[arg-type]


def _build(configs: list[TrainConfig], device: torch.device) -> StackedNet:
    """Each run's model initialised under its own seed, stacked."""
    models = []
    for config in configs:
        torch.manual_seed(config.seed)
        models.append(build_model(config.model, config.to_dict()))
    model = stack(models).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # measured faster for these convs on CPU
    return model


def _step_per_epoch(
    scheduler: Scheduler | None,
    config: TrainConfig,
    vals: list[dict[str, float]] | None,
    train: dict[str, list[float]],
) -> None:
    """The epoch-level schedules (one-cycle steps per batch, in the training step)."""
    if config.scheduler == "step":
        scheduler.step()  # type: ignore[union-attr]
    elif config.scheduler == "plateau":
        # on the validation loss; without a split, on the training loss — never on test (one run: see stackable)
        scheduler.step(vals[0]["loss"] if vals is not None else train["loss"][0])  # type: ignore[union-attr,call-arg]


def _save(
    configs: list[TrainConfig], model: StackedNet, scored: StackedNet, optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None, averaged: torch.optim.swa_utils.AveragedModel | None,
    histories: list[list[dict[str, Any]]], best_scores: list[float], best_key: str,
) -> None:  # fmt: skip
    """Each run's ``last.pt`` (all it needs to resume alone or in its group) and, when it improved, ``best.pt``."""
    slots = len(configs)
    shipped = unstack(scored)
    trained = unstack_state(model.state_dict(), slots) if averaged is not None else None
    average = (
        unstack_state(averaged.state_dict(), slots) if averaged is not None else None
    )  # n_averaged shared
    optimizers = _unstack_optimizer(optimizer.state_dict(), slots)
    for k, config in enumerate(configs):
        out, epoch = Path(config.output_dir), len(histories[k])
        if histories[k][-1][best_key] > best_scores[k]:
            best_scores[k] = histories[k][-1][best_key]
            save_checkpoint(out / BEST, shipped[k], config.to_dict(), epoch=epoch)
        resume_state = {} if averaged is None else {"train_state_dict": trained[k], "average": average[k]}  # type: ignore[index]
        save_checkpoint(
            out / LAST, shipped[k], config.to_dict(), epoch=epoch, history=histories[k], best_score=best_scores[k],
            optimizer=optimizers[k], scheduler=scheduler.state_dict() if scheduler is not None else None,
            **resume_state,
        )  # fmt: skip


def _restore(
    configs: list[TrainConfig], model: StackedNet, optimizer: torch.optim.Optimizer, scheduler: Scheduler | None,
    averaged: torch.optim.swa_utils.AveragedModel | None,
) -> tuple[list[list[dict[str, Any]]], list[float]]:  # fmt: skip
    """Load each run's ``last.pt`` into the stacked state; return the histories and best scores."""
    states = []
    for config in configs:
        out = Path(config.output_dir)
        state = read_checkpoint(out / LAST)
        recorded = TrainConfig.from_dict(state["config"]).to_dict()  # fields added since get their defaults
        if _identity(json.loads(json.dumps(recorded))) != _identity(json.loads(json.dumps(config.to_dict()))):
            raise MnistlabError(
                f"{out} was started with a different config; resume it with its own config.json"
            )
        states.append(state)
    if len({len(s["history"]) for s in states}) > 1:
        raise MnistlabError("the runs of this group stopped at different epochs; resume them one by one")
    weights = [s["train_state_dict"] if averaged is not None else s["state_dict"] for s in states]
    model.load_state_dict(stack_states(weights))
    if averaged is not None:
        averaged.load_state_dict(stack_states([s["average"] for s in states]))
    optimizer.load_state_dict(_stack_optimizer([s["optimizer"] for s in states]))
    if scheduler is not None:
        scheduler.load_state_dict(states[0]["scheduler"])
    return [s["history"] for s in states], [s["best_score"] for s in states]


def _unstack_optimizer(state: dict[str, Any], slots: int) -> list[dict[str, Any]]:
    """Each slot's optimizer state, as the optimizer of its plain model would hold it."""
    entries = {i: unstack_state(entry, slots) for i, entry in state["state"].items()}
    return [{"state": {i: parts[k] for i, parts in entries.items()}, "param_groups": state["param_groups"]}
            for k in range(slots)]  # fmt: skip


def _stack_optimizer(states: list[dict[str, Any]]) -> dict[str, Any]:
    merged = {i: stack_states([s["state"][i] for s in states]) for i in states[0]["state"]}
    return {"state": merged, "param_groups": states[0]["param_groups"]}


def _graphed_trainer(
    config: TrainConfig, model: StackedNet, optimizer: torch.optim.Optimizer, scheduler: Scheduler | None,
    averaged: torch.optim.swa_utils.AveragedModel | None, loader: TensorLoader, seeds: tuple[int, ...],
    device: torch.device,
) -> Any:  # fmt: skip
    """The captured-graph training step on CUDA (None elsewhere, or when the recipe or config rules it out)."""
    if device.type != "cuda" or not config.cuda_graph or config.compile or config.optimizer != "sgd":
        return None
    from mnistlab.graphstep import GraphedTrainer

    return GraphedTrainer(config, model, optimizer, scheduler, averaged, loader, seeds)


def _epoch_line(h: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {h['epoch']:>2}/{epochs}", f"loss {h['train_loss']:.4f}", f"train {h['train_acc']:.2f}%"]
    if h["val_acc"] is not None:
        parts.append(f"val {h['val_acc']:.2f}%")
    if h["test_acc"] is not None:
        parts.append(f"test {h['test_acc']:.2f}%")
    parts += [f"lr {h['lr']:.4g}", f"{h['seconds']:.1f}s"]
    return "  ".join(parts)
