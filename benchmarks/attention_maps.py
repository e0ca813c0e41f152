"""How near the clean view's attention targets are to the teachers' own maps of the warped image, and how big the
attention term is (``training/attention.py``). Real MNIST, the four Teacher 98k runs (55,000 images), validation
images warped as the recipe warps (rotation up to 7 degrees).

    python benchmarks/attention_maps.py [--images 2000] [--student results/tuning/sep3k6w-kd98c/s1/last.pt]
        [--output benchmarks/attention_maps.json]

Per compared block, the mean over images and positions of the squared difference between unit maps (what the
attention term averages): "warped" (the clean view's target: the teachers' map of the unwarped image, warped) and
"unwarped" (that map as it is) against the teachers' map of the warped image; then a student's maps against it,
untrained and (with ``--student``) trained. ``term_at_1000``: weight 1000's term, 500 times their sum.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mnistlab.core.config import Augment
from mnistlab.core.fileio import atomic_write_json
from mnistlab.data.augment import random_theta, warp
from mnistlab.data.loader import get_dataloaders, normalize
from mnistlab.models import config_for, create_model
from mnistlab.models.checkpoint import model_from, read_checkpoint
from mnistlab.models.stacking import stack
from mnistlab.training.attention import Attention, warp_maps
from mnistlab.training.engine import provenance
from mnistlab.training.step import Teachers

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = [str(ROOT / f"results/teachers/teacher98k-55k/seed{s}") for s in (1, 2, 3, 4)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rotation", type=float, default=7.0)
    parser.add_argument("--student", default=None, help="a trained student's checkpoint (sepnet3k6w's shape)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    config = config_for("sepnet3k6w", teachers=TEACHERS, attention=1000.0, teacher_view="clean")
    teachers = Teachers.load(config, cpu)
    assert teachers is not None
    pixels = get_dataloaders(val_size=5000).val.pixels[: args.images]  # type: ignore[union-attr]
    theta = random_theta(len(pixels), Augment(rotation=args.rotation), torch.Generator().manual_seed(0))
    warped = normalize(warp(pixels, theta))
    students = {"untrained": create_model("sepnet3k6w")}
    if args.student:
        students["trained"] = model_from(read_checkpoint(args.student), args.student)
    rows: dict[str, dict[str, float]] = {}
    for name, student in students.items():
        net = stack([student]).eval()
        attention = Attention.create(1000.0, net, list(teachers.groups))  # type: ignore[arg-type]
        with torch.no_grad():
            teachers.probabilities(warped)
            exact = attention.teachers.mean(len(pixels), 1)
            teachers.probabilities(normalize(pixels))
            clean = [m.transpose(0, 1) for m in attention.teachers.mean(len(pixels), 1)]  # [1, N, P]
            net(warped)
            mine = attention.student.energies(1)
        pairs = attention.pairs
        if not rows:
            rows["warped"] = _distances([warp_maps(c, theta[None], p) for c, p in zip(clean, pairs)], exact, pairs)
            rows["unwarped"] = _distances([c.transpose(0, 1) for c in clean], exact, pairs)
        rows[f"student {name}"] = _distances(mine, exact, pairs)
    result = {
        "images": len(pixels),
        "rotation": args.rotation,
        "student": args.student,
        "blocks": [f"{p.student}/{p.teachers[0]} {p.size}x{p.size}" for p in pairs],
        "distances": rows,
        "provenance": provenance(cpu),
    }
    for what, row in rows.items():
        print(f"{what:>18}: " + "  ".join(f"{k} {v:.3g}" for k, v in row.items()))
    if args.output:
        atomic_write_json(Path(args.output), result)


def _distances(maps: list[torch.Tensor], exact: list[torch.Tensor], pairs: list) -> dict[str, float]:
    values = {p.student: float((m - e).pow(2).mean()) for m, e, p in zip(maps, exact, pairs)}
    return {**values, "term_at_1000": 500 * sum(values.values())}


if __name__ == "__main__":
    sys.exit(main())
