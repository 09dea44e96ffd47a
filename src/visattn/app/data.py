"""Small, honest data sets for training and evaluation (no downloads).

* :func:`digits` - scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), a fixed stratified
  held-out split, upsampled to the model's input size (one image at a time, when it is read) and repeated to 3
  channels.
* :class:`ImageFolder` - ``root/{train,val}/<class>/*.jpg|png|tif...`` read with Pillow. Every file is decoded in
  full when the folder is scanned: unreadable, truncated or non-image files are skipped with a warning then; a file
  that stops decoding later (changed on disk) is skipped with a warning mid-epoch, never a crash.

Pixel values become [0, 1] RGB in every mode Pillow gives: 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``,
``YCbCr``, ``LAB``, ``HSV``; alpha of ``LA`` / ``PA`` / ``RGBA`` is dropped, as timm does) through Pillow's RGB
conversion, 16-bit modes (``I;16*``, and ``I``, 32-bit integers holding 16-bit samples) divided by 65535, and float
images (``F``) taken as intensities in [0, 1], values outside clipped; a non-finite float sample is read as 0 (NaN,
-inf) or 1 (+inf) before resizing, so it cannot spread into its neighbours. Images of more than ``MAX_PIXELS``
pixels (a decompression bomb, or a photo far larger than any training size) are skipped at scan time with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 50_000_000  # ~7000 x 7000: decoded, about 150 MB (RGB) or 200 MB (float) per image
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


class Digits(Dataset):
    """8x8 digit images (``(N, 8, 8)`` in [0, 1]) served as normalised ``(3, size, size)`` images, upsampled when read
    (an eager upsampling of the whole set would hold N x 3 x size^2 floats: 22 GB at 1024)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int):
        self.images, self.labels, self.size = images, labels, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        x = F.interpolate(self.images[i][None, None], size=(self.size, self.size), mode="bilinear",
                          align_corners=False)[0]  # (1, size, size)
        return _normalise(x.expand(3, -1, -1)), self.labels[i]  # (3, size, size)


def digits(split: str, size: int = 32, holdout: float = 0.2) -> Digits:
    """The digits set as ``(3, size, size)`` float images in [-2, 2] and integer labels.

    The held-out split (``"test"``) takes ``holdout`` of every class, chosen once with a fixed generator, so every
    run and every process sees the same split whatever the training seed.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the default data set needs scikit-learn: pip install 'visattn[train]'") from err
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0  # (N, 8, 8) in [0, 1]
    labels = torch.tensor(bunch.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test[idx[: round(holdout * len(idx))]] = True
    keep = test if split == "test" else ~test
    return Digits(images[keep], labels[keep], size)


def read_image(image, size: int) -> torch.Tensor:
    """An image file (or a ``PIL.Image``) as ``(3, size, size)`` floats in [0, 1], as training reads it: every mode
    to RGB (high bit depths kept, non-finite samples made finite first), resized to ``size x size`` (bilinear, no
    crop)."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("reading images needs Pillow: pip install 'visattn[train]'") from err
    img = image if isinstance(image, Image.Image) else Image.open(image)
    try:
        img.load()
        if img.mode in ("F", "I") or img.mode.startswith("I;16"):  # high bit depth: keep the precision
            scale = 1.0 if img.mode == "F" else 1.0 / 65535
            w, h = img.size
            x = torch.frombuffer(bytearray(img.convert("F").tobytes()), dtype=torch.float32).view(1, 1, h, w)
            x = torch.nan_to_num(x * scale, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)  # finite first
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
            return x.expand(3, -1, -1).clone()  # (3, size, size)
        rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
        x = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    finally:
        if img is not image:
            img.close()
    return x.view(size, size, 3).permute(2, 0, 1).float() / 255.0  # (3, size, size)


def preprocess(image, size: int) -> torch.Tensor:
    """An image as a trained model's input: :func:`read_image`, normalised as in training, ``(1, 3, size, size)``."""
    return _normalise(read_image(image, size))[None]


class ImageFolder(Dataset):
    """Images under ``root/<class>/``; classes are the sorted sub-folder names.

    Files that are not images (by suffix) or that Pillow cannot decode are skipped with a warning at scan time.
    An empty class folder or a missing root raises ``ValueError`` / ``FileNotFoundError`` straight away.
    """

    def __init__(self, root, size: int = 224, classes: list[str] | None = None):
        try:
            from PIL import Image
        except ImportError as err:
            raise ImportError("image folders need Pillow: pip install 'visattn[train]'") from err
        self._image = Image
        self.root, self.size = Path(root), size
        if not self.root.is_dir():
            raise FileNotFoundError(f"no image folder at {self.root} (expected {self.root}/<class>/*.jpg|png)")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else found
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-folders; expected {self.root}/<class>/*.jpg|png")
        self.samples: list[tuple[Path, int]] = []
        self.failed: set[Path] = set()
        self.too_large: list[Path] = []
        skipped = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            good = []
            for f in files:
                if not f.is_file():
                    continue
                if f.suffix.lower() not in IMAGE_SUFFIXES or not self._readable(f):
                    skipped.append(f)
                    continue
                good.append((f, label))
            if not good:
                raise ValueError(f"class folder {folder} has no readable images; remove it or add images")
            self.samples += good
        if skipped:
            shown = ", ".join(str(s) for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
            large = (f" ({len(self.too_large)} of them larger than {MAX_PIXELS:,} pixels; downscale them)"
                     if self.too_large else "")
            warnings.warn(f"skipped {len(skipped)} unreadable or non-image files under {self.root}{large}: {shown}",
                          stacklevel=2)

    def _readable(self, path: Path) -> bool:
        try:
            with self._image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:  # known from the header, before any decoding
                    self.too_large.append(path)
                    return False
                img.load()  # a full decode: catches truncated files that verify() lets through
            return True
        except Exception:  # noqa: BLE001  (any decoding failure means: skip the file)
            return False

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, path: Path) -> torch.Tensor:
        """One image as ``(3, size, size)`` floats in [0, 1] (before normalisation)."""
        return read_image(path, self.size)

    def __getitem__(self, i: int):
        for attempt in range(len(self.samples)):
            path, label = self.samples[(i + attempt) % len(self.samples)]
            try:
                return _normalise(self.load(path)), label
            except Exception as err:  # noqa: BLE001  (a file that no longer decodes: skip it, say so)
                if path not in self.failed:
                    self.failed.add(path)
                    warnings.warn(f"skipping {path}: it no longer decodes ({type(err).__name__}: {err}); "
                                  f"using the next image instead", stacklevel=2)
        raise ValueError(f"no image under {self.root} decodes any more")


def build(data: str | None, split: str, size: int, classes: list[str] | None = None) -> Dataset:
    """The default digits set (``data=None``) or ``data/<split>`` as an image folder (``split``: train / val)."""
    if data is None:
        return digits("train" if split == "train" else "test", size)
    return ImageFolder(Path(data) / split, size, classes)


def num_classes(ds: Dataset) -> int:
    return len(ds.classes) if isinstance(ds, ImageFolder) else int(ds.labels.max()) + 1
