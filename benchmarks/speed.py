"""Training and inference speed, side by side: a conventional PyTorch pipeline, mnistlab's in float32, and
mnistlab's fast path (bfloat16 autocast, ``train``'s default on a CPU that computes it natively).

Both train the same model with the same batch size, thread count, optimizer and number of images, with
random rotation of ±7 degrees, on real MNIST. The conventional pipeline is what a tutorial writes: a
map-style Dataset that rotates each PIL image and converts it to a normalised tensor, fed by a DataLoader.
mnistlab's keeps the split as one tensor, rotates whole batches with one affine warp, uses channels-last
weights and keeps freed memory in the process (see NOTES.md).

    python benchmarks/speed.py [--images 12800] [--models model8,model7] [--batch-size 64] [--main-job auto,fp32]

Seconds per epoch are extrapolated to 60,000 images from the timed images (after a warm-up).
The floor is the model's training FLOPs (3 x 2 x MACs per image) at the measured matrix-multiply rate, in
float32 and in bfloat16.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mnistlab.core import perf
from mnistlab.core.fileio import atomic_write_json
from mnistlab.data import Augment, TensorLoader, load_mnist
from mnistlab.models import create_model, get_card
from mnistlab.tools.analysis import analyze
from mnistlab.training.engine import provenance
from mnistlab.training.step import evaluate

EPOCH_IMAGES = 60_000


class ConventionalMNIST(Dataset):
    """Per-sample PIL rotation, ToTensor and Normalize, as torchvision's transforms would do them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, degrees: float, seed: int = 0) -> None:
        self.images, self.labels, self.degrees = images, labels, degrees
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index], mode="L")
        image = image.rotate(float(self.rng.uniform(-self.degrees, self.degrees)), resample=Image.Resampling.BILINEAR)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
        return (tensor - 0.1307) / 0.3081, int(self.labels[index])


def matmul_rate(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * size**3 / (time.perf_counter() - start)


def train_images_per_second(model: torch.nn.Module, batches, images: int, warmup: int = 3, bf16: bool = False) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    seen, start = 0, None
    for step, (x, y) in enumerate(batches):
        if step == warmup:
            start, seen = time.perf_counter(), 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as the engine's step does
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if start is not None and seen >= images:
            break
    assert start is not None, "too few images to time"
    return seen / (time.perf_counter() - start)


def bench_model(
    name: str, train: tuple[np.ndarray, np.ndarray], images: int, batch: int, rate: float, bf16_rate: float
) -> dict:
    torch.manual_seed(0)
    subset = (train[0][: images + 4 * batch], train[1][: images + 4 * batch])
    conventional = DataLoader(ConventionalMNIST(*subset, degrees=7.0), batch_size=batch, shuffle=True)
    conv_ips = train_images_per_second(create_model(name), conventional, images)

    loader = TensorLoader(*subset, batch, shuffle=True, augment=Augment(rotation=7.0), seed=0)
    model = create_model(name).to(memory_format=torch.channels_last)
    ours_ips = train_images_per_second(model, loader, images)

    # the fast path (train's default where the CPU computes bfloat16 natively): the same step under bf16 autocast
    loader = TensorLoader(*subset, batch, shuffle=True, augment=Augment(rotation=7.0), seed=0)
    model = create_model(name).to(memory_format=torch.channels_last)
    fast_ips = train_images_per_second(model, loader, images, bf16=True)

    macs = analyze(create_model(name)).macs
    floor = EPOCH_IMAGES * 3 * 2 * macs / rate
    return {
        "model": name,
        "params": get_card(name).params,
        "macs_per_image": macs,
        "conventional_s_per_epoch": EPOCH_IMAGES / conv_ips,
        "mnistlab_s_per_epoch": EPOCH_IMAGES / ours_ips,
        "conventional_images_per_s": conv_ips,
        "mnistlab_images_per_s": ours_ips,
        "speedup": ours_ips / conv_ips,
        "floor_s_per_epoch": floor,
        "fast_s_per_epoch": EPOCH_IMAGES / fast_ips,
        "fast_images_per_s": fast_ips,
        "fast_speedup": fast_ips / conv_ips,
        "floor_bf16_s_per_epoch": EPOCH_IMAGES * 3 * 2 * macs / bf16_rate,
    }


def bench_inference(name: str, test: tuple[np.ndarray, np.ndarray]) -> dict:
    model = create_model(name).eval().to(memory_format=torch.channels_last)
    loader = TensorLoader(*test, 1000)
    evaluate(model, loader)  # warm-up
    start = time.perf_counter()
    evaluate(model, loader)
    throughput = len(test[1]) / (time.perf_counter() - start)
    one = next(iter(TensorLoader(test[0][:1], test[1][:1], 1)))[0]
    latencies = []
    with torch.inference_mode():
        for _ in range(20):
            model(one)
        for _ in range(200):
            start = time.perf_counter()
            model(one)
            latencies.append(time.perf_counter() - start)
    return {
        "model": name,
        "test_images_per_s_batch1000": throughput,
        "single_image_ms": 1e3 * statistics.median(latencies),
    }


def main_job_seconds(precision: str, threads: int) -> dict:
    """``make train``'s command end to end (a fresh process: start-up, data, 15 epochs with their evaluations,
    summary) into a scratch folder, timed from outside."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mnistlab-main-job-") as scratch:
        command = [
            sys.executable, "-m", "mnistlab", "reproduce", "--models", "model8", "--seeds", "1", "--no-tuning",
            "--results", scratch, "--threads", str(threads), "--precision", precision, "--quiet",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the main job failed: {done.stderr.strip().splitlines()[-1:]}")
        summary = json.loads((Path(scratch) / "model8" / "seed1" / "summary.json").read_text())
    return {
        "command": " ".join(command[1:]).replace(scratch, "<scratch>"),
        "precision": precision,
        "threads": threads,
        "wall_seconds": seconds,
        "test_acc_last3": summary["test_acc_last3"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_800, help="training images timed per pipeline")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", default="model8,model7")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument(
        "--main-job",
        default="",
        help="also time `make train`'s command end to end with these precisions, e.g. auto,fp32 (each ~3-8 min)",
    )
    args = parser.parse_args()

    perf.configure(args.threads)
    train, test = load_mnist("train"), load_mnist("test")
    rate, bf16_rate = matmul_rate(), matmul_rate(dtype=torch.bfloat16)
    print(
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"matmul 2048x2048 float32: {rate / 1e9:.0f} GFLOP/s, bfloat16: {bf16_rate / 1e9:.0f} GFLOP/s "
        f"(native bf16: {perf.native_bf16()})"
    )
    rows = [bench_model(m, train, args.images, args.batch_size, rate, bf16_rate) for m in args.models.split(",")]
    inference = [bench_inference(m, test) for m in args.models.split(",")]

    print(f"\ntraining, batch {args.batch_size}, rotation ±7°, {args.images} images timed, per 60,000-image epoch:")
    print(
        f"{'model':<8} {'conventional':>13} {'mnistlab fp32':>14} {'fast (bf16)':>12} {'speed-up':>9} "
        f"{'floor fp32':>11} {'floor bf16':>11}"
    )
    for r in rows:
        print(
            f"{r['model']:<8} {r['conventional_s_per_epoch']:>11.1f} s {r['mnistlab_s_per_epoch']:>12.1f} s "
            f"{r['fast_s_per_epoch']:>10.1f} s {r['fast_speedup']:>8.2f}x {r['floor_s_per_epoch']:>9.1f} s "
            f"{r['floor_bf16_s_per_epoch']:>9.1f} s"
        )
    print("\ninference:")
    for r in inference:
        print(
            f"{r['model']:<8} test set at batch 1000: {r['test_images_per_s_batch1000']:,.0f} images/s; "
            f"one image: {r['single_image_ms']:.2f} ms"
        )
    jobs = [main_job_seconds(p, args.threads or torch.get_num_threads()) for p in args.main_job.split(",") if p]
    for job in jobs:
        print(
            f"main job, precision {job['precision']}: {job['wall_seconds']:.0f} s end to end, last 3 {job['test_acc_last3']}"
        )
    record = {
        "matmul_gflops": rate / 1e9,
        "matmul_bf16_gflops": bf16_rate / 1e9,
        "native_bf16": perf.native_bf16(),
        "batch_size": args.batch_size,
        "images_timed": args.images,
        "training": rows,
        "inference": inference,
        "main_job": jobs,
        "provenance": provenance(torch.device("cpu")),
    }
    atomic_write_json(args.output, record)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
