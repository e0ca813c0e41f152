"""``fit``: a run trained epoch by epoch into its run directory, with the step's parts from ``training``.

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
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mnistlab import __version__
from mnistlab.core import perf
from mnistlab.core.config import TrainConfig
from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import atomic_write_all, json_text
from mnistlab.core.rundir import (
    BEST,
    CONFIG,
    HISTORY,
    LAST,
    LAST_K,
    LAST_MEAN,
    LAST_MIN,
    LAST_TESTS,
    SUMMARY,
    HistoryRow,
    Provenance,
    Summary,
    check_run_dir,
    read_summary,
    refuse_existing_run,
    run_lock,
    run_status,
)
from mnistlab.data.loader import Loaders, TensorLoader, get_dataloaders, make_loaders
from mnistlab.data.mnist import resolve_data_dir
from mnistlab.models import config_for
from mnistlab.models.checkpoint import checkpoint_writer, read_checkpoint
from mnistlab.models.external import ensure_registered, keep_copy
from mnistlab.models.prune import cut_into
from mnistlab.models.registry import build_model, get_card
from mnistlab.models.stacking import StackedNet, stack, stack_problem, stack_states, unstack, unstack_state
from mnistlab.training.graphstep import GraphedTrainer
from mnistlab.training.step import (
    EVAL_BATCH,
    Teachers,
    TrainingState,
    evaluate_slots,
    load_parent,
    resolve_device,
    train_one_epoch,
)
from mnistlab.training.teachercache import CleanMaps, CleanTargets, TeacherCache, cache_for, maps_for

ArrayPair = tuple[np.ndarray, np.ndarray]
TEACHER_OUTPUTS = "teacher-outputs"  # under the data folder: the teachers' cached outputs (teachercache)


def provenance(device: torch.device) -> Provenance:
    """Where and with what a run was made (the commit of this code's own checkout, wherever the run's folder is)."""
    commit, dirty = _own_checkout_commit()
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


def _own_checkout_commit() -> tuple[str | None, bool | None]:
    """The commit and state of the checkout this package runs from (``<checkout>/src/mnistlab``), or (None, None):
    an installed package inside someone else's repository (a virtual environment in a user's project) is not
    that repository's code, so its commit is not recorded."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parents[1]
    if package.parent.name != "src" or not (checkout / "pyproject.toml").is_file():
        return None, None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, check=True, cwd=checkout
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != checkout.resolve():
            return None, None
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def summarize_history(history: list[HistoryRow], has_val: bool) -> dict[str, Any]:
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
        LAST_TESTS: tail,
        LAST_MEAN: sum(tail) / len(tail) if tail else None,
        LAST_MIN: min(tail) if tail else None,
        "train_seconds": sum(h["seconds"] for h in history),
    }


# -------------------------------------------------------------------------------------------------- fit


def stackable(configs: list[TrainConfig]) -> str | None:
    """Why ``configs`` cannot train as one stacked group (None if they can)."""
    first = configs[0].shared()
    for config in configs[1:]:
        other = config.shared()
        if other != first:
            changed = sorted(k for k in first if first[k] != other.get(k))
            return f"the runs differ in {', '.join(changed)}, not only in seed and output directory"
    if len(configs) > 1 and (reason := recipe_unstackable(configs[0])):
        return reason
    if len({c.output_dir for c in configs}) < len(configs):
        return "two runs share an output directory"
    return None


def recipe_unstackable(config: TrainConfig) -> str | None:
    """Why this recipe's seeds cannot share one stacked network (None if they can): its schedule, or its
    model's layers (a model from outside the package may hold layers without a stacked form)."""
    if config.scheduler == "plateau":
        return "a plateau schedule lowers each run's rate on its own validation loss"
    if config.source:
        return stack_problem(build_model(get_card(config.model), config.to_dict()))
    return None


def fit(config: Any, **kwargs: Any) -> Summary:
    """Train ``config.model`` per ``config`` into ``config.output_dir``; return the summary. ``config`` may also be
    a model (a name, a class or builder from a notebook: ``mnistlab.config_for``), trained with its own recipe."""
    if not isinstance(config, TrainConfig):
        config = config_for(config)
    return fit_group([config], **kwargs)[0]


def fit_group(
    configs: list[TrainConfig],
    *,
    data: tuple[ArrayPair, ArrayPair] | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
    after_epoch: Callable[[int, list[list[HistoryRow]]], None] | None = None,
) -> list[Summary]:
    """Train ``configs`` (one model and recipe, one seed each) as one stacked network, each into its own
    run directory; return their summaries.

    ``data`` replaces real MNIST with in-memory arrays (tests); ``stop_after`` ends after that many
    epochs as if the run had been killed (tests of resume). ``after_epoch(epoch, histories)`` sees each
    epoch's records once they are saved; an exception it raises (a search pruning a trial) ends the runs there.
    """
    if data is None:
        resolve_data_dir(configs[0].data_dir)  # a --data-dir that is a file stops here, before any folder is made
    with ExitStack() as locks:  # one writer per run folder, released however this ends
        for config in configs:
            locks.enter_context(run_lock(config.output_dir))
        if resume and all(_finished_as(c) for c in configs):
            log(
                f"{', '.join(c.output_dir for c in configs)}: finished; nothing to resume (its summary is left as it was)"
            )
            return [read_summary(Path(c.output_dir)) for c in configs]
        group = prepare(configs, data=data, resume=resume, log=log)
        for epoch in range(len(group.histories[0]) + 1, group.epochs + 1):
            rows = train_epoch(group, epoch, progress=progress)
            record_epoch(group, rows, log=log)
            if after_epoch is not None:
                after_epoch(epoch, group.histories)
            if stop_after is not None and epoch >= stop_after and epoch < group.epochs:
                return [{"stopped_after": epoch} for _ in configs]
        return finish(group)


def _finished_as(config: TrainConfig) -> bool:
    """Whether ``config``'s run is finished, and with this very config (another is refused where it is restored)."""
    if run_status(config.output_dir) != "done":
        return False
    return TrainConfig.read(config.output_dir).identity() == config.identity()


@dataclass
class Group:
    """A stacked group in training: its runs' configs and folders, the data, the stacked state, and what each run
    has recorded so far."""

    configs: list[TrainConfig]
    device: torch.device
    loaders: Loaders
    state: TrainingState
    histories: list[list[HistoryRow]]
    best_scores: list[float]
    forward: Any  # the network the step calls (compiled or not)
    judged: Any  # the network evaluated: the moving average where there is one
    graphed: GraphedTrainer | None
    cache: TeacherCache | CleanTargets | None  # the teachers' outputs: once per epoch's images, or once in all
    maps: CleanMaps | None  # the clean view's attention maps (attention transfer), once in all
    start: float

    @property
    def epochs(self) -> int:
        return self.configs[0].epochs

    @property
    def best_key(self) -> str:
        return "val_acc" if self.loaders.val is not None else "train_acc"


def prepare(
    configs: list[TrainConfig], *, data: tuple[ArrayPair, ArrayPair] | None, resume: bool, log: Callable[[str], None]
) -> Group:
    """Check the group, build its data, network, optimizer and teachers, and restore or start its run folders."""
    for config in configs:
        check_run_dir(config.output_dir)
        # a model from outside the package, in a fresh process (a worker, a resumed run): from its run's copy
        ensure_registered(config.to_dict(), Path(config.output_dir), log)
    reason = stackable(configs)
    if reason is not None:
        raise MnistlabError(f"these runs cannot train stacked: {reason}")
    if resume and all(run_status(c.output_dir) == "todo" for c in configs):
        resume = False  # stopped before its first epoch was saved: it starts again, to the same numbers
        log(f"{', '.join(c.output_dir for c in configs)}: no epoch was saved; training from the first")
    for config in configs:
        if not resume:
            refuse_existing_run(config.output_dir)
    start = time.perf_counter()
    first = configs[0]
    device = resolve_device(first.device)
    # the thread count a run started with is the one it resumes with (torch's default follows the CPUs a process
    # may use, which can differ between two processes; a different count sums in another order)
    perf.configure(first.threads or (_recorded_threads(configs[0]) if resume else 0))
    loaders = _loaders(first, device, data)
    if loaders.train.num_samples == 0:
        raise MnistlabError("the training split is empty; lower --val-size or raise --limit")
    teachers = Teachers.load(first, device)  # frozen, checked against their sha256 and the validation split
    state = TrainingState.create(build_stacked(configs, device), first, len(loaders.train), teachers)
    histories: list[list[HistoryRow]] = [[] for _ in configs]
    best_scores = [-math.inf] * len(configs)
    if resume:
        histories, best_scores = _restore(configs, state)
        log(f"resuming {', '.join(c.output_dir for c in configs)} after epoch {len(histories[0])}")
    # every run's config.json as one write: a group killed here is in all its folders or in none
    atomic_write_all([(Path(c.output_dir) / CONFIG, _json_writer(c.to_dict())) for c in configs])
    for config in configs:
        if config.source and not resume:  # a model from outside the package: its run keeps what it was built from
            keep_copy(config.source, Path(config.output_dir), config.source_sha256)
    forward = torch.compile(state.model) if first.compile else state.model
    judged = forward if state.averaged is None else state.scored
    graphed = graphed_trainer(config=first, state=state, loader=loaders.train, seeds=_seeds(configs), device=device)
    kept = lambda: resolve_data_dir(first.data_dir) / TEACHER_OUTPUTS  # noqa: E731
    cache = cache_for(configs, teachers, data, device, kept)
    maps = maps_for(configs, teachers, state.attention, data, device, kept)
    return Group(configs, device, loaders, state, histories, best_scores, forward, judged, graphed, cache, maps, start)


def train_epoch(group: Group, epoch: int, *, progress: bool) -> list[HistoryRow]:
    """One epoch of every run in the group, then its evaluation: each run's history row."""
    first, loaders, state, device = group.configs[0], group.loaders, group.state, group.device
    torch.manual_seed(first.seed * 1_000 + epoch)  # dropout's masks follow (seed, epoch): resumable
    loaders.train.set_epoch(epoch)
    epoch_start = time.perf_counter()
    if group.graphed is not None:
        train = group.graphed.run_epoch(epoch)
    else:
        bar = tqdm(total=len(loaders.train), desc=f"epoch {epoch}/{first.epochs}", leave=False, disable=not progress)
        with bar:
            known = None if group.cache is None else group.cache.targets(epoch, loaders.train, state.teachers, device)
            maps = None if group.maps is None else group.maps.epoch(epoch, loaders.train, state.teachers, device)
            stacked = loaders.train.stacked(_seeds(group.configs))
            train = train_one_epoch(
                state, stacked, forward=group.forward, device=device, progress=bar, targets=known, maps=maps
            )
    lr = state.optimizer.param_groups[0]["lr"]
    vals = evaluate_slots(group.judged, loaders.val, device=device) if loaders.val is not None else None
    tests = evaluate_slots(group.judged, loaders.test, device=device) if first.test_every_epoch else None
    state.after_epoch(vals[0]["loss"] if vals else None, train["loss"][0])
    seconds = time.perf_counter() - epoch_start
    rows = []
    for k in range(len(group.configs)):
        val = vals[k] if vals else None
        test = tests[k] if tests else None
        rows.append(
            HistoryRow(
                epoch=epoch,
                train_loss=train["loss"][k],
                train_acc=train["acc"][k],
                val_loss=val["loss"] if val else None,
                val_acc=val["acc"] if val else None,
                test_loss=test["loss"] if test else None,
                test_acc=test["acc"] if test else None,
                lr=lr,
                seconds=seconds,
            )
        )
    return rows


def record_epoch(group: Group, rows: list[HistoryRow], *, log: Callable[[str], None]) -> None:
    """Each run's epoch into its checkpoints and history, every file of the group as one write: a write that
    fails (a full disk) leaves the group at its last complete epoch, its history never ahead of its checkpoint."""
    stacked = len(group.configs) > 1
    for config, row in zip(group.configs, rows):
        if not math.isfinite(row["train_loss"]):  # diverged: saving this epoch would only make a resume diverge too
            raise MnistlabError(
                f"{config.output_dir}: the training loss is not finite at epoch {row['epoch']} (lr {config.lr}: "
                "too high?); the run stopped at its last finite epoch: train it again with a lower rate"
            )
    for config, history, row in zip(group.configs, group.histories, rows):
        history.append(row)
        log(_epoch_line(row, config.epochs) + (f"  [seed {config.seed}]" if stacked else ""))
    try:
        _save(group.configs, group.state, group.histories, group.best_scores, group.best_key)
    except BaseException:
        for history in group.histories:
            history.pop()
        raise


def finish(group: Group) -> list[Summary]:
    """Each run's summary, written to its folder."""
    summaries: list[Summary] = []
    loaders = group.loaders
    params = sum(p.numel() for p in group.state.model.parameters()) // len(group.configs)
    where = {**provenance(group.device), "stacked": len(group.configs), "cuda_graph": group.graphed is not None}
    where |= {"precision": group.configs[0].precision, "native_bf16": perf.native_bf16()}
    if group.cache is not None:
        where["teacher_cache"] = {"hits": group.cache.hits, "misses": group.cache.misses}
    if group.maps is not None:
        where["attention_maps"] = {"hits": group.maps.hits, "misses": group.maps.misses}
    for config, history in zip(group.configs, group.histories):
        summary: Summary = {  # type: ignore[typeddict-item]  (the headline's keys come from summarize_history)
            "model": config.model,
            "params": params,
            "seed": config.seed,
            **summarize_history(history, loaders.val is not None),
            "wall_seconds": time.perf_counter() - group.start,
            "data": {
                "train": loaders.train.num_samples,
                "val": loaders.val.num_samples if loaders.val else 0,
                "test": loaders.test.num_samples,
            },
            "provenance": where,
        }
        summaries.append(summary)
    # every run's summary as one write: a group is finished in all its folders or in none
    atomic_write_all([(Path(c.output_dir) / SUMMARY, _json_writer(s)) for c, s in zip(group.configs, summaries)])
    return summaries


def _json_writer(value: Any) -> Callable[[Any], None]:
    return lambda f: f.write(json_text(value).encode())


def _seeds(configs: list[TrainConfig]) -> tuple[int, ...]:
    return tuple(c.seed for c in configs)


def _loaders(config: TrainConfig, device: torch.device, data: tuple[ArrayPair, ArrayPair] | None) -> Loaders:
    common = dict(
        batch_size=config.batch_size,
        augment=config.augment,
        val_size=config.val_size,
        seed=config.seed,
        limit=config.limit,
        device=device,
        test_batch_size=EVAL_BATCH.get(device.type, 1000),
    )
    if data is not None:
        return make_loaders(data[0], data[1], **common)  # type: ignore[arg-type]
    return get_dataloaders(data_dir=config.data_dir, **common)  # type: ignore[arg-type]


def build_stacked(configs: list[TrainConfig], device: torch.device) -> StackedNet:
    """Each run's model initialised under its own seed (or cut from the network it starts from), stacked."""
    card = get_card(configs[0].model)  # one model for the group
    models = []
    for config in configs:
        torch.manual_seed(config.seed)
        model = build_model(card, config.to_dict())
        if config.init is not None:  # pruning: the parent's weights, cut to this model's widths
            cut_into(load_parent(config), model)
        models.append(model)
    model = stack(models).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # measured faster for these convs on CPU
    return model


def _save(
    configs: list[TrainConfig],
    state: TrainingState,
    histories: list[list[HistoryRow]],
    best_scores: list[float],
    best_key: str,
) -> None:
    """Each run's ``last.pt`` (all it needs to resume in its group), ``history.jsonl`` and, when it improved,
    ``best.pt``: all of them renamed into place only once every one is written whole. A run's last epoch writes a
    slim ``last.pt``: what evaluation, prediction, teachers and the summary read (weights, config, history), not the
    optimizer, schedule and moving-average state that nothing will resume."""
    slots = len(configs)
    averaged = state.averaged
    shipped = unstack(state.scored)
    trained = unstack_state(state.model.state_dict(), slots) if averaged is not None else None
    average = unstack_state(averaged.state_dict(), slots) if averaged is not None else None  # n_averaged shared
    optimizers = _unstack_optimizer(state.optimizer.state_dict(), slots)
    scheduler = state.scheduler.state_dict() if state.scheduler is not None else None
    writes: list[tuple[Path, Callable[[Any], None]]] = []
    improved = [histories[k][-1][best_key] > best_scores[k] for k in range(slots)]
    scores = [histories[k][-1][best_key] if improved[k] else best_scores[k] for k in range(slots)]
    for k, config in enumerate(configs):
        out, epoch = Path(config.output_dir), len(histories[k])
        if improved[k]:
            writes.append((out / BEST, checkpoint_writer(shipped[k], config.to_dict(), epoch=epoch)))
        resume_state: dict[str, Any] = {"optimizer": optimizers[k], "scheduler": scheduler}
        if averaged is not None:
            resume_state |= {"train_state_dict": trained[k], "average": average[k]}  # type: ignore[index]
        last = checkpoint_writer(
            shipped[k],
            config.to_dict(),
            epoch=epoch,
            stacked_seeds=[c.seed for c in configs],  # the group it resumes with
            threads=torch.get_num_threads(),  # the count it resumes with, unless told otherwise
            history=histories[k],
            best_score=scores[k],
            **(resume_state if epoch < config.epochs else {}),  # a finished run resumes nothing
        )
        text = "".join(json.dumps(h) + "\n" for h in histories[k]).encode()
        writes += [(out / LAST, last), (out / HISTORY, lambda f, text=text: f.write(text))]
    atomic_write_all(writes)
    best_scores[:] = scores


def _recorded_threads(config: TrainConfig) -> int:
    """The thread count a run's ``last.pt`` was made with (0: none recorded, torch's default)."""
    path = Path(config.output_dir) / LAST
    return int(read_checkpoint(path).get("threads") or 0) if path.is_file() else 0


def _restore(configs: list[TrainConfig], state: TrainingState) -> tuple[list[list[HistoryRow]], list[float]]:
    """Load each run's ``last.pt`` into the stacked state; return the histories and best scores."""
    checkpoints = []
    for config in configs:
        out = Path(config.output_dir)
        checkpoint = read_checkpoint(out / LAST)
        recorded = TrainConfig.from_dict(checkpoint["config"])  # fields added since get their defaults
        theirs, ours = _as_json(recorded.identity()), _as_json(config.identity())
        if theirs != ours:
            changed = sorted(k for k in ours if ours[k] != theirs.get(k))
            raise MnistlabError(
                f"{out}/{CONFIG} differs from the config its {LAST} was trained with ({', '.join(changed)}): set "
                f"those fields back as they were to resume it, or train the changed recipe into a new folder"
            )
        group = checkpoint.get("stacked_seeds", [c.seed for c in configs])  # older checkpoints: as asked
        trained = len(checkpoint["history"]) >= config.epochs  # all its epochs: only its summary is left to write
        if group != [c.seed for c in configs] and not trained:
            raise MnistlabError(
                f"{out} was trained stacked with seeds {', '.join(map(str, group))}: resume them together "
                f"(`mnistlab train --resume {out.parent}`); alone it would not give the group's numbers"
            )
        checkpoints.append(checkpoint)
    epochs = sorted({len(c["history"]) for c in checkpoints})
    if len(epochs) > 1:  # only a save cut short by mnistlab before group saves: a group is now saved as one
        behind = [c.output_dir for c, k in zip(configs, checkpoints) if len(k["history"]) < epochs[-1]]
        raise MnistlabError(
            f"{', '.join(behind)} stopped at an earlier epoch than the rest of the group (a save cut short by an "
            f"older mnistlab); it cannot reach the group's numbers: to train it again from its first epoch, delete its "
            f"{LAST}, {HISTORY} and {BEST} and run the same command again"
        )
    if all(len(c["history"]) >= config.epochs for c, config in zip(checkpoints, configs)):
        # every epoch trained (a slim last.pt): only the summaries are left to write, from the histories
        return [c["history"] for c in checkpoints], [c["best_score"] for c in checkpoints]
    averaged = state.averaged
    weights = [c["train_state_dict"] if averaged is not None else c["state_dict"] for c in checkpoints]
    state.model.load_state_dict(stack_states(weights))
    if averaged is not None:
        averaged.load_state_dict(stack_states([c["average"] for c in checkpoints]))
    state.optimizer.load_state_dict(_stack_optimizer([c["optimizer"] for c in checkpoints]))
    if state.scheduler is not None:
        state.scheduler.load_state_dict(checkpoints[0]["scheduler"])
    return [c["history"] for c in checkpoints], [c["best_score"] for c in checkpoints]


def _as_json(values: dict[str, Any]) -> Any:
    """``values`` as JSON reads them back (tuples become lists), to compare a config with a recorded one."""
    return json.loads(json.dumps(values))


def _unstack_optimizer(state: dict[str, Any], slots: int) -> list[dict[str, Any]]:
    """Each slot's optimizer state, as the optimizer of its plain model would hold it."""
    entries = {i: unstack_state(entry, slots) for i, entry in state["state"].items()}
    return [
        {"state": {i: parts[k] for i, parts in entries.items()}, "param_groups": state["param_groups"]}
        for k in range(slots)
    ]


def _stack_optimizer(states: list[dict[str, Any]]) -> dict[str, Any]:
    merged = {i: stack_states([s["state"][i] for s in states]) for i in states[0]["state"]}
    return {"state": merged, "param_groups": states[0]["param_groups"]}


def graphed_trainer(
    *, config: TrainConfig, state: TrainingState, loader: TensorLoader, seeds: tuple[int, ...], device: torch.device
) -> GraphedTrainer | None:
    """The captured-graph training step on CUDA (None elsewhere, or when the recipe or config rules it out)."""
    if device.type != "cuda" or not config.cuda_graph or config.compile or config.optimizer != "sgd":
        return None
    if config.precision != "fp32":  # the graph captures the float32 step
        return None
    if config.teachers and config.teacher_view == "clean":  # the graph asks the teachers of its own batch
        return None
    if config.attention:  # the graph's step has no taps on the blocks' maps
        return None
    return GraphedTrainer(config, state, loader, seeds)


def _epoch_line(h: HistoryRow, epochs: int) -> str:
    parts = [f"epoch {h['epoch']:>2}/{epochs}", f"loss {h['train_loss']:.4f}", f"train {h['train_acc']:.2f}%"]
    if h["val_acc"] is not None:
        parts.append(f"val {h['val_acc']:.2f}%")
    if h["test_acc"] is not None:
        parts.append(f"test {h['test_acc']:.2f}%")
    parts += [f"lr {h['lr']:.4g}", f"{h['seconds']:.1f}s"]
    return "  ".join(parts)
