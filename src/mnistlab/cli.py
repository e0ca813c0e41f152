"""The command line: ``mnistlab train | evaluate | predict | export | summary | compare | models | data | search |
register | demo``, and the commands installed packages add (the repository's lab: ``report``, ``reproduce``).

User errors (bad options, missing or foreign files) end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.metadata
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from mnistlab.core.config import (
    NO_OPTION,
    Augment,
    SearchSettings,
    TrainConfig,
    check_seeds,
    field_specs,
    read_recipe_changes,
)
from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import check_writable
from mnistlab.core.rundir import (
    FINALS,
    LAST_MEAN,
    LAST_MIN,
    LAST_TESTS,
    RUNS,
    Summary,
    check_folder,
    default_run_dir,
)

OWN_DEFAULT = object()  # field_option's default: the field's own


def field_option(owner: Any, name: str, help: str | None = None, default: Any = None, **extra: Any) -> Any:
    """An option for the field ``name`` of the dataclass ``owner`` (a run's config, a search's settings): its flag,
    type, choices and (where the field has one) help come from the field, so that no command retypes them; the
    default is the command's (None: each run's own value; ``OWN_DEFAULT``: the field's)."""
    (f,) = [f for f in dataclasses.fields(owner) if f.name == name]
    spec = field_specs(owner)[name]
    kind: Any = spec.kind if spec.kind in (bool, int, float) else str
    if spec.choices:
        kind = click.Choice(spec.also + spec.choices)
    kind = extra.pop("type", kind)  # a path is a str the command reads as one
    if default is OWN_DEFAULT:
        default = None if f.default is dataclasses.MISSING else f.default
        extra.setdefault("required", f.default is dataclasses.MISSING)
    show = default is not None and not isinstance(default, bool)
    flag = "--" + name.replace("_", "-")
    text = help if help is not None else f.metadata.get("help")
    return click.option(flag, name, type=kind, default=default, show_default=show, help=text, **extra)


def _config_options(command: Any) -> Any:
    """The recipe and run fields as options of ``train``, and the augmentation's ranges (``--rotation``, ...):
    built from the dataclasses and their roles, not retyped."""
    for f in reversed(dataclasses.fields(Augment)):
        command = click.option(
            "--" + f.name, f.name, type=float, default=None, help=f"augmentation: {f.metadata['help']}"
        )(command)
    for f in reversed(dataclasses.fields(TrainConfig)):
        if f.metadata.get(NO_OPTION):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            command = click.option(f"{flag}/--no-{f.name.replace('_', '-')}", f.name, default=None)(command)
        else:
            command = field_option(TrainConfig, f.name, "overrides the model's recipe or the run default")(command)
    return command


# the options several commands share, declared once
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="MNIST cache [$MNISTLAB_DATA or the user cache folder: ~/.cache/mnistlab on Linux]",
)
quiet_option = click.option("--quiet", is_flag=True, help="no progress bars")


def results_option(default: str, help: str | None = None) -> Any:
    """``--results``: where recorded runs (and a search's study) are."""
    return click.option("--results", type=click.Path(), default=default, show_default=True, help=help)


def workers_option(help: str) -> Any:
    """``--workers``: how many jobs at once."""
    return click.option("--workers", type=int, default=1, show_default=True, help=help)


class Shell(click.Group):
    """``mnistlab``'s commands; the lab's, asked for where the lab is not installed, are one line saying where
    they are."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in LAB_COMMANDS:
            raise MnistlabError(
                f"`mnistlab {name}` is the lab's command, not the package's: run it in a clone of the repository "
                "(`make setup` installs its lab/)"
            )
        return command


@click.group(cls=Shell, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mnistlab")
def cli() -> None:
    """Design, train and analyse tiny CNNs on MNIST."""


# ------------------------------------------------------------------------------------------------- train


@cli.command()
@click.option(
    "--model",
    "model_name",
    default="model8",
    show_default=True,
    help="a registered name, FILE.py:BUILDER, MODULE:BUILDER or a layer spec SPEC.json (README: Design your own model)",
)
@click.option(
    "--recipe", "recipe_file", type=click.Path(), default=None, help="a JSON object of recipe fields to change"
)
@click.option("--output-dir", type=click.Path(), default=None, help="run directory [runs/<model>]")
@data_dir_option
@click.option("--resume", "resume_dir", type=click.Path(), default=None, help="continue the run in this directory")
@click.option("--dry-run", is_flag=True, help="a few batches of one epoch, for smoke tests")
@click.option("--overwrite", is_flag=True, help="replace a finished run in --output-dir")
@quiet_option
@click.option(
    "--teacher",
    "teachers",
    multiple=True,
    type=click.Path(),
    help="learn from this checkpoint, run folder or folder of runs too (repeatable; see --distill-alpha)",
)
@click.option(
    "--tensorboard",
    "tensorboard_dir",
    type=click.Path(),
    default=None,
    help="also write each epoch's losses, accuracies and rate as TensorBoard events here (pip install 'mnistlab[tensorboard]')",
)
@click.option(
    "--seeds",
    "seed_list",
    default=None,
    help="several seeds as one stacked network, e.g. 1,2,3,4: runs <output-dir>/seed<k>",
)
@field_option(
    TrainConfig,
    "precision",
    "the forward pass's arithmetic: auto is bf16 on a CPU that computes it natively (AVX-512 BF16, AMX), "
    "fp32 elsewhere (bf16 held Model 8 on 5 of 6 seeds where fp32 held 6: benchmarks/NOTES.md); config.json "
    "records which",
    default="fp32",
)
@_config_options
def train(
    model_name: str,
    recipe_file: str | None,
    output_dir: str | None,
    data_dir: str | None,
    resume_dir: str | None,
    dry_run: bool,
    overwrite: bool,
    quiet: bool,
    seed_list: str | None,
    tensorboard_dir: str | None,
    teachers: tuple[str, ...],
    precision: str,
    **fields: Any,
) -> None:
    """Train a model; write config, history, summary and checkpoints to its run directory."""
    from mnistlab import api
    from mnistlab.models import resolve

    if seed_list is not None and (resume_dir is not None or dry_run):
        raise MnistlabError("--seeds trains new runs: it does not combine with --resume or --dry-run")
    events = None if tensorboard_dir is None else (lambda group: _events(tensorboard_dir, group))
    common = {"progress": progress_bars(quiet), "log": click.echo, "after_epoch": events}
    if resume_dir is not None:  # a resumed run's model and recipe come from its own folder
        stopped_hint(f"`mnistlab train --resume {resume_dir}`")
        done = api.fit(resume=resume_dir, **common)
        for run in done if isinstance(done, list) else [done]:
            _done(run)
        return
    card = resolve(model_name)
    ranges = {f.name: fields.pop(f.name) for f in dataclasses.fields(Augment)}
    changes = {**(read_recipe_changes(recipe_file) if recipe_file else {}), **_given(fields), "precision": precision}
    if teachers:
        changes["teachers"] = teachers
    if any(v is not None for v in ranges.values()):
        changes["augment"] = {k: v for k, v in ranges.items() if v is not None}
    if seed_list is not None:
        seeds = parse_seeds(seed_list)
        base = output_dir or default_run_dir(card.name)
        stopped_hint(f"`mnistlab train --resume {base}`")
        runs = api.fit(card, seeds=seeds, output_dir=base, overwrite=overwrite, data_dir=data_dir, **common, **changes)
        for run in runs:
            click.echo(f"seed {run.summary['seed']}: {scores_line(run.summary)}; results in {run.path}")
        return
    if dry_run:  # a few batches of one epoch in a folder of its own, replaced by the next dry run
        scratch = output_dir is None
        output_dir = output_dir or default_run_dir(f"{card.name}-dry-run")
        val_size = changes.get("val_size", TrainConfig.__dataclass_fields__["val_size"].default)
        changes.update(epochs=1, limit=changes.get("limit") or 512, val_size=min(val_size, 256))
        overwrite = overwrite or scratch
    out = output_dir or default_run_dir(card.name)
    stopped_hint(f"`mnistlab train --resume {out}`")
    run = api.fit(card, output_dir=out, overwrite=overwrite, data_dir=data_dir, **common, **changes)
    _done(run)


def _done(run: Any) -> None:
    summary = run.summary
    click.echo(
        f"done in {summary['wall_seconds']:.1f}s: params {summary['params']:,}, {scores_line(summary)}; "
        f"results in {run.path}"
    )


def _events(folder: str | None, configs: list[TrainConfig]) -> Any:
    """``train --tensorboard``'s per-epoch writer (None without it)."""
    if folder is None:
        return None
    from mnistlab.training.events import tensorboard_logger

    return tensorboard_logger(folder, configs)


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line (None: not given)."""
    return {k: v for k, v in fields.items() if v is not None}


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise MnistlabError(f"seeds must be comma-separated integers, got {text!r}") from None
    return check_seeds(seeds, repr(text))


def progress_bars(quiet: bool) -> bool:
    """Progress bars only on a terminal: a log file gets one line per epoch, not thousands of updates."""
    return not quiet and sys.stderr.isatty()


TEST_IMAGES = 10_000  # MNIST's test set: a run on fewer (--limit) says so


def scores_line(summary: Summary) -> str:
    """The run's headline: test accuracy in its last epochs, or validation when test was never evaluated."""
    tail = summary[LAST_TESTS]
    if tail:
        tested = summary.get("data", {}).get("test", TEST_IMAGES)
        subset = f" on {tested:,} of {TEST_IMAGES:,} test images" if tested < TEST_IMAGES else ""
        return (
            f"test accuracy in the last {len(tail)} epochs {', '.join(f'{a:.2f}' for a in tail)}{subset} "
            f"(mean {summary[LAST_MEAN]:.2f}, min {summary[LAST_MIN]:.2f})"
        )
    value = summary["last_val_acc"]
    shown = "-" if value is None else f"{value:.2f}"
    return f"validation accuracy at the last epoch {shown} (test not evaluated)"


# ---------------------------------------------------------------------------------------------- evaluate


@cli.command()
@click.option("--checkpoint", type=click.Path(), required=True, help="a .pt file written by train")
@click.option("--output-dir", type=click.Path(), default=None, help="where to write the PNGs [the checkpoint's folder]")
@data_dir_option
def evaluate(checkpoint: str, output_dir: str | None, data_dir: str | None) -> None:
    """Test accuracy, per-class accuracy and confusion matrix; curves, confusion and mistakes as PNGs."""
    from mnistlab import api

    result = api.evaluate(checkpoint, output_dir=output_dir or Path(checkpoint).parent, data_dir=data_dir)
    click.echo(str(result))
    click.echo("wrote " + ", ".join(str(p) for p in result.written))


# ----------------------------------------------------------------------------------------------- predict


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--checkpoint", type=click.Path(), default=None, help="a .pt file written by train [the shipped Model 8, seed 1]"
)
@click.option("--top", type=click.IntRange(1, 10), default=1, show_default=True, help="the likeliest N digits")
def predict(images: tuple[str, ...], checkpoint: str | None, top: int) -> None:
    """Read the digit in each image (PNG, JPEG, ...; any size, either polarity). Each is made an MNIST digit first:
    grey, a transparent background laid on white, dark ink on light paper inverted to white on black, the ink
    fitted to 20x20 and centred by its mass in 28x28."""
    from mnistlab.models.checkpoint import SHIPPED, load_checkpoint
    from mnistlab.tools.predict import predict_files

    predictions, failed = predict_files(load_checkpoint(checkpoint or SHIPPED), list(images))
    for p in predictions:
        ranked = sorted(range(len(p.probabilities)), key=lambda d: -p.probabilities[d])[:top]
        click.echo(f"{p.path}: " + ", ".join(f"{d} (p={p.probabilities[d]:.3f})" for d in ranked))
    for _path, reason in failed:
        click.echo(f"error: {reason}", err=True)
    if failed:
        sys.exit(2)


# ------------------------------------------------------------------------------------------------ export


@cli.command()
@click.option("--checkpoint", type=click.Path(), required=True)
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--output", type=click.Path(), default=None, help="[the checkpoint with .onnx]")
@click.option(
    "--tolerance",
    type=float,
    default=1e-3,
    show_default=True,
    help="the largest difference from PyTorch's log-probabilities allowed, relative to 1 or more (every prediction "
    "must agree as well)",
)
def export(checkpoint: str, fmt: str, output: str | None, tolerance: float) -> None:
    """Export a checkpoint (ONNX, checked against PyTorch in onnxruntime)."""
    from mnistlab.tools.export import export_onnx

    target = Path(output) if output else Path(checkpoint).with_suffix(".onnx")
    check_writable(target.parent, "the ONNX file")  # before the conversion, not after it
    difference = export_onnx(checkpoint, target, tolerance)
    click.echo(
        f"wrote {target} (onnxruntime against torch: every prediction the same, relative difference {difference:.2e})"
    )


# ----------------------------------------------------------------------------------------------- summary


@cli.command()
@click.argument("model_name", metavar="MODEL")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json"]), default="table", show_default=True)
def summary(model_name: str, fmt: str) -> None:
    """Per-layer shapes, receptive field, jump, parameters and MACs of a model (registered, or MODEL as
    FILE.py:BUILDER, MODULE:BUILDER or SPEC.json)."""
    from mnistlab.models import resolve
    from mnistlab.tools.analysis import MAC_MEANING, AnalysisError, analyze, shape_rows, shapes_and_params

    card = resolve(model_name)
    name, model = card.name, card.build()
    try:
        result = analyze(model, name=name)
    except AnalysisError as exc:  # still the shapes, parameters and MACs, and why the field is missing
        if fmt == "json":  # the format asked for, whatever the model: every layer's row, the field null
            rows = shape_rows(model)
            params = sum(p.numel() for p in model.parameters())
            macs = sum(row["macs"] or 0 for row in rows)
            described = {"model": name, "params": params, "macs": macs, "receptive_field": None, "why": str(exc)}
            click.echo(json.dumps({**described, "rows": rows}, indent=2))
            return
        table = shapes_and_params(model, markdown=fmt == "markdown")
        click.echo(f"{name}: receptive field not computed ({exc})\n\n{table}", nl=False)
        click.echo(MAC_MEANING)
        return
    click.echo({"table": result.render_table, "markdown": result.render_markdown, "json": result.to_json}[fmt]())
    if fmt != "json":
        click.echo(MAC_MEANING)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN_OR_FOLDER...")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="write compare.md and the figures (PNG) here; without it, Markdown to stdout",
)
@click.option(
    "--skip-damaged", is_flag=True, help="leave out a run whose files are damaged, saying so [stop at it, in one line]"
)
def compare(paths: tuple[Path, ...], output: Path | None, skip_damaged: bool) -> None:
    """Compare runs: a table (params, MACs, field, last epochs over seeds, the 99.4% verdict) and, with
    --output, test accuracy per epoch with the seeds as a band and accuracy against parameters."""
    from mnistlab.tools.compare import write
    from mnistlab.tools.runs import find_runs

    if output is not None:
        check_folder(output, "--output")
    skipped = (lambda line: click.echo(line, err=True)) if skip_damaged else None
    text = write(find_runs(list(paths), skipped), output)
    click.echo(text if output is None else f"wrote {output / 'compare.md'} and its figures")


@cli.command(name="models")
@click.option(
    "--variants", is_flag=True, help="also each architecture's trained variants (ARCH.TAG: its recipe or teachers)"
)
@click.option(
    "--all", "show_all", is_flag=True, help="also the search's family and, in the repository, the lab's other models"
)
def models_(variants: bool, show_all: bool) -> None:
    """List the architectures: the reference's eight, yours (and in a clone of the repository, the lab's), with their
    parameter counts; --variants adds their trained variants, each named ARCH.TAG (another recipe or teachers; train
    it by that name)."""
    from mnistlab.models import get_card, list_models
    from mnistlab.models.registry import variants_of

    def shown(name: str) -> bool:  # listed, or the architecture of a listed variant
        return show_all or get_card(name).listed or any(get_card(v).listed for v in variants_of(name))

    rows = []
    for name in list_models(variants=False):
        if not shown(name):
            continue
        tags = [v for v in variants_of(name) if show_all or get_card(v).listed]
        listed = variants or show_all
        named = "" if listed or not tags else f"variants: {', '.join(get_card(v).tag for v in tags)}"
        rows.append(_model_row(name, get_card(name), "", named))
        if listed:
            rows += [_model_row(v, get_card(v), "  ") for v in tags]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, title, params, note in rows:
        line = f"{name:<{width[0]}}  {title:<{width[1]}}  {params:>{width[2]}} params"
        click.echo(f"{line}  ({note})" if note else line)
    hidden = len(list_models()) - len(rows)
    if hidden:
        more = "--variants: the trained variants; " if not variants else ""
        click.echo(f"({hidden} more: {more}--all: the search's family and the models not listed)")


def _model_row(name: str, card: Any, indent: str, more: str = "") -> tuple[str, str, str, str]:
    """One line of `mnistlab models`: the name to ask for, the title, the parameters and what the model is
    (``more``: its variants, when they are not listed under it)."""
    if card.outside:
        note = f"yours: {card.source}" if card.source else "from an installed package"
    else:
        note = card.note
    if card.architecture:
        note = _join(note, f"recorded as {name}")
    return indent + card.tagged, card.title, f"{card.params:,}", _join(note, more)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# -------------------------------------------------------------------------------------------------- data


@cli.group()
def data() -> None:
    """The MNIST cache."""


@data.command()
@data_dir_option
def fetch(data_dir: str | None) -> None:
    """Fetch and verify MNIST into the cache; say where each file came from."""
    from mnistlab.data.mnist import fetch as fetch_files
    from mnistlab.data.mnist import resolve_data_dir

    click.echo(f"data directory: {resolve_data_dir(data_dir)}")
    for result in fetch_files(data_dir, log=click.echo):
        click.echo(f"{result.path.name}: {result.source} (sha256 verified)")


# ------------------------------------------------------------------------------------------------- search


@cli.command()
@field_option(SearchSettings, "max_params", default=OWN_DEFAULT)
@click.option("--trials", type=int, default=20, show_default=True, help="trials to add to the study")
@click.option("--seeds", default="1,2,3,4", show_default=True, help="each trial's seeds, trained stacked")
@field_option(SearchSettings, "epochs", default=OWN_DEFAULT)
@field_option(SearchSettings, "limit", default=OWN_DEFAULT)
@click.option("--name", default=None, help="the study's name [record-<max-params>]")
@click.option("--storage", default=None, help="an SQLAlchemy URL [sqlite:///<results>/search/<name>.db]")
@click.option("--space", "space_file", type=click.Path(), default=None, help="a JSON file narrowing the space")
@field_option(SearchSettings, "results", default=OWN_DEFAULT, type=click.Path())
@field_option(SearchSettings, "device", default=OWN_DEFAULT)
@field_option(SearchSettings, "threads", default=OWN_DEFAULT)
@workers_option("trials at once, each worker in its own process (or Ray task) sharing the study")
@click.option("--ray", "use_ray", is_flag=True, help="the workers as Ray tasks (a local cluster)")
@click.option(
    "--ray-address",
    default=None,
    metavar="HOST:PORT",
    help="join this Ray cluster (implies --ray; give a --storage every node reaches)",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="seconds after which a worker starts no new trial (a lent machine's time)",
)
@click.option(
    "--deadline",
    type=float,
    default=None,
    help="seconds after which the trials still training stop (failed, marked 'stopped') and no trial "
    "starts: a lent machine's end",
)
@click.option(
    "--teacher",
    "teachers",
    multiple=True,
    type=click.Path(),
    help="the study's teachers (repeatable; trained without the validation images): each trial draws "
    "whether to learn from them, and with what share and temperature",
)
def search(
    max_params: int,
    trials: int,
    seeds: str,
    epochs: int,
    limit: int | None,
    name: str | None,
    storage: str | None,
    space_file: str | None,
    results: str,
    device: str,
    threads: int,
    workers: int,
    use_ray: bool,
    ray_address: str | None,
    timeout: float | None,
    deadline: float | None,
    teachers: tuple[str, ...],
) -> None:
    """Search shapes and recipes under a parameter budget, scored on validation (worst seed); resumable."""
    _need_optuna()
    from mnistlab.jobs.search import Settings, Space, best_row, trial_rows
    from mnistlab.jobs.search import search as run_search
    from mnistlab.models.registry import teacher_files

    if trials < 1 or epochs < 1 or workers < 1:
        raise MnistlabError("--trials, --epochs and --workers must be at least 1")
    if deadline is not None and deadline <= 0:
        raise MnistlabError(f"--deadline is seconds from now, more than 0; got {deadline:g}")
    name = name or f"record-{max_params}"
    if storage is None:
        storage = _default_storage(results, name)
    space = Space.from_file(space_file) if space_file else Space()
    cluster = cluster_for(use_ray, ray_address)
    command = "mnistlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    stop_at = time.time() + deadline if deadline is not None else None
    settings = Settings(
        name=name,
        storage=storage,
        max_params=max_params,
        seeds=parse_seeds(seeds),
        epochs=epochs,
        limit=limit,
        results=results,
        device=device,
        threads=threads,
        command=command,
        stop_at=stop_at,
        teachers=teacher_files(teachers)[0] if teachers else (),
    )
    HINTS.stopped = "every finished trial is kept in the study: the same `mnistlab search` command adds the rest"
    study = run_search(settings, space, trials, log=click.echo, workers=workers, cluster=cluster, timeout=timeout)
    best = best_row(trial_rows(study))
    if best:
        click.echo(
            f"best: trial {best['trial']}, {best['params']:,} parameters, worst-seed validation mean "
            f"{best['score']:.2f}, {best['arch']}"
        )


# ----------------------------------------------------------------------------------------------- demo
@cli.command()
@click.option(
    "--checkpoint",
    type=click.Path(),
    default=None,
    help="a checkpoint to show first [the final runs under --results, Model 8 seed 1 first; without any, the "
    "Model 8 the package ships]",
)
@results_option(FINALS, "where the final runs to show are (a clone of the repository: the lab's)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="0: a free port")
def demo(checkpoint: str | None, results: str, host: str, port: int) -> None:
    """Serve a page: draw a digit, see what the model is given, its prediction, and each layer's view."""
    from mnistlab.models import get_card, list_models
    from mnistlab.models.checkpoint import SHIPPED
    from mnistlab.tools.demo import build, choices, free_port, launch, load

    # the picker: the final runs of the listed models (the lab's first, in a clone of the repository), then those of
    # models from outside the package; without any run under --results, the model the package ships
    models = [name for name in list_models() if get_card(name).listed and not get_card(name).outside]
    models += [name for name in list_models() if get_card(name).outside]
    if checkpoint is None and not choices(results, None, models):
        checkpoint = str(SHIPPED)
    if checkpoint is not None:
        load(checkpoint)  # a checkpoint that does not load stops here, in one line
    app = build(results, checkpoint, models)
    port = port or free_port(host)
    click.echo(f"serving on http://{host}:{port} (Ctrl-C stops)", nl=True)
    launch(app, host, port)


def _need_optuna() -> None:
    from mnistlab.core.errors import optional

    optional("optuna", "search", "mnistlab search")


def _default_storage(results: str, name: str) -> str:
    """A study's SQLite URL under ``<results>/search/``."""
    return f"sqlite:///{Path(results, 'search', name + '.db')}"


def cluster_for(use_ray: bool, address: str | None, **settings: Any) -> Any:
    """The Ray cluster to run on (``--ray``, or ``--ray-address``, which implies it), or None."""
    if not (use_ray or address):
        return None
    from mnistlab.jobs.distributed import Cluster

    return Cluster(address=address, **settings)


@cli.command()
@click.option("--study", "study_name", required=True, help="the search's name, e.g. record-3500")
@click.option("--trial", type=int, required=True, help="the finished trial to register")
@click.option("--name", required=True, help="the new model's name (lower case, e.g. found3k5)")
@click.option("--storage", default=None, help="the study's SQLAlchemy URL [sqlite:///<results>/search/<study>.db]")
@results_option(RUNS, "where the study is (search/<study>.db)")
def register(study_name: str, trial: int, name: str, storage: str | None, results: str) -> None:
    """Register a search trial as a model (layers and recipe as data) in your found.json ($MNISTLAB_FOUND, else
    $MNISTLAB_HOME, else your user data folder)."""
    _need_optuna()
    from mnistlab.jobs.search import open_existing, register_trial, storage_errors
    from mnistlab.models.found import user_found

    storage = storage or _default_storage(results, study_name)
    with storage_errors(storage):
        study = open_existing(study_name, storage)
        entry = register_trial(study, trial, name, user_found())
    click.echo(
        f"registered {name}: trial {trial} of {study_name}, {entry['params']:,} parameters, worst-seed "
        f"validation mean {entry['score']:.2f}; train it with `mnistlab train --model {name}`"
    )


COMMANDS = "mnistlab.commands"  # the entry-point group of commands installed packages add (the repository's lab)
LAB_COMMANDS = ("report", "reproduce")  # the lab's: a clone of the repository has them


def _add_installed_commands() -> None:
    """Add the commands installed packages offer (group ``mnistlab.commands``); one that fails to load is skipped
    with a line on stderr."""
    for entry in importlib.metadata.entry_points(group=COMMANDS):
        if entry.name in cli.commands:
            continue
        try:
            cli.add_command(entry.load(), entry.name)
        except Exception as exc:  # noqa: BLE001  an installed package's problem must not stop the others
            click.echo(f"warning: command {entry.name} from {entry.value} not loaded: {exc}", err=True)


def main() -> None:
    HINTS.__init__()  # each command says its own
    signal.signal(signal.SIGTERM, _terminated)  # `kill` ends a run as Ctrl-C does: its last epoch is kept
    try:
        cli.main(standalone_mode=False)
    except MnistlabError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a full or read-only disk, a folder not ours: whatever was written stays whole
        click.echo(f"error: {_disk_fault(exc)}", err=True)
        sys.exit(1)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        click.echo(f"stopped; {HINTS.stopped}", err=True)
        terminated = isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated)  # click wraps it in Abort
        sys.exit(143 if terminated else 130)  # the shell's codes for SIGTERM and SIGINT
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


def _disk_fault(exc: OSError) -> str:
    """A fault of the disk or of permissions, in one line: the path, the cause, and what to do."""
    where = exc.filename or "a file"
    where = Path(where).parent if Path(str(where)).name.startswith(".") else where  # a temporary file: its folder
    cause = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = f"free some space, then {HINTS.full_disk}"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and _in_data_folder(Path(str(where))):
        todo = "point the MNIST cache at a folder this user may write ($MNISTLAB_DATA, or --data-dir)"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        todo = "write somewhere this user may (--output-dir, --output or --results)"
    else:
        todo = "check the disk and the path, then run the command again"
    return f"{where}: {cause}; {todo}"


def _in_data_folder(path: Path) -> bool:
    from mnistlab.data.mnist import resolve_data_dir

    try:
        return path.resolve().is_relative_to(resolve_data_dir().resolve())
    except (MnistlabError, OSError):
        return False


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C: locks released, files whole, the stop message; exit status 143."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated


@dataclasses.dataclass
class Hints:
    """What the stop message and a full disk's message advise: the command that continues the work under way (by
    default, the same command: it changed nothing half way). Each command sets its own."""

    stopped: str = "nothing was left half written"
    full_disk: str = "run the same command again (what was written stays whole)"


HINTS = Hints()


def stopped_hint(command: str, stopped: str | None = None) -> None:
    """Say, if the command is stopped or the disk fills, that ``command`` continues it (``stopped``: another
    stop message)."""
    HINTS.stopped = stopped or f"every finished epoch is saved: {command} continues from it"
    HINTS.full_disk = f"{command} continues from the last complete epoch"


_add_installed_commands()

if __name__ == "__main__":
    main()
