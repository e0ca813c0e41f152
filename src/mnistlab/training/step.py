"""A training step's parts as plain functions: the device, the optimizer and its rate schedule, the moving
average of the weights, each slot's loss, one epoch, and evaluation.

``engine`` runs them epoch by epoch into run directories; ``graphstep`` replays the same step as one captured
CUDA graph. Both build on this module; it imports neither. A network here is stacked (``models.stacking``):
[B, K, ...] in, [B, K, 10] log-probabilities out, K slots (seeds) trained side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnistlab.core.config import TrainConfig
from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import sha256_file
from mnistlab.data.loader import TensorLoader
from mnistlab.models.checkpoint import model_from, read_checkpoint
from mnistlab.models.stacking import StackedNet, stack
from mnistlab.training.attention import Attention

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
Average = torch.optim.swa_utils.AveragedModel
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
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Scheduler | None:
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            pct_start=config.pct_start,
            div_factor=config.div_factor,
            final_div_factor=config.final_div_factor,
        )
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.gamma, patience=config.patience
        )
    return None


def make_average(model: nn.Module, decay: float) -> Average | None:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics (None when decay is 0)."""
    if not decay:
        return None
    return Average(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def checked_checkpoint(path: str, recorded: str | None, val_size: int, role: str) -> dict[str, Any]:
    """A checkpoint a run reads (``role``: a teacher, or the network it starts from), as the run was configured with
    it: present, of its recorded sha256, and not trained on the images the run is scored on (its ``val_size`` at
    least the run's); one line otherwise."""
    if not Path(path).is_file():
        raise MnistlabError(f"{role} {path} does not exist; the run needs it as it was configured")
    if recorded is None or sha256_file(path) != recorded:
        raise MnistlabError(f"{role} {path} changed since the run was configured (its sha256 differs)")
    payload = read_checkpoint(path)
    seen = payload["config"].get("val_size", 0)
    if val_size and seen < val_size:
        raise MnistlabError(
            f"{role} {path} trained on validation images the student is scored on (its val_size is {seen}, the "
            f"student's {val_size}): use runs trained with --val-size {val_size}"
        )
    return payload


def load_parent(config: TrainConfig) -> nn.Module:
    """The trained network a run starts from (``Recipe.init``, cut to the run's widths by ``models.prune``),
    checked as its teachers are (``checked_checkpoint``)."""
    assert config.init is not None
    return model_from(checked_checkpoint(config.init, config.init_sha256, config.val_size, "init"), config.init)


class Teachers(nn.Module):
    """Frozen teachers, stacked by architecture: one pass over the student's batch (every slot's images at once)
    gives their mean probability at the distillation temperature."""

    def __init__(self, groups: list[StackedNet], temperature: float) -> None:
        super().__init__()
        self.groups = nn.ModuleList(groups)
        self.count = sum(g.slots for g in groups)
        self.temperature = temperature
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def load(cls, config: TrainConfig, device: torch.device) -> Teachers | None:
        """``config``'s teachers, each checked against its recorded sha256 and against the student's validation
        split (a teacher that trained on the images the student is scored on is refused); None without any."""
        if not config.teachers:
            return None
        if len(config.teacher_sha256) != len(config.teachers):
            raise MnistlabError("every teacher needs its sha256: build the config with mnistlab.models.config_for")
        by_model: dict[str, list[nn.Module]] = {}
        for path, recorded in zip(config.teachers, config.teacher_sha256):
            payload = checked_checkpoint(path, recorded, config.val_size, "teacher")
            by_model.setdefault(payload["model"], []).append(model_from(payload, path))
        return cls([stack(models) for models in by_model.values()], config.distill_temperature).to(device)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The teachers' mean probability at the temperature, [B, K, 10], of the student's [B, K, 28, 28] batch."""
        batch, slots = images.shape[:2]
        flat = images.reshape(batch * slots, 1, *images.shape[2:])
        total = None
        for group in self.groups:
            log_probs = group(flat.expand(-1, group.slots, -1, -1))  # (B*K, T, 10)
            probs = torch.softmax(log_probs / self.temperature, dim=-1).sum(1)
            total = probs if total is None else total + probs
        return (total / self.count).view(batch, slots, -1)


@dataclass
class TrainingState:
    """What training changes, and the one place that says when the rate schedule steps and what the loss is: the
    stacked network, its optimizer, the scheduler of the recipe's kind (``config.scheduler``), the moving
    average, and the loss's settings (label smoothing; the teachers, their share and temperature, and attention
    transfer from them)."""

    model: StackedNet
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    averaged: Average | None
    schedule: str  # none | step | onecycle | plateau
    label_smoothing: float = 0.0
    teachers: Teachers | None = None
    distill_alpha: float = 0.0
    distill_temperature: float = 1.0
    precision: str = "fp32"  # the forward pass's: fp32, or bf16 autocast (the weights and the loss stay float32)
    attention: Attention | None = None  # attention transfer from the teachers (``training.attention``)

    @classmethod
    def create(
        cls, model: StackedNet, config: TrainConfig, steps_per_epoch: int, teachers: Teachers | None = None
    ) -> TrainingState:
        optimizer = make_optimizer(model, config)
        averaged = make_average(model, config.ema)  # a copy of the network before its taps: the average has none
        attention = None
        if config.attention and teachers is not None:
            attention = Attention.create(config.attention, model, list(teachers.groups))  # type: ignore[arg-type]
        return cls(
            model,
            optimizer,
            make_scheduler(optimizer, config, steps_per_epoch),
            averaged,
            config.scheduler,
            config.label_smoothing,
            teachers,
            config.distill_alpha,
            config.distill_temperature,
            config.precision,
            attention,
        )

    def losses(
        self,
        images: torch.Tensor,
        log_probs: torch.Tensor,
        labels: torch.Tensor,
        target: torch.Tensor | None = None,
        maps: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Each slot's loss, [K]: cross-entropy on the labels; with teachers, (1 - alpha) of it plus alpha T^2
        times the KL divergence from the teachers' mean probability to the student's, both at temperature T; with
        attention transfer, plus its term (``Attention.loss``). ``target`` is that mean probability and ``maps`` the
        teachers' attention maps when already known (``teachercache``); otherwise the teachers look at ``images``."""
        hard = slot_losses(log_probs, labels, self.label_smoothing)
        if self.teachers is None:
            return hard
        attention = self.attention
        if target is None or (attention is not None and maps is None):
            computed = self.teachers.probabilities(images)  # (B, K, 10); the teachers' maps from the same pass
            target = computed if target is None else target
            if attention is not None and maps is None:
                maps = attention.teachers.mean(*images.shape[:2])
        t = self.distill_temperature
        student = F.log_softmax(log_probs / t, dim=-1)  # log-probabilities / T: the logits / T, shifted
        kl = (target * (target.clamp_min(1e-12).log() - student)).sum(-1).mean(0)  # (K,)
        total = (1 - self.distill_alpha) * hard + self.distill_alpha * t * t * kl
        if attention is not None:
            total = total + attention.loss(log_probs.shape[1], maps)  # type: ignore[arg-type]
        return total

    @property
    def scored(self) -> StackedNet:
        """The weights evaluated, reported and shipped: the moving average when there is one."""
        return self.averaged.module if self.averaged is not None else self.model  # type: ignore[return-value]

    def after_batch(self) -> None:
        """One-cycle steps after every batch."""
        if self.schedule == "onecycle":
            self.scheduler.step()  # type: ignore[union-attr]

    def after_epoch(self, val_loss: float | None, train_loss: float) -> None:
        """A step schedule steps after every epoch; a plateau schedule on the validation loss, or without a
        split on the training loss, never on test (one run only: ``engine.recipe_unstackable``)."""
        if self.schedule == "step":
            self.scheduler.step()  # type: ignore[union-attr]
        elif self.schedule == "plateau":
            self.scheduler.step(val_loss if val_loss is not None else train_loss)  # type: ignore[union-attr,arg-type]


def slot_losses(log_probs: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Each slot's mean loss over its batch, [K], from log-probabilities [B, K, 10] and labels [B, K]."""
    if log_probs.shape[1] == 1:  # one model: the loss exactly as a plain network computes it
        return F.cross_entropy(log_probs[:, 0], labels[:, 0], label_smoothing=label_smoothing).unsqueeze(0)
    flat = F.cross_entropy(log_probs.flatten(0, 1), labels.flatten(), reduction="none", label_smoothing=label_smoothing)
    return flat.view(labels.shape).mean(0)


def train_one_epoch(
    state: TrainingState,
    batches: Batches,
    *,
    forward: nn.Module | None = None,
    device: torch.device = torch.device("cpu"),
    progress: tqdm | None = None,
    targets: list[torch.Tensor] | None = None,
    maps: Callable[[int], list[torch.Tensor]] | None = None,
) -> dict[str, list[float]]:
    """One pass over ``batches`` ([B, K, 28, 28] images, [B, K] labels) of ``state``'s stacked network (run
    through ``forward``, e.g. its compiled form, when given); the loss is the sum of the K slots' losses. The
    schedule and the moving average follow every batch. ``targets``: the teachers' outputs for each batch, when
    read from their cache; ``maps``: batch i's attention targets, when read from a table. Returns each slot's
    mean loss and accuracy (%)."""
    model = state.model
    forward = model if forward is None else forward  # not `or`: a compiled module has no truth value
    forward.train()
    loss_sum = correct = None
    seen = 0
    for index, (images, labels) in enumerate(batches):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=state.precision == "bf16"):
            log_probs = forward(images).float()  # (B, K, 10); the loss in float32 whatever the forward's precision
        known = None if targets is None else targets[index]
        losses = state.losses(images, log_probs, labels, known, None if maps is None else maps(index))  # (K,)
        state.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        state.optimizer.step()
        state.after_batch()
        if state.averaged is not None:
            state.averaged.update_parameters(model)
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
    return {"loss": [v / seen for v in loss_sum.tolist()], "acc": [100.0 * c / seen for c in correct.tolist()]}


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Batches, *, device: torch.device = torch.device("cpu"), keep_predictions: bool = False
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
    result: dict[str, Any] = {"loss": loss_sum / max(seen, 1), "acc": 100.0 * correct / max(seen, 1), "n": seen}
    if keep_predictions:
        result["predictions"] = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64)
    return result


@torch.inference_mode()
def evaluate_slots(model: StackedNet, loader: TensorLoader, *, device: torch.device) -> list[dict[str, float]]:
    """Each slot's mean loss and accuracy (%) on ``loader``'s split (every slot sees every image)."""
    model.eval()
    slots = model.slots
    loss_sum = torch.zeros(slots, dtype=torch.float64, device=device)
    correct = torch.zeros(slots, dtype=torch.int64, device=device)
    for images, labels in loader.stacked((0,) * slots):
        log_probs = model(images.to(device))  # (B, K, 10)
        labels = labels.to(device)
        # per slot, summed in float64 as a plain evaluation sums batch by batch
        loss_sum += torch.stack([F.nll_loss(log_probs[:, k], labels[:, k], reduction="sum") for k in range(slots)])
        correct += (log_probs.argmax(-1) == labels).sum(0)
    n = loader.num_samples
    return [
        {"loss": loss / max(n, 1), "acc": 100.0 * hits / max(n, 1)}
        for loss, hits in zip(loss_sum.tolist(), correct.tolist())
    ]
