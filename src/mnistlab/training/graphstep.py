"""The training step without launch overhead: on CUDA, a full batch's step replayed as one captured graph.

A step of these small networks is a few hundred tiny kernels (data gather and warp, forward, backward,
optimizer, schedule, moving average), each far shorter than its launch. Captured once as a CUDA graph,
the whole step is one launch, and nothing in it touches the host: the epoch's order and warps
(``TensorLoader.plan``, the same on every device) and the one-cycle rates are copied to the device once
per epoch, a step counter on the device picks each batch's rows and rate, and the metrics accumulate on
the device until the epoch ends. The last, partial batch runs the same step eagerly.

The optimizer step is SGD written with foreach operations on device tensors (the learning rate and
momentum are tensors the graph reads, not numbers baked into it); the schedule is the real scheduler's,
stepped on the host once per batch of the epoch ahead to fill the tables, so its state is what resume
expects. With ``capture=False`` the same step runs eagerly on any device (the tests do this on the CPU).
"""

from __future__ import annotations

import torch

from mnistlab.core.config import TrainConfig
from mnistlab.data.loader import TensorLoader
from mnistlab.training.step import TrainingState

WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuDNN picks its algorithms, memory settles)


@torch.no_grad()
def sgd_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor],
    lr: torch.Tensor,
    momentum: torch.Tensor,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> None:
    """``torch.optim.SGD``'s update (dampening 0) with the rate and momentum as device tensors.

    The momentum buffers start at zero, so the first step gives ``buffer = grad`` as torch's does."""
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, grads)
    steps = torch._foreach_add(grads, torch._foreach_mul(buffers, momentum)) if nesterov else buffers
    torch._foreach_sub_(params, torch._foreach_mul(steps, lr))


@torch.no_grad()
def ema_update(averages: list[torch.Tensor], currents: list[torch.Tensor], decay: float) -> None:
    """``AveragedModel``'s exponential moving average step (after its first, copying update)."""
    floats = [(a, c) for a, c in zip(averages, currents) if a.is_floating_point()]
    torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - decay)
    for a, c in zip(averages, currents):
        if not a.is_floating_point():  # a step count: as AveragedModel does it
            a.copy_(a * decay + c * (1 - decay))


class GraphedTrainer:
    """Trains a stacked network epoch by epoch with the step captured once and replayed."""

    def __init__(
        self,
        config: TrainConfig,
        state: TrainingState,
        loader: TensorLoader,
        seeds: tuple[int, ...],
        *,
        capture: bool = True,
    ) -> None:
        self.config, self.state, self.loader, self.seeds, self.capture = config, state, loader, seeds, capture
        self.model, self.optimizer, self.averaged = state.model, state.optimizer, state.averaged
        model, optimizer, averaged = state.model, state.optimizer, state.averaged
        device = loader.labels.device
        slots, n, batch = len(seeds), loader.num_samples, config.batch_size
        self.full, self.rest = divmod(n, batch)
        self.params = list(model.parameters())
        optimizer._opt_called = True  # type: ignore[attr-defined]  # its step is sgd_update: no scheduler warning
        self.buffers = []
        for p in self.params:  # the optimizer's own state, so that its state dict is what a checkpoint saves
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            self.buffers.append(state["momentum_buffer"])
        self.order = torch.zeros(slots, n, dtype=torch.int64, device=device)
        self.theta = torch.zeros(slots, n, 2, 3, device=device) if loader.augment.active else None
        self.rates = torch.zeros(self.full + 1, device=device)
        self.momenta = torch.zeros(self.full + 1, device=device)
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self.columns = torch.arange(batch, device=device)
        self.loss_sum = torch.zeros(slots, device=device)
        self.correct = torch.zeros(slots, dtype=torch.int64, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        if averaged is not None:
            self.averages = list(averaged.module.parameters()) + list(averaged.module.buffers())
            self.currents = self.params + list(model.buffers())
            self.updates = int(averaged.n_averaged)  # on the host: whether the next update is the first
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms

    def run_epoch(self, epoch: int) -> dict[str, list[float]]:
        """One epoch: each slot's mean loss and accuracy (%), read from the device once at its end."""
        self._load_epoch(epoch)
        self.model.train()
        done = 0
        if self.graph is None and self.capture and self.full > WARMUP_STEPS:
            self._capture()
            done = WARMUP_STEPS  # the warm-up steps were real steps of this epoch
        for _ in range(done, self.full):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step(self.columns + self.step * self.config.batch_size)
        if self.rest:
            start = self.full * self.config.batch_size
            self._step(torch.arange(start, start + self.rest, device=self.step.device))
        if self.averaged is not None:
            self.averaged.n_averaged += self.full + (1 if self.rest else 0)
            self.updates = int(self.averaged.n_averaged)
        seen = self.loader.num_samples
        return {
            "loss": [v / seen for v in self.loss_sum.tolist()],
            "acc": [100.0 * c / seen for c in self.correct.tolist()],
        }

    def _load_epoch(self, epoch: int) -> None:
        """Copy the epoch's plans and rates to the device; reset the counters (in place: the graph reads them)."""
        plans = [self.loader.plan(seed, epoch) for seed in self.seeds]
        n = self.loader.num_samples
        order = torch.stack([p.order if p.order is not None else torch.arange(n) for p in plans])
        self.order.copy_(order)
        if self.theta is not None:
            self.theta.copy_(torch.stack([p.theta for p in plans]))  # type: ignore[misc]
        rates, momenta = self._schedule(self.full + (1 if self.rest else 0))
        self.rates[: len(rates)].copy_(torch.tensor(rates))
        self.momenta[: len(momenta)].copy_(torch.tensor(momenta))
        self.step.zero_()
        self.loss_sum.zero_()
        self.correct.zero_()

    def _schedule(self, steps: int) -> tuple[list[float], list[float]]:
        """The rate and momentum of each step of the epoch, as the optimizer would read them."""
        group = self.optimizer.param_groups[0]
        rates, momenta = [], []
        for _ in range(steps):
            rates.append(group["lr"])
            momenta.append(group.get("momentum", 0.0))
            self.state.after_batch()
        return rates, momenta

    def _step(self, columns: torch.Tensor) -> None:
        """One training step on the epoch's positions ``columns``; advances the device step counter."""
        config, slots = self.config, len(self.seeds)
        index = self.order.index_select(1, columns)  # (K, B)
        theta = None if self.theta is None else self.theta.index_select(1, columns)
        images, labels = self.loader.batch(index, theta, slots)
        log_probs = self.model(images)  # (B, K, 10)
        losses = self.state.losses(images, log_probs, labels)
        for p in self.params:
            p.grad = None
        losses.sum().backward()
        rate = self.rates.index_select(0, self.step.view(1)).squeeze(0)
        momentum = self.momenta.index_select(0, self.step.view(1)).squeeze(0)
        sgd_update(
            self.params,
            [p.grad for p in self.params],
            self.buffers,
            rate,
            momentum,
            config.weight_decay,
            config.nesterov,
        )  # type: ignore[misc]
        if self.averaged is not None:
            if self.updates == 0:  # the average's first update copies (a warm-up step, never in the graph)
                with torch.no_grad():
                    torch._foreach_copy_(self.averages, self.currents)
            else:
                ema_update(self.averages, self.currents, config.ema)
            self.updates += 1
        with torch.no_grad():
            self.loss_sum += losses.detach() * len(columns)
            self.correct += (log_probs.detach().argmax(-1) == labels).sum(0)
            self.step += 1

    def _capture(self) -> None:
        """Warm up on a side stream with the epoch's first real steps, then capture one full-batch step."""
        batch = self.config.batch_size
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._step(self.columns + self.step * batch)
        torch.cuda.current_stream().wait_stream(side)
        for p in self.params:
            p.grad = None
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step(self.columns + self.step * batch)
