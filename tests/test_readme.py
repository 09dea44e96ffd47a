"""The README's examples run, and .ci/run runs the README's test command verbatim."""

import re
from pathlib import Path

import pytest

import visattn

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


CORE = [b for b in blocks("python") if "visattn.integrations" not in b and "runs/digits" not in b]
TRAINED = [b for b in blocks("python") if "runs/digits" in b]  # needs a training run: test_trained_model_recipe
INTEGRATIONS = [b for b in blocks("python") if "visattn.integrations" in b]  # run by tests/integration


@pytest.mark.parametrize("code", CORE, ids=lambda c: c.strip().splitlines()[-1][:40])
def test_readme_python_examples_run(code):
    exec(compile(code, "README.md", "exec"), {})


def test_trained_model_recipe(tmp_path, monkeypatch):
    """The README's load_checkpoint example, as written, after a short training run in a scratch folder."""
    pytest.importorskip("sklearn")
    from visattn.app.data import digits
    from visattn.app.train import TrainConfig, train

    monkeypatch.chdir(tmp_path)
    train(TrainConfig(model="litv2_s", overrides=dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4)),
                      epochs=2, batch_size=64, quiet=True, output="runs/digits"))
    image = digits("test", 32).images[0]  # a held-out digit as a PNG, as a user's file would be
    from PIL import Image

    (tmp_path / "examples").mkdir()
    Image.fromarray((image * 255).byte().numpy()).save(tmp_path / "examples" / "digit.png")
    assert len(TRAINED) == 1
    scope = {}
    exec(compile(TRAINED[0], "README.md", "exec"), scope)
    trained = scope["trained"]
    assert trained.classes == [str(i) for i in range(10)] and trained.input_size == 32
    assert not trained.model.training and scope["logits"].shape == (1, 10)
    top = trained.predict(tmp_path / "examples" / "digit.png", topk=3)
    assert len(top) == 3 and abs(sum(p for _, p in top) - 1) <= 1 and top[0][1] >= top[1][1]
    with pytest.raises(ValueError, match="not a visattn training checkpoint"):
        import torch

        torch.save(trained.model.state_dict(), tmp_path / "plain.pt")
        visattn.load_checkpoint(tmp_path / "plain.pt")


def test_integration_examples_are_shown():
    assert len(INTEGRATIONS) == 5  # YOLO, timm, smp, torchvision, mmdet config


def test_ci_runs_the_readme_test_command():
    commands = [line for b in blocks("bash") for line in b.splitlines() if line and not line.startswith("#")]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
