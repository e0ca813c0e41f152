"""The public API: what the notebook, the README and the command line do, one function each, importable from
``mnistlab`` itself (``mnistlab.fit``, ``mnistlab.evaluate``, ...). Each takes plain values (a model's name or
class, a run folder, image files) and gives back data (a run read back, an evaluation, predictions); ``cli``
prints what these return.

- ``fit``: train a model (one seed, several stacked, or resume a folder) and get its run back.
- ``load_run``: a finished run read back: config, history, summary, ``.model()``.
- ``evaluate``: a run's (or checkpoint's) accuracy, per-digit accuracy and confusion on the 10,000 test images.
- ``predict``: read digits from image files or 28x28 arrays.
- ``compare``: finished runs side by side as a Markdown table.
- ``analyze``: a model's layers: shapes, receptive field, jump, parameters, MACs.
- ``plot_curves``: a run's loss and accuracy per epoch, as a PNG.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mnistlab.core.config import Augment, TrainConfig, check_seeds
from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import (
    atomic_write_all,
    atomic_write_json,
    check_writable,
    json_text,
    remove_litter,
    sha256_file,
)
from mnistlab.core.rundir import (
    CONFIG,
    HISTORY,
    LAST,
    check_folder,
    check_run_dir,
    default_run_dir,
    read_history,
    read_json,
    refuse_existing_run,
    remove_run_files,
    run_status,
)
from mnistlab.data.mnist import load_mnist
from mnistlab.jobs.runner import run_all, settle
from mnistlab.models import config_for, load_checkpoint
from mnistlab.models.external import model_card
from mnistlab.tools import plots
from mnistlab.tools.analysis import analyze
from mnistlab.tools.compare import write as compare_markdown
from mnistlab.tools.evaluation import EvalResult, evaluate_checkpoint
from mnistlab.tools.predict import Prediction, predict_arrays, predict_files, to_mnist
from mnistlab.tools.runs import RecordedRun, find_runs, load_run
from mnistlab.training.engine import fit_group, recipe_unstackable

__all__ = ["analyze", "compare", "evaluate", "fit", "load_run", "plot_curves", "predict"]

RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("model", "output_dir"))


def fit(
    model: Any = "model8",
    *,
    seeds: Sequence[int] | None = None,
    resume: str | Path | None = None,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    after_epoch: Callable[[list[TrainConfig]], Any] | None = None,
    data: Any = None,
    **recipe: Any,
) -> Any:
    """Train ``model`` with its own recipe (any field changed by a keyword) into ``output_dir``; the finished run.

    ``model``: a registered name (``mnistlab models`` lists them), a file ``net.py:Builder``, a layer spec
    ``spec.json``, or a ``nn.Module`` class or a function that builds one (defined in a notebook too).
    ``seeds=[1, 2, 3]`` trains those seeds as one stacked network (or one after another where the recipe cannot
    stack), into ``output_dir/seed<k>``, and gives a list of runs. ``resume=FOLDER`` continues the run (or the
    folder of seeds) there, with its own config; a finished one is said to be finished and read back.
    ``output_dir``: default ``runs/<model>``; a finished run there is refused unless ``overwrite=True`` (which
    deletes that run's own files only). ``progress``: bars; ``log``: where each epoch's line goes;
    ``after_epoch(configs)``: a hook per epoch for a group (TensorBoard); ``data``: ``((train_images,
    train_labels), (test_images, test_labels))`` uint8 28x28 arrays to train on instead of MNIST.

    Recipe fields (each defaults to the model's recipe): ``epochs``, ``batch_size``, ``optimizer`` (sgd, adam, adamw),
    ``lr`` (onecycle: the peak), ``momentum``, ``nesterov``, ``weight_decay``, ``scheduler`` (onecycle, step,
    plateau, none; one-cycle reads ``pct_start``, ``div_factor`` and ``final_div_factor``, a step schedule
    ``step_size`` and ``gamma``, a plateau ``gamma`` and ``patience``), ``label_smoothing``, ``dropout``, ``ema``
    (a moving average's decay), ``augment`` (a dict: ``rotation`` and ``shear`` degrees, ``translate`` and ``scale``
    fractions), ``teachers`` (run folders or checkpoints to learn from), ``distill_alpha``, ``distill_temperature``,
    ``teacher_view`` (augmented, clean), ``attention`` (attention transfer's weight), ``init`` (a trained network to
    start from, cut to the model's widths); run fields: ``seed``, ``limit`` (only the first N images of each split: a
    quick try), ``val_size`` (images held out of training for selection), ``test_every_epoch``, ``threads``,
    ``device`` (auto, cpu, cuda, mps), ``precision`` (fp32, bf16, auto), ``data_dir``.

    A ``TrainConfig`` (``mnistlab.config_for(...)``) as ``model`` is the engine's form: it trains that config
    exactly (keywords go to ``fit_group``: ``data``, ``stop_after``) and gives its summary dict.

    >>> run = fit("model8", epochs=1, limit=2000, output_dir="runs/try")   # doctest: +SKIP
    >>> run.summary["params"], run.last3                                     # doctest: +SKIP
    """
    if isinstance(model, TrainConfig):
        return fit_group([model], progress=progress, log=log, data=data, **recipe)[0]
    if resume is not None:
        if seeds is not None or recipe or output_dir is not None:
            raise MnistlabError("resume= continues a run with its own config: give it alone (no seeds or recipe)")
        return _resume(Path(resume), progress=progress, log=log, after_epoch=after_epoch, data=data)
    unknown = sorted(set(recipe) - set(RECIPE_FIELDS))
    if unknown:
        raise MnistlabError(f"fit() has no field {', '.join(unknown)}; the fields are: {', '.join(RECIPE_FIELDS)}")
    card = model_card(model)
    recipe = _with_augment(card, recipe)
    how = {"progress": progress, "log": log, "after_epoch": after_epoch, "data": data}
    if seeds is None:
        return _fit_one(
            config_for(card, output_dir=str(output_dir or default_run_dir(card.name)), **recipe), overwrite, how
        )
    return _fit_group(_seed_configs(card, check_seeds(seeds, str(list(seeds))), output_dir, recipe), overwrite, how)


def _fit_one(config: TrainConfig, overwrite: bool, how: dict[str, Any]) -> RecordedRun:
    """One new run (``how``: progress, log, after_epoch, data)."""
    _clear_previous_run(Path(config.output_dir), overwrite, how["log"])
    how["log"](f"training {config.model} ({config.epochs} epochs, seed {config.seed}) into {config.output_dir}")
    events = how["after_epoch"]([config]) if how["after_epoch"] is not None else None
    fit_group([config], progress=how["progress"], log=how["log"], after_epoch=events, data=how["data"])
    return load_run(config.output_dir)


def _fit_group(configs: list[TrainConfig], overwrite: bool, how: dict[str, Any]) -> list[RecordedRun]:
    """New runs of one recipe's seeds, stacked where the recipe allows (the runner's path), else one by one."""
    for config in configs:
        _clear_previous_run(Path(config.output_dir), overwrite, how["log"])
    # the group is known from the first byte it writes: every seed's config.json, as one write, before any trains
    # (a group whose seeds train one after another, killed in its first, resumes to its last seed)
    atomic_write_all([(Path(c.output_dir) / CONFIG, _text_writer(json_text(c.to_dict()))) for c in configs], mode="w")
    reason = recipe_unstackable(configs[0]) if len(configs) > 1 else None
    order = f"one after another ({reason})" if reason else "stacked"
    seeds = ", ".join(str(c.seed) for c in configs)
    how["log"](
        f"training {configs[0].model} on seeds {seeds}, {order}, into {Path(configs[0].output_dir).parent}/seed<k>"
    )
    run_all(configs, stack=True, **how)
    return [load_run(c.output_dir) for c in configs]


def _seed_configs(
    card: Any, seeds: tuple[int, ...], output_dir: str | Path | None, recipe: dict[str, Any]
) -> list[TrainConfig]:
    """A config per seed, each in ``<output_dir>/seed<k>``; a folder holding another model's seeds is refused."""
    base = Path(output_dir or default_run_dir(card.name))
    configs = [config_for(card, **{**recipe, "seed": s, "output_dir": str(base / f"seed{s}")}) for s in seeds]
    others = sorted(
        f.parent.name
        for f in base.glob(f"seed*/{CONFIG}")
        if f.parent.name not in {f"seed{s}" for s in seeds} and read_json(f).get("model") != configs[0].model
    )
    if others:  # a resume of the folder would take them as one group
        raise MnistlabError(
            f"{base} holds runs of another model ({', '.join(others)}); a folder of seeds holds one model's: choose "
            "another output folder"
        )
    return configs


def _resume(
    folder: Path,
    *,
    progress: bool,
    log: Callable[[str], None],
    after_epoch: Callable[[list[TrainConfig]], Any] | None,
    data: Any,
) -> RecordedRun | list[RecordedRun]:
    """Continue the run in ``folder`` in place, with its own config; a folder of seeds trained together resumes
    as the group it was (the runner's path, as ``reproduce``: a run that saved no epoch starts again)."""
    check_folder(folder, "the run folder")
    for seed_folder in sorted(p for p in folder.glob("seed*") if p.is_dir()):
        settle(str(seed_folder))  # a group's first write cut short is completed first: every seed is found
    if (folder / CONFIG).is_file():
        folders = [folder]
    else:
        folders = sorted((p.parent for p in folder.glob(f"seed*/{CONFIG}")), key=lambda p: (len(p.name), p.name))
        if not folders:
            raise MnistlabError(
                f"{folder} holds no config.json (nor seed*/config.json): no run had started there; train it again"
            )
    configs = [TrainConfig.read(f) for f in folders]
    if all(run_status(f) == "done" for f in folders):
        log(f"{folder} is finished; nothing to resume (its summary is left as it was)")
    run_all(configs, stack=True, progress=progress, log=log, after_epoch=after_epoch, data=data)
    runs = [load_run(f) for f in folders]
    return runs[0] if folders == [folder] else runs


def _text_writer(text: str) -> Callable[[Any], None]:
    return lambda f: f.write(text)


def _clear_previous_run(out: Path, replace: bool, log: Callable[[str], None]) -> None:
    """Refuse to train over a run in ``out`` unless asked to replace it; then delete the run's own files only
    (anything else the folder holds stays)."""
    check_run_dir(out)
    if run_status(out) == "todo":
        return
    if not replace:
        refuse_existing_run(out, "pass overwrite=True (--overwrite) to replace it")
    removed = remove_run_files(out)
    log(f"removed the previous run's {len(removed)} files from {out}")


def _with_augment(card: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    """``augment`` given as a dict of ranges: the model's own ranges with those changed."""
    given = recipe.get("augment")
    if not isinstance(given, dict):
        return recipe
    known = {f.name for f in dataclasses.fields(Augment)}
    if not set(given) <= known:
        raise MnistlabError(
            f"augment has no range {', '.join(sorted(set(given) - known))}; the ranges are: {', '.join(sorted(known))}"
        )
    return {**recipe, "augment": dataclasses.replace(card.recipe.augment, **given)}


# ------------------------------------------------------------------------------------------- after training


def evaluate(
    run: str | Path | RecordedRun, *, output_dir: str | Path | None = None, data_dir: str | Path | None = None
) -> EvalResult:
    """Accuracy on the official 10,000 test images of a run (its ``last.pt``) or a checkpoint file:
    ``.accuracy`` (percent), ``.loss``, ``.per_class`` (percent per digit), ``.confusion`` (10x10 counts, row =
    true digit), ``.predictions``, ``.labels``, ``.mistakes`` (indices); ``print`` shows all three tables. With
    ``output_dir``, also ``confusion.png``, ``misclassified.png``, ``evaluation.json`` and the run's
    ``curves.png`` there (``.written``). ``data_dir``: the MNIST cache.

    >>> result = evaluate("runs/model8", output_dir="runs/model8")   # doctest: +SKIP
    >>> result.accuracy, len(result.mistakes), result.written         # doctest: +SKIP
    """
    checkpoint = _checkpoint_of(run)
    if output_dir is not None:
        check_writable(Path(output_dir), "the evaluation's figures")  # before the work, not after it
    result = evaluate_checkpoint(checkpoint, data_dir)
    if output_dir is None:
        return result
    out = Path(output_dir)
    # named after the checkpoint: evaluating best.pt never overwrites what last.pt's evaluation wrote
    prefix = "" if checkpoint.name == LAST else f"{checkpoint.stem}-"
    names = tuple(f"{prefix}{n}" for n in ("confusion.png", "misclassified.png", "evaluation.json", "curves.png"))
    remove_litter(out, names)  # what an evaluation killed mid-write left
    described = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint), **result.to_dict()}
    images, _ = load_mnist("test", data_dir)
    written = [
        plots.plot_confusion(result.confusion, out / f"{prefix}confusion.png"),
        plots.plot_misclassified(images, result.labels, result.predictions, out / f"{prefix}misclassified.png"),
        atomic_write_json(out / f"{prefix}evaluation.json", described),
    ]
    if (checkpoint.parent / HISTORY).is_file():
        written.append(plots.plot_curves(read_history(checkpoint.parent), out / "curves.png"))
    return dataclasses.replace(result, written=tuple(written))


def predict(model: str | Path | RecordedRun | nn.Module, images: Sequence[str | Path | np.ndarray]) -> list[Prediction]:
    """The digit in each image: files (PNG, JPEG, ...; any size, dark on light or light on dark, centred as
    MNIST's digits are) or arrays (28x28, values 0-1, white digit on black as MNIST's). ``model``: a run folder,
    a checkpoint, a run read back, or a network. Each ``Prediction`` has ``.digit``, ``.probability`` and all ten
    ``.probabilities``; a file that holds no digit is one line naming it.

    >>> [p.digit for p in predict("runs/model8", ["seven.png"])]    # doctest: +SKIP
    """
    network = model if isinstance(model, nn.Module) else load_checkpoint(_checkpoint_of(model))
    if all(isinstance(i, np.ndarray) for i in images):
        digits = [to_mnist(np.asarray(i, dtype=np.float32)) if np.shape(i) != (28, 28) else i for i in images]
        rows = predict_arrays(network, [np.asarray(d, dtype=np.float32) for d in digits])
        return [Prediction(f"array {k}", d, p, ps) for k, (d, p, ps) in enumerate(rows)]
    paths = [str(i) for i in images]
    found, failed = predict_files(network, paths)
    if failed:
        path, why = failed[0]
        raise MnistlabError(why if path in why else f"{path}: {why}")
    return found


def compare(*runs: str | Path, output: str | Path | None = None) -> str:
    """Finished runs side by side, as a Markdown table: parameters, MACs, receptive field, and test accuracy in
    the last epochs over each folder's seeds (mean, min, held on k of n). Each argument is a run folder or a
    folder holding runs at any depth. With ``output``, also ``compare.md`` and two figures there.

    >>> print(compare("runs/model8", "runs/mine"))   # doctest: +SKIP
    """
    if not runs:
        raise MnistlabError("compare() needs at least one run folder")
    return compare_markdown(find_runs([Path(r) for r in runs]), None if output is None else Path(output))


def plot_curves(run: str | Path | RecordedRun, path: str | Path | None = None) -> Path:
    """A run's loss and accuracy per epoch (training, validation, test), as a PNG: ``path``, default
    ``curves.png`` in the run's folder; returns where it went.

    >>> plot_curves("runs/model8")                     # doctest: +SKIP
    """
    recorded = run if isinstance(run, RecordedRun) else load_run(run)
    target = Path(path) if path is not None else recorded.path / "curves.png"
    return plots.plot_curves(recorded.history, target, title=recorded.config.get("model", ""))


def _checkpoint_of(run: str | Path | RecordedRun) -> Path:
    """The checkpoint a run folder (its ``last.pt``), a run read back or a ``.pt`` path names."""
    if isinstance(run, RecordedRun):
        return run.path / LAST
    path = Path(run)
    if path.is_dir():
        if not (path / LAST).is_file():
            raise MnistlabError(f"{path} holds no {LAST}: train a run there first (mnistlab.fit)")
        return path / LAST
    if not path.is_file():
        raise MnistlabError(f"{path} does not exist: give a run folder or a .pt checkpoint")
    return path
