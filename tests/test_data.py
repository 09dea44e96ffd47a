"""Image folders: every Pillow mode becomes correct [0, 1] RGB; broken files are skipped at scan time (a full
decode), and a file that breaks after the scan is skipped mid-epoch with a warning instead of killing the run."""

import io
import warnings

import pytest
import torch

Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")

from visattn.app.data import MEAN, STD, ImageFolder  # noqa: E402


def raw(ds, i):
    """The sample in [0, 1], normalisation undone."""
    x, _ = ds[i]
    return x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)


def folder(tmp_path, images: dict):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    for name, img in images.items():
        img.save(root / "a" / name)
    return root


def test_every_mode_reads_as_its_intensity(tmp_path):
    grey16 = np.full((8, 8), 1000, dtype=np.uint16)  # dark: 1000 / 65535
    images = {
        "00_grey16.png": Image.fromarray(grey16),
        "01_float.tiff": Image.fromarray(np.full((8, 8), 0.25, dtype=np.float32)),
        "02_float_out_of_range.tiff": Image.fromarray(np.full((8, 8), 7.0, dtype=np.float32)),
        "03_int32.tiff": Image.fromarray(np.full((8, 8), 32768, dtype=np.int32)),
        "04_L.png": Image.new("L", (8, 8), 51),
        "05_P.png": Image.new("RGB", (8, 8), (255, 0, 0)).convert("P"),
        "06_CMYK.jpg": Image.new("CMYK", (8, 8), (0, 0, 0, 0)),
        "07_LA.png": Image.new("LA", (8, 8), (102, 10)),
        "08_RGBA.png": Image.new("RGBA", (8, 8), (0, 255, 0, 0)),
        "09_1.png": Image.new("1", (8, 8), 1),
    }
    ds = ImageFolder(folder(tmp_path, images), size=4)
    expected = [(1000 / 65535,) * 3, (0.25,) * 3, (1.0,) * 3, (32768 / 65535,) * 3, (0.2,) * 3, (1.0, 0.0, 0.0),
                (1.0, 1.0, 1.0), (0.4,) * 3, (0.0, 1.0, 0.0), (1.0,) * 3]
    assert [p.name for p, _ in ds.samples] == sorted(images)
    for i, want in enumerate(expected):
        got = raw(ds, i)
        assert got.shape == (3, 4, 4)
        torch.testing.assert_close(got, torch.tensor(want).view(3, 1, 1).expand(3, 4, 4), atol=2e-2, rtol=0,
                                   msg=lambda m, i=i: f"{sorted(images)[i]}: {m}")


def test_truncated_jpeg_is_skipped_at_scan_time(tmp_path):
    buf = io.BytesIO()
    Image.fromarray((np.random.rand(64, 64, 3) * 255).astype(np.uint8)).save(buf, "JPEG")
    good = {"good.png": Image.new("RGB", (8, 8), (10, 20, 30))}
    root = folder(tmp_path, good)
    (root / "a" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with Image.open(root / "a" / "truncated.jpg") as img:
        img.verify()  # what the scan used to do: this passes
    with pytest.warns(UserWarning, match="skipped 1 unreadable or non-image files.*truncated.jpg"):
        ds = ImageFolder(root, size=4)
    assert [p.name for p, _ in ds.samples] == ["good.png"]


def test_a_file_that_breaks_after_the_scan_is_skipped_with_a_warning(tmp_path):
    images = {f"{i}.png": Image.new("L", (8, 8), 40 * i) for i in range(3)}
    root = folder(tmp_path, images)
    ds = ImageFolder(root, size=4)
    (root / "a" / "1.png").write_bytes(b"gone")
    with pytest.warns(UserWarning, match="skipping .*1.png: it no longer decodes"):
        x = raw(ds, 1)
    torch.testing.assert_close(x, torch.full((3, 4, 4), 80 / 255), atol=1e-3, rtol=0)  # the next image
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once
        raw(ds, 1)
