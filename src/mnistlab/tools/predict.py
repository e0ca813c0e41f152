"""Predicting digits in image files, after MNIST's own preprocessing.

MNIST digits are white ink on black, fitted into a 20x20 box keeping their aspect ratio, then placed in
28x28 so that their centre of mass is at the centre. A photo or scan of any size and either polarity is
brought to that form before the network sees it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mnistlab.core.errors import MnistlabError, first_line
from mnistlab.data.loader import normalize

MAX_PIXELS = 16_000_000  # a photo of one digit needs no more: larger is reduced in the decoder or refused
INK_THRESHOLD = 0.2  # a pixel is ink when it is this far (0-1) from the background level
BLANK_CONTRAST = 0.1  # an image whose darkest and lightest pixels are closer than this holds no digit


@dataclass(frozen=True)
class Prediction:
    path: str
    digit: int
    probability: float
    probabilities: tuple[float, ...]


def load_image(path: str | Path) -> np.ndarray:
    """A grayscale image as floats in [0, 1], read safely: its size is checked from the header before anything
    is decoded (a digit needs no more than ``MAX_PIXELS``; a large photo is reduced in the decoder where the
    format allows, a bomb refused in one line), and a transparent background is laid on white, as the demo's
    sketchpad draws."""
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    # JPEG: decoded at an eighth of its size (a digit needs far fewer pixels), in bounded memory
                    image.draft("L", (max(1, width // 8), max(1, height // 8)))
                    width, height = image.size
                if width * height > MAX_PIXELS:
                    raise MnistlabError(
                        f"{name}: {width:,} x {height:,} pixels is too large for one digit (at most "
                        f"{MAX_PIXELS // 1_000_000} megapixels); crop or shrink it"
                    )
                image.load()
                if image.mode in DEEP_MODES:  # 16-bit or float grey: over its own range, not clipped to 8 bits
                    return _deep_gray(image)
                gray = _on_white(image)
    except MnistlabError:
        raise
    except FileNotFoundError:
        raise MnistlabError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MnistlabError(f"{name}: an image that claims too many pixels (a decompression bomb); refused") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # PIL's decoders raise these
        first = first_line(exc)
        raise MnistlabError(
            f"{name}: not a readable image ({type(exc).__name__}{': ' + first if first else ''})"
        ) from None
    return np.asarray(gray, dtype=np.float32) / 255.0


DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # greyscale deeper than 8 bits


def _deep_gray(image: Image.Image) -> np.ndarray:
    """A 16-bit (or 32-bit, or float) greyscale image as floats in [0, 1] over its format's range: 65,535 is white
    (a float image already in [0, 1] stays; an integer one whose values fit 8 bits is read as 8 bits)."""
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max(initial=0.0))
    full = 1.0 if image.mode == "F" and top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    return np.clip(values / full, 0.0, 1.0).astype(np.float32)


def _on_white(image: Image.Image) -> Image.Image:
    """The image in grayscale, a transparent part laid on white (a drawing app's background)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return image.convert("L")


def to_mnist(gray: np.ndarray, where: str = "image") -> np.ndarray:
    """A [0, 1] grayscale picture of one digit, as a 28x28 MNIST-style array (white ink on black, [0, 1])."""
    if gray.max() - gray.min() < BLANK_CONTRAST:
        raise MnistlabError(f"{where}: blank image (no contrast), no digit to read")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark ink on a light background: invert to MNIST's polarity
        gray, border = 1.0 - gray, 1.0 - border
    ink = np.clip(gray - np.median(border), 0.0, None)
    if ink.max() < BLANK_CONTRAST:
        raise MnistlabError(f"{where}: no ink found, no digit to read")
    ink /= ink.max()
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = crop.shape
    scale = 20.0 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = (
        np.asarray(
            Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS), dtype=np.float32
        )
        / 255.0
    )
    canvas = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - fitted.shape[0]) // 2, (28 - fitted.shape[1]) // 2
    canvas[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    total = canvas.sum()
    cy, cx = (np.indices(canvas.shape) * canvas).reshape(2, -1).sum(1) / total
    shift_y, shift_x = int(round(13.5 - cy)), int(round(13.5 - cx))
    return np.clip(_shift(canvas, shift_y, shift_x), 0.0, 1.0)


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    h, w = image.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = image[ys, xs]
    return out


@torch.inference_mode()
def predict_arrays(model: torch.nn.Module, digits: list[np.ndarray]) -> list[tuple[int, float, tuple[float, ...]]]:
    """Digits (28x28 in [0, 1]) to (class, probability, all probabilities)."""
    batch = normalize(torch.from_numpy(np.stack(digits)).unsqueeze(1))
    probabilities = model.eval()(batch).exp()
    return [(int(p.argmax()), float(p.max()), tuple(float(v) for v in p)) for p in probabilities]


def predict_files(model: torch.nn.Module, paths: list[str | Path]) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Predictions for every readable digit image, and (path, reason) for each one that was not."""
    good: list[tuple[str, np.ndarray]] = []
    failed: list[tuple[str, str]] = []
    for path in paths:
        try:
            good.append((str(path), to_mnist(load_image(path), str(path))))
        except MnistlabError as exc:
            failed.append((str(path), str(exc)))
    results = predict_arrays(model, [digit for _, digit in good]) if good else []
    return [Prediction(p, d, prob, probs) for (p, _), (d, prob, probs) in zip(good, results)], failed
