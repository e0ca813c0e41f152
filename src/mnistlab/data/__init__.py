"""Data: verified MNIST (``mnist``), batched augmentation (``augment``) and the fast loaders (``loader``)."""

from mnistlab.data.augment import Augment, random_affine
from mnistlab.data.loader import Loaders, TensorLoader, get_dataloaders, make_loaders, normalize
from mnistlab.data.mnist import TRAIN_MEAN, TRAIN_STD, fetch, load_mnist, resolve_data_dir

__all__ = [
    "TRAIN_MEAN",
    "TRAIN_STD",
    "Augment",
    "Loaders",
    "TensorLoader",
    "fetch",
    "get_dataloaders",
    "load_mnist",
    "make_loaders",
    "normalize",
    "random_affine",
    "resolve_data_dir",
]
