"""All the GPU work of a session with a lent GPU, as one command, in order of importance.

    MNISTLAB_DATA=.mnist PYTHONPATH=src python benchmarks/gpu_session.py --out $OUT [--tiny]

1. a smoke test of the captured-graph step against the eager step (one short epoch each);
2. the speed benchmark: Model 8's 15-epoch recipe, one seed, with the graph and eager; a conventional
   pipeline (map-style Dataset rotating PIL images, DataLoader with 8 workers, pinned memory) for one epoch
   at batch 64 and 128; 16 seeds of Model 8 stacked (results/stacked/model8-16seeds);
3. Model 8's three final seeds stacked (results/stacked/model8/seed<k>), beside the single-run records;
4. the record searches (``--minutes`` of them): at most 3,500 and at most 3,762 parameters, ``--workers``
   search workers sharing each study in results/search/ (resumed where an earlier session left it).

The earlier sessions' stages (Model 7's rounds, the zoo's seeds) are recorded and gone from here: their runs
are what `mnistlab reproduce` re-makes.

Each stage appends to ``gpu.json``, and every finished job packs the new run folders into ``results.tar.gz``
under ``--out`` (so a command cut off by the time limit loses only the jobs it was running). ``--tiny`` runs every stage on a few thousand
images and 1-2 epochs into a scratch folder, to check the script on a CPU first.
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


from mnistlab.engine import fit, fit_group  # noqa: E402
from mnistlab.models import config_for  # noqa: E402

RECORD: dict = {"stages": {}}
GRAPH = {"cuda_graph": True}  # set False by the smoke test if the captured step fails or disagrees


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--skip", default="", help="stages to skip, comma-separated")
    parser.add_argument("--only", default="", help="only these stages, comma-separated")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes for a study's runs [the stage's own]"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--minutes", type=float, default=6.0, help="the record searches' time, both together")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = {"limit": 3000, "epochs": 2} if args.tiny else {}
    if args.threads:
        tiny["threads"] = args.threads  # an execution setting: it rides with the tiny overrides
    RECORD["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    RECORD["torch"] = torch.__version__
    RECORD["t0"] = time.time()
    started = time.perf_counter()
    skip = set(args.skip.split(","))
    stages = [
        ("smoke", lambda: smoke(device, args)),
        ("speed", lambda: speed(device, args, tiny)),
        ("stacked16", lambda: stacked_seeds(device, args, tiny, 16, "model8-16seeds")),
        ("stacked3", lambda: stacked_seeds(device, args, tiny, 3, "model8")),
        ("record", lambda: record(device, args, tiny)),
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
            if path.is_file() and path.stat().st_mtime >= since and path.stat().st_size < 4_000_000:
                tar.add(path)


def quiet(line: str) -> None:
    print(line, flush=True)


def smoke(device: str, args: argparse.Namespace) -> dict:
    """One short epoch with the graph and one eager: both must learn and agree in distribution."""
    out = {}
    for graph in (True, False):
        config = config_for("model8", epochs=1, limit=6000, val_size=1000, device=device,
                                       output_dir=f"/tmp/smoke-{graph}", cuda_graph=graph)  # fmt: skip
        try:
            summary = fit(config, progress=False, log=quiet)
        except Exception as exc:
            GRAPH["cuda_graph"] = False
            out[f"graph={graph}"] = {"error": repr(exc), "trace": traceback.format_exc()[-2000:]}
            continue
        out[f"graph={graph}"] = {"val": summary["last_val_acc"], "provenance": summary["provenance"]}
    if "val" in out.get("graph=True", {}) and abs(out["graph=True"]["val"] - out["graph=False"]["val"]) > 1.5:
        GRAPH["cuda_graph"] = False  # disagrees beyond seed-level noise on 1,000 images: do not trust it
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
        history = [
            json.loads(line) for line in Path(config.output_dir, "history.jsonl").read_text().splitlines()
        ]
        result[label] = {"fit_seconds": time.perf_counter() - start, "epoch_seconds": [h["seconds"] for h in history],
                         "test_last3": summary["test_acc_last3"]}  # fmt: skip
    images, labels = load_mnist("train")
    if tiny:
        images, labels = images[: tiny["limit"]], labels[: tiny["limit"]]
    for batch in (64, 128):
        torch.manual_seed(0)
        model = create_model("model8").to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loader = DataLoader(ConventionalMNIST(images, labels, degrees=7.0), batch_size=batch, shuffle=True,
                            num_workers=8, pin_memory=device == "cuda", persistent_workers=False)  # fmt: skip
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


def stacked_seeds(device: str, args: argparse.Namespace, tiny: dict, count: int, folder: str) -> dict:
    """Model 8's final recipe on seeds 1..count as one stacked network, into results/stacked/<folder>."""
    root = args.results / "stacked" / folder
    configs = [config_for("model8", seed=seed, val_size=0, device=device, **GRAPH,
                                     output_dir=str(root / f"seed{seed}"), **tiny)
               for seed in range(1, count + 1)]  # fmt: skip
    start = time.perf_counter()
    summaries = fit_group(configs, progress=False, log=quiet)
    return {"fit_seconds": time.perf_counter() - start,
            "test_last3": {s["seed"]: s["test_acc_last3"] for s in summaries}}  # fmt: skip


def record(device: str, args: argparse.Namespace, tiny: dict) -> dict:
    """The record searches, at most 3,500 and at most 3,762 parameters (the public single-run model's size):
    ``--workers`` search workers share each study (in results/search/, resumed where an earlier session left
    it), each stopping new trials after its share of ``--minutes``; the archive is packed after each."""
    from mnistlab.search import Settings, Space, search

    space = Space.from_file(
        Path(__file__).resolve().parents[1] / "results" / "search" / "record-3500.space.json"
    )
    result = {}
    (args.results / "search").mkdir(parents=True, exist_ok=True)
    for budget, share in ((3500, 0.6), (3762, 0.4)):
        name = f"record-{budget}" + ("-tiny" if tiny else "")
        storage = f"sqlite:///{(args.results / 'search' / (name + '.db')).resolve()}"
        settings = Settings(name, storage, budget, epochs=tiny.get("epochs", 15), limit=tiny.get("limit"),
                            results=str(args.results), device=device, threads=1)  # fmt: skip
        study = search(settings, space, trials=1000, log=quiet, workers=args.workers or 8,
                       timeout=args.minutes * 60 * share)  # fmt: skip
        done = [t for t in study.trials if t.value is not None]
        best = max(done, key=lambda t: t.value) if done else None
        result[name] = {"trials": len(study.trials), "finished": len(done),
                        "best": {"trial": best.number, "params": best.user_attrs["params"], "score": best.value,
                                 "arch": best.user_attrs["arch"]} if best else None}  # fmt: skip
        pack(args)
    return result


if __name__ == "__main__":
    main()
