"""``visattn explain`` on a digits checkpoint (the default small model of ``visattn train``): predictions printed, the
figures written, within a minute on 2 threads; errors name the fix."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from visattn.app.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One epoch of the default digits run (the model a user's ``visattn train`` builds) and a held-out digit."""
    from PIL import Image

    from visattn.app.data import digits
    from visattn.app.train import TrainConfig, train

    root = tmp_path_factory.mktemp("explain")
    train(TrainConfig(epochs=1, batch_size=64, quiet=True, output=str(root / "runs" / "digits"), threads="2"))
    held_out = digits("test", 32)
    image = root / "digit.png"
    Image.fromarray((held_out.images[3] * 255).round().byte().numpy()).save(image)
    return root / "runs" / "digits" / "checkpoint.pt", image, int(held_out.labels[3])


def test_explain_prints_the_predictions_and_writes_the_figures_in_under_a_minute(digits_run, tmp_path):
    """The whole command in a fresh process on 2 threads, imports included (the time the README promises)."""
    checkpoint, image, _ = digits_run
    out = tmp_path / "figures"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "visattn", "explain", str(image), "--checkpoint", str(checkpoint),
                           "--output", str(out), "--topk", "4", "--point", "2,3", "--threads", "2"],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert seconds < 60, f"visattn explain took {seconds:.1f} s"
    lines = done.stdout.splitlines()
    ranks = [line.split() for line in lines if line.strip()[:2] in {f"{i}." for i in range(1, 5)}]
    assert [r[0] for r in ranks] == ["1.", "2.", "3.", "4."]
    probs = [float(r[2]) for r in ranks]
    assert probs == sorted(probs, reverse=True) and all(r[1] in [str(i) for i in range(10)] for r in ranks)
    from matplotlib.image import imread

    for name in ("gradcam", "attention", "distance", "hilo"):  # the default model has HiLo in stage 3
        path = out / f"{name}.png"
        assert f"wrote {path}" in lines and imread(path).shape[2] in (3, 4) and path.stat().st_size < 200_000


def test_query_points_are_image_pixels(digits_run):
    from visattn.app.explain import _points

    _, image, _ = digits_run  # an 8 x 8 digit, read at 32 x 32
    assert _points([(2.0, 6.0)], image, 32, torch.zeros(32, 32)) == [(8.0, 24.0)]
    cam = torch.zeros(32, 32)
    cam[5, 9] = 1
    assert _points(None, image, 32, cam) == [(15.5, 15.5), (5.0, 9.0)]  # the centre and the Grad-CAM peak
    with pytest.raises(ValueError, match="outside the 8x8 image"):
        _points([(8.0, 0.0)], image, 32, cam)


def test_explain_errors_name_the_fix(digits_run, tmp_path, capsys):
    checkpoint, image, _ = digits_run
    assert main(["explain", str(image)]) == 2
    assert "--checkpoint run/checkpoint.pt" in capsys.readouterr().err
    assert main(["explain", str(image), "--checkpoint", str(checkpoint), "--pretrained", "--model", "litv2_s"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "none.png"), "--checkpoint", str(checkpoint)]) == 2
    assert "no image at" in capsys.readouterr().err
    assert main(["explain", str(image), "--checkpoint", str(checkpoint), "--stage", "7",
                 "--output", str(tmp_path)]) == 2
    assert "out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explain", str(image), "--checkpoint", str(checkpoint), "--point", "3"])
    assert "--point takes Y,X" in capsys.readouterr().err


def test_official_weights_use_imagenet_normalisation_and_class_indices(digits_run, tmp_path, capsys, monkeypatch):
    """--model NAME --pretrained: the variant's size, ImageNet mean and std, classes printed as indices."""
    from tiny_models import tiny

    import visattn.app.explain as explain

    model = tiny("cloformer_xxs", img_size=64).eval()
    seen = {}

    def fake_create_model(name, pretrained=None):
        seen.update(name=name, pretrained=pretrained)
        return model

    monkeypatch.setattr(explain, "create_model", fake_create_model)
    inputs = []
    model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach()))
    _, image, _ = digits_run
    assert main(["explain", str(image), "--model", "cloformer_xxs", "--pretrained", "--output", str(tmp_path),
                 "--topk", "2"]) == 0
    assert seen == dict(name="cloformer_xxs", pretrained=True)
    out = capsys.readouterr().out
    assert "1. class " in out and "2. class " in out and "(64x64)" in out
    from visattn.app.data import read_image

    pixels = read_image(image, 64)
    mean, std = torch.tensor(explain.IMAGENET_MEAN)[:, None, None], torch.tensor(explain.IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(inputs[0][0], (pixels - mean) / std)
    assert main(["explain", str(image), "--model", "cloformer_xxs", "--pretrained", "--ema"]) == 2
    assert "--ema applies to training checkpoints" in capsys.readouterr().err
