"""All the GPU work of a session with a lent GPU, as one command, in order of importance.

    MNISTLAB_DATA=.mnist PYTHONPATH=src python benchmarks/gpu_session.py --out $OUT [--tiny]

The lent machines have torch but not Optuna: for the record stages, `sh benchmarks/device_wheels.sh` here, carry
``.whl`` and ``.mnist``, and there (session 6's command)

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
    MNISTLAB_DATA=.mnist python3 benchmarks/gpu_session.py --out $OUT --only smoke,record,finals --minutes 4.5 \
        --deadline 530 --workers 4

1. a smoke test of the captured-graph step against the eager step (one short epoch each, a search trial's kind);
2. the speed benchmark: Model 8's 15-epoch recipe, one seed, with the graph and eager; a conventional
   pipeline (map-style Dataset rotating PIL images, DataLoader with 8 workers, pinned memory) for one epoch
   at batch 64 and 128; 16 seeds of Model 8 stacked (results/stacked/model8-16seeds);
   the hold rates: ``--hold-models`` (the ladder's first rung sepnet6k0_kd98c, which held on 6 of 6 final seeds
   on one CPU and 5 of 6 on another; sepnet3k_kd98 with its four Teacher 98k runs, SepNet 6.5k, the record
   learning from teachers, sepnet3k; Model 8 is
   stacked16's) on 16 seeds each, their histories and summaries only (``--only holdrates``; the teachers are
   committed runs under results/, so they travel with the working tree);
   the ladder: its declared validation studies with teachers not run yet (``--ladder-studies``: ladder-6568 and
   ladder-3762, each 8 seeds with four Teacher 98k, ~2.5 h apiece on the 2-core CPU; `mnistlab reproduce --study`);
3. Model 8's three final seeds stacked (results/stacked/model8/seed<k>), beside the single-run records;
4. the record searches (``--minutes`` of them): at most 3,500 and at most 3,762 parameters at the same time,
   ``--workers`` search workers sharing each study in results/search/ (resumed where an earlier session left
   it), over results/search/record-gpu.space.json (the CPU search's space, with the batch size drawn too);
   ``--budgets 3000 --search-teachers results/tuning/m8-lr0.1/s1,...`` is the search with teachers below 3,000;
5. the finals: each search's best trial registered (`mnistlab register`) and trained on 3 seeds with all
   60,000 images (`mnistlab reproduce --models NAME --no-tuning`); found.json comes back in ``--out``.

The earlier sessions' stages (Model 7's rounds, the zoo's seeds) are recorded and gone from here: their runs
are what `mnistlab reproduce` re-makes.

Each stage appends to ``gpu.json``, and every finished job packs the new run folders into ``results.tar.gz``
under ``--out`` (so a command cut off by the time limit loses only the jobs it was running). ``--tiny`` runs
every stage on a few thousand images and 1-2 epochs (with ``--results`` a scratch folder), to check the script on
a CPU first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tarfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the lab (its models, studies and `reproduce`) from the source tree: a lent machine runs without installing it
LAB = Path(__file__).resolve().parents[1] / "lab"
sys.path.insert(0, str(LAB))

import mnistlab_lab.models  # noqa: E402, F401  (registers the lab's models)
from mnistlab.core.rundir import LAST_TESTS  # noqa: E402
from mnistlab.models import config_for  # noqa: E402
from mnistlab.training.engine import fit, fit_group  # noqa: E402

RECORD: dict = {"stages": {}}
FINALS_SECONDS = 110  # what the finals are left under --deadline: 2 models x 3 seeds stacked, at once
GRAPH = {"cuda_graph": True}  # set False by the smoke test if the captured step fails or disagrees


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--skip", default="", help="stages to skip, comma-separated")
    parser.add_argument("--only", default="", help="only these stages, comma-separated")
    parser.add_argument("--workers", type=int, default=0, help="processes for a study's runs [the stage's own]")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument(
        "--minutes", type=float, default=4.0, help="the record searches' time (both at once): no trial starts after it"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=0.0,
        help="seconds from the start by which the whole command ends (0: none): trials in flight "
        "stop in time for the finals, which stop by then",
    )
    parser.add_argument("--budgets", default="3500,3762", help="the record searches' parameter budgets")
    parser.add_argument(
        "--search-teachers",
        default="",
        help="the record searches' teachers, comma-separated run folders (e.g. results/tuning/m8-lr0.1/s1)",
    )
    parser.add_argument(
        "--hold-models",
        default="sepnet6k0_kd98c,sepnet3k_kd98,sepnet6k,sepnet3k_kd,sepnet3k",
        help="the holdrates stage's models, comma-separated, each on 16 seeds",
    )
    parser.add_argument(
        "--ladder-studies",
        default="ladder-6568,ladder-3762",
        help="the ladder stage's declared studies, comma-separated",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = {"limit": 3000, "epochs": 2} if args.tiny else {}
    if args.threads:
        tiny["threads"] = args.threads  # an execution setting: it rides with the tiny overrides
    RECORD["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    RECORD["torch"] = torch.__version__
    RECORD["t0"] = time.time()
    RECORD["end"] = RECORD["t0"] + args.deadline if args.deadline else None
    started = time.perf_counter()
    skip = set(args.skip.split(","))
    stages = [
        ("smoke", lambda: smoke(device, args)),
        ("speed", lambda: speed(device, args, tiny)),
        ("stacked16", lambda: stacked_seeds(device, args, tiny, 16, "model8-16seeds")),
        ("holdrates", lambda: hold_rates(device, args, tiny)),
        ("ladder", lambda: ladder(device, args, tiny)),
        ("stacked3", lambda: stacked_seeds(device, args, tiny, 3, "model8")),
        ("record", lambda: record(device, args, tiny)),
        ("finals", lambda: finals(device, args, tiny)),
    ]
    for name, stage in stages:
        if name in skip or args.only and name not in args.only.split(","):
            continue
        start = time.perf_counter()
        try:
            result = stage()
            RECORD["stages"][name] = {"ok": True, "seconds": time.perf_counter() - start, **(result or {})}
        except Exception as exc:  # a stage that fails must not cost the others their turn
            RECORD["stages"][name] = {
                "ok": False,
                "error": repr(exc),
                "trace": traceback.format_exc()[-3000:],
            }
        print(f"== {name}: {json.dumps(RECORD['stages'][name])[:600]}", flush=True)
        RECORD["elapsed"] = time.perf_counter() - started
        (args.out / "gpu.json").write_text(json.dumps(RECORD, indent=2) + "\n")
        pack(args)


def pack(args: argparse.Namespace) -> None:
    """The run folders this session wrote (everything under results/ newer than the start), as one archive."""
    since = RECORD["t0"]
    with tarfile.open(args.out / "results.tar.gz", "w:gz") as tar:
        for path in sorted(args.results.rglob("*")):
            parts = path.relative_to(args.results).parts  # search/<study>/trialN/...: a trial's scratch
            if (
                path.is_file()
                and path.stat().st_mtime >= since
                and path.stat().st_size < 4_000_000
                and not (parts[0] == "search" and len(parts) > 2)
                and not (parts[0] == "stacked" and parts[1].endswith("seeds") and path.suffix == ".pt")
            ):
                tar.add(path)


def quiet(line: str) -> None:
    print(line, flush=True)


def smoke(device: str, args: argparse.Namespace) -> dict:
    """One short epoch of a search trial's kind (2 seeds stacked, batch 32, a moving average short enough to
    score after 156 steps) with the graph and eager: both must learn and agree in distribution, or the search
    trains without the graph."""
    import tempfile

    out = {}
    for graph in (True, False):
        scratch = tempfile.mkdtemp(prefix=f"smoke-graph{graph}-")
        configs = [
            config_for(
                "found2k9",
                seed=seed,
                epochs=1,
                limit=6000,
                val_size=1000,
                batch_size=32,
                ema=0.9,
                device=device,
                output_dir=f"{scratch}/s{seed}",
                cuda_graph=graph,
            )
            for seed in (1, 2)
        ]
        try:
            summaries = fit_group(configs, progress=False, log=quiet)
        except Exception as exc:
            GRAPH["cuda_graph"] = False
            out[f"graph={graph}"] = {"error": repr(exc), "trace": traceback.format_exc()[-2000:]}
            continue
        out[f"graph={graph}"] = {
            "val": [s["last_val_acc"] for s in summaries],
            "provenance": summaries[0]["provenance"],
        }
    if "val" in out.get("graph=True", {}) and "val" in out.get("graph=False", {}):
        gaps = [abs(a - b) for a, b in zip(out["graph=True"]["val"], out["graph=False"]["val"])]
        if max(gaps) > 1.5:  # beyond seed-level noise on 1,000 images: do not trust it
            GRAPH["cuda_graph"] = False
    out["graph_used_after"] = GRAPH["cuda_graph"]
    return out


def speed(device: str, args: argparse.Namespace, tiny: dict) -> dict:
    """Model 8's recipe, one seed: fit with the graph, fit eager (2 epochs), and the conventional pipeline."""
    from speed import ConventionalMNIST
    from torch.utils.data import DataLoader

    from mnistlab.data.mnist import load_mnist
    from mnistlab.models import create_model

    result = {}
    base = config_for("model8", val_size=0, device=device, **GRAPH, **tiny)
    for label, changes in (("graph", {}), ("eager_2_epochs", {"cuda_graph": False, "epochs": 2})):
        config = dataclasses.replace(base, output_dir=f"/tmp/speed-{label}", **changes)
        start = time.perf_counter()
        summary = fit(config, progress=False, log=quiet)
        history = [json.loads(line) for line in Path(config.output_dir, "history.jsonl").read_text().splitlines()]
        result[label] = {
            "fit_seconds": time.perf_counter() - start,
            "epoch_seconds": [h["seconds"] for h in history],
            "test_last3": summary[LAST_TESTS],
        }
    images, labels = load_mnist("train")
    if tiny:
        images, labels = images[: tiny["limit"]], labels[: tiny["limit"]]
    for batch in (64, 128):
        torch.manual_seed(0)
        model = create_model("model8").to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loader = DataLoader(
            ConventionalMNIST(images, labels, degrees=7.0),
            batch_size=batch,
            shuffle=True,
            num_workers=8,
            pin_memory=device == "cuda",
            persistent_workers=False,
        )
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.nll_loss(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        result[f"conventional_batch{batch}_epoch_seconds"] = time.perf_counter() - start
    return result


def stacked_seeds(
    device: str, args: argparse.Namespace, tiny: dict, count: int, folder: str, model: str = "model8"
) -> dict:
    """A model's final recipe (its teachers included) on seeds 1..count as one stacked network, into
    results/stacked/<folder>."""
    root = args.results / "stacked" / folder
    configs = [
        config_for(model, seed=seed, val_size=0, device=device, **GRAPH, output_dir=str(root / f"seed{seed}"), **tiny)
        for seed in range(1, count + 1)
    ]
    start = time.perf_counter()
    summaries = fit_group(configs, progress=False, log=quiet)
    return {"fit_seconds": time.perf_counter() - start, "test_last3": {s["seed"]: s[LAST_TESTS] for s in summaries}}


def hold_rates(device: str, args: argparse.Namespace, tiny: dict) -> dict:
    """The headline models' final recipes on 16 seeds each (results/stacked/<model>-16seeds, read by the report's
    hold-rate table): the models of ``--hold-models``, one after another, each packed as it ends. Only their
    histories and summaries come back (``pack`` leaves a many-seed run's checkpoints)."""
    out = {}
    for model in [m for m in args.hold_models.split(",") if m]:
        out[model] = stacked_seeds(device, args, tiny, 16, f"{model}-16seeds", model)
        pack(args)
    return out


def ladder(device: str, args: argparse.Namespace, tiny: dict) -> dict:
    """The ladder's declared validation studies still to run (``--ladder-studies``), as the committed command
    `mnistlab reproduce --study KEY` runs them: each candidate's seeds stacked, the candidates at once. Their run
    folders come back whole (validation runs are small); the finals wait for the studies' choice, made here."""
    import os

    extra = ["--epochs", str(tiny["epochs"]), "--limit", str(tiny["limit"])] if tiny else []
    studies = [s for s in args.ladder_studies.split(",") if s]
    start = time.perf_counter()
    argv = ["reproduce", *(a for s in studies for a in ("--study", s)), "--device", device, "--workers", "2"]
    mnistlab([*argv, "--results", str(args.results), "--quiet", *extra], dict(os.environ))
    return {"studies": studies, "fit_seconds": time.perf_counter() - start}


def record(device: str, args: argparse.Namespace, tiny: dict) -> dict:
    """The record searches, at most 3,500 and at most 3,762 parameters (the public single-run model's size;
    ``--budgets``), at the same time: ``--workers`` search workers share each study (in results/search/, resumed
    where an earlier session left it), each starting no trial after ``--minutes``; the archive is packed after
    them. With ``--search-teachers`` (55,000-image runs: the search scores on validation) each study is
    ``record-<budget>-kd`` and draws distillation's alpha and T per trial."""
    from concurrent.futures import ThreadPoolExecutor

    from mnistlab.jobs.search import Settings, Space, best_row, finished, search, trial_rows
    from mnistlab.models.registry import teacher_files

    teachers = teacher_files([t for t in args.search_teachers.split(",") if t])[0]

    space_file = Path("results") / "search" / "record-gpu.space.json"
    space = Space.from_file(Path(__file__).resolve().parents[1] / space_file)
    (args.results / "search").mkdir(parents=True, exist_ok=True)
    command = (
        f"PYTHONPATH=src python benchmarks/gpu_session.py --only record --minutes {args.minutes:g} "
        f"--workers {args.workers or 5} (space {space_file}; {RECORD['device']})"
    )

    def one(name: str, budget: int) -> dict:
        try:
            return search_one(name, budget)
        except Exception as exc:  # one study's failure must not cost the other its result
            return {"error": repr(exc), "trace": traceback.format_exc()[-3000:]}

    def search_one(name: str, budget: int) -> dict:
        storage = f"sqlite:///{(args.results / 'search' / (name + '.db')).resolve()}"
        # trials still training when only the finals' time is left are stopped (failed, marked "stopped")
        stop_at = RECORD["end"] - FINALS_SECONDS if RECORD["end"] else None
        settings = Settings(
            name=name,
            storage=storage,
            max_params=budget,
            epochs=tiny.get("epochs", 15),
            limit=tiny.get("limit"),
            results=str(args.results),
            device=device,
            threads=1,
            command=command,
            sampler_seed=budget,
            stop_at=stop_at,
            teachers=teachers,
            **GRAPH,
        )
        study = search(settings, space, trials=1000, log=quiet, workers=args.workers or 5, timeout=args.minutes * 60)
        rows = trial_rows(study)
        best = best_row(rows)
        return {
            "trials": len(rows),
            "finished": len(finished(rows)),
            "best": {key: best[key] for key in ("trial", "params", "score", "arch", "params_drawn")} if best else None,
        }

    kd = "-kd" if teachers else ""
    budgets = {f"record-{b}{kd}" + ("-tiny" if tiny else ""): b for b in map(int, args.budgets.split(","))}
    with ThreadPoolExecutor(len(budgets)) as pool:
        futures = {name: pool.submit(one, name, budget) for name, budget in budgets.items()}
        result = {name: future.result() for name, future in futures.items()}
    RECORD["searches"] = result
    return result


def finals(device: str, args: argparse.Namespace, tiny: dict) -> dict:
    """Each record search's best trial (worst-seed validation) registered as a model and trained on 3 seeds
    with all 60,000 images, tested at every epoch: the committed commands `mnistlab register` and
    `mnistlab reproduce --models NAME --no-tuning`, run as they are. The found models file comes back in
    ``--out``."""
    import os

    from mnistlab.models.found import entries
    from mnistlab_lab.models import FOUND as LAB_FOUND

    # a try-out registers beside its results, never into the package's found.json
    found_file = (args.results / "found.json").resolve() if tiny else LAB_FOUND
    env = {**os.environ, "MNISTLAB_FOUND": str(found_file)}
    names = []
    for study, summary in (RECORD.get("searches") or {}).items():
        best = summary.get("best")
        if not best:
            continue
        taken = {e["name"] for e in entries(found_file)}
        base = f"found{best['params'] // 1000}k{best['params'] % 1000 // 100}"
        name = next(n for n in [base, *(f"{base}{c}" for c in "bcdefgh")] if n not in taken)
        mnistlab(
            [
                "register",
                "--study",
                study,
                "--trial",
                str(best["trial"]),
                "--name",
                name,
                "--results",
                str(args.results),
            ],
            env,
        )
        names.append(name)
    if not names:
        return {"models": []}
    extra = ["--epochs", str(tiny["epochs"]), "--limit", str(tiny["limit"])] if tiny else []
    start = time.perf_counter()
    mnistlab(
        [
            "reproduce",
            "--models",
            ",".join(names),
            "--no-tuning",
            "--device",
            device,
            "--workers",
            str(len(names)),
            "--results",
            str(args.results),
            "--quiet",
            *extra,
        ],
        env,
    )
    out = {"models": names, "fit_seconds": time.perf_counter() - start, "test_last3": {}}
    for name in names:
        for seed in (1, 2, 3):
            summary = args.results / name / f"seed{seed}" / "summary.json"
            if summary.is_file():
                out["test_last3"][f"{name}/seed{seed}"] = json.loads(summary.read_text())[LAST_TESTS]
    (args.out / "found.json").write_text(found_file.read_text())
    return out


def mnistlab(argv: list[str], env: dict) -> None:
    """A mnistlab command as a user types it, its output in this log; a failure stops the stage."""
    import os
    import subprocess

    print("$ mnistlab " + " ".join(argv), flush=True)
    left = RECORD["end"] - time.time() - 5 if RECORD["end"] else None
    path = os.pathsep.join(p for p in (str(LAB), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "mnistlab_lab", *argv]  # mnistlab with the lab loaded, installed or not
    subprocess.run(command, env={**env, "PYTHONPATH": path}, check=True, timeout=left)


if __name__ == "__main__":
    main()
