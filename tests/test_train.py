"""visattn train / eval: convergence plumbing, exact resume after SIGKILL and SIGTERM, atomic checkpoints,
DDP over gloo, image folders with bad files, and fast failures on bad arguments."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

import visattn  # noqa: E402
from visattn.app.data import ImageFolder, digits  # noqa: E402
from visattn.app.train import TrainConfig, train  # noqa: E402
from visattn.checkpoint import load_file, save_checkpoint  # noqa: E402

TINY = ["--model", "litv2_s", "--set", "embed_dim=8", "--set", "depths=(1,1,1,1)", "--set", "num_heads=(1,1,2,4)",
        "--set", "drop_path_rate=0.1"]


def cli(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "visattn", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def weights(path):
    return load_file(Path(path) / "checkpoint.pt")["model"]


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and set(a) == set(b)


def test_digits_split_is_fixed_and_disjoint():
    train_ds, test_ds = digits("train", 32), digits("test", 32)
    assert len(train_ds) + len(test_ds) == 1797
    assert train_ds[0][0].shape == (3, 32, 32)
    assert torch.equal(digits("test", 32).labels, test_ds.labels)
    assert set(test_ds.labels.tolist()) == set(range(10))


def test_train_resume_after_sigkill_is_bit_identical(tmp_path):
    common = [*TINY, "--epochs", "3", "--batch-size", "32", "--quiet", "--seed", "3"]
    full = cli("train", *common, "--output", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "visattn", "train", *common, "--output", str(run)])
    ckpt = run / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:  # the first epoch has ended
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    load_file(ckpt)  # whole: written by rename, and its digest matches
    resumed = cli("train", *common, "--output", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(weights(tmp_path / "full"), weights(run))


def test_sigterm_checkpoints_mid_epoch_and_resume_is_bit_identical(tmp_path):
    common = [*TINY, "--epochs", "2", "--batch-size", "16", "--quiet", "--seed", "5"]
    full = cli("train", *common, "--output", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    run = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "visattn", "train", *common, "--output", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "steps.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "SIGTERM: checkpoint saved" in err
    state = load_file(run / "checkpoint.pt")
    assert state["step_in_epoch"] > 0 or state["epoch"] > 0
    resumed = cli("train", *common, "--output", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(weights(tmp_path / "full"), weights(run))


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"x": torch.ones(3)}, path)
    real_save = torch.save

    def broken_save(obj, f):
        if hasattr(f, "getbuffer"):  # the payload in memory
            return real_save(obj, f)
        f.write(b"partial bytes")
        raise KeyboardInterrupt("interrupted midway")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_file(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over loopback")
def test_two_processes_match_one_process(tmp_path):
    common = [*TINY, "--set", "drop_path_rate=0.0", "--epochs", "2", "--batch-size", "32", "--quiet",
              "--log-steps", "5"]
    one = cli("train", *common, "--output", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", "-m", "visattn", "train", *common, "--output",
                          str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Grad strides do not match" not in two.stderr  # depthwise-conv gradients re-strided for DDP's reducer
    steps = [[r["loss"] for r in jsonl(tmp_path / d / "steps.jsonl")] for d in ("one", "two")]
    assert len(steps[0]) == len(steps[1]) == 5
    # same global batches and averaged gradients: the curves agree; not exactly, since BatchNorm normalises with
    # each rank's half batch (SyncBatchNorm is CUDA-only)
    assert abs(steps[0][0] - steps[1][0]) < 1e-2 * steps[0][0]
    assert max(abs(a - b) / a for a, b in zip(*steps, strict=True)) < 0.05
    finals = [jsonl(tmp_path / d / "metrics.jsonl")[-1] for d in ("one", "two")]
    assert finals[1]["world_size"] == 2
    assert abs(finals[0]["val_top1"] - finals[1]["val_top1"]) < 0.1


def make_folder(root, classes=("cat", "dog"), per_class=6, size=40):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def test_image_folder_skips_bad_files_with_a_warning(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 unreadable or non-image files"):
        ds = ImageFolder(root / "train", size=32)
    assert len(ds) == 12 and ds.classes == ["cat", "dog"]
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 0
    cfg = TrainConfig(model="cloformer_xxs", overrides=dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1),
                      num_heads=(2, 2, 4, 8), group_splits=((1, 1), (1, 1), (2, 2), (2, 6))), epochs=1,
                      batch_size=4, output=str(tmp_path / "run"), data=str(root), size=32, quiet=True)
    with pytest.warns(UserWarning):
        metrics = train(cfg)
    assert metrics["epoch"] == 1 and 0 <= metrics["val_top1"] <= 1


def test_bad_arguments_fail_fast_with_clear_messages(tmp_path):
    r = cli("train", "--model", "resnet50", "--output", str(tmp_path / "a"), timeout=60)
    assert r.returncode == 2 and "unknown model 'resnet50'" in r.stderr
    r = cli("train", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "b"), timeout=60)
    assert r.returncode == 2 and "no image folder at" in r.stderr
    root = make_folder(tmp_path / "data", per_class=2)
    (root / "train" / "empty").mkdir()
    r = cli("train", "--data", str(root), "--output", str(tmp_path / "c"), timeout=60)
    assert r.returncode == 2 and "has no readable images" in r.stderr
    r = cli("train", *TINY, "--set", "embed_dims=(1,2)", "--output", str(tmp_path / "d"), timeout=60)
    assert r.returncode == 2 and "does not take ['embed_dims']" in r.stderr
    r = cli("eval", "--checkpoint", str(tmp_path / "nope.pt"), timeout=60)
    assert r.returncode == 2 and "no checkpoint at" in r.stderr


def test_eval_reports_the_training_accuracy(tmp_path):
    run = tmp_path / "run"
    r = cli("train", *TINY, "--epochs", "1", "--batch-size", "64", "--quiet", "--output", str(run))
    assert r.returncode == 0, r.stderr
    logged = jsonl(run / "metrics.jsonl")[-1]["val_top1"]
    r = cli("eval", "--checkpoint", str(run / "checkpoint.pt"))
    assert r.returncode == 0, r.stderr
    assert f"top-1 {logged:.4f}" in r.stdout


def test_model_ema_follows_the_recurrence():
    from visattn.app.train.optim import ModelEMA

    model = torch.nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.9)
    start = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for e, s, p in zip(ema.module.parameters(), start, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * s + 0.1 * p.detach())


def test_bf16_autocast_and_ema_training_and_eval_of_the_ema_weights(tmp_path, bf16):
    run = tmp_path / "run"
    r = cli("train", *TINY, "--epochs", "1", "--batch-size", "64", "--amp", "bf16", "--ema", "0.9", "--quiet",
            "--output", str(run))
    assert r.returncode == 0, r.stderr
    state = load_file(run / "checkpoint.pt")
    assert state["ema"] is not None
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"] if "weight" in k)
    logged = jsonl(run / "metrics.jsonl")[-1]["val_top1"]  # scored with the EMA weights
    r = cli("eval", "--checkpoint", str(run / "checkpoint.pt"), "--ema")
    assert r.returncode == 0 and f"top-1 {logged:.4f}" in r.stdout


def test_eval_and_export_of_an_official_checkpoint(tmp_path):
    from visattn.app.export import build_target
    from visattn.app.weights import load_model

    golden = torch.load(Path(__file__).parent / "fixtures" / "goldens" / "backbone_litv2_cls__e16_d1111__64x64.pt",
                        weights_only=False)
    torch.save({"model": golden["state_dict"]}, tmp_path / "official.pth")
    overrides = {k: v for k, v in golden["kwargs"].items() if k != "img_size"}
    model = load_model(tmp_path / "official.pth", "litv2_s", overrides).model
    exported, layout, name = build_target(model="litv2_s", overrides=overrides, checkpoint=tmp_path / "official.pth")
    assert name == "litv2_s"
    with torch.no_grad():
        torch.testing.assert_close(model(golden["input"]), golden["output"], rtol=1e-5, atol=2e-5)
        torch.testing.assert_close(exported(golden["input"]), golden["output"], rtol=1e-5, atol=2e-5)
    assert layout == "BCHW"
    r = cli("eval", "--checkpoint", str(tmp_path / "official.pth"), "--model", "litv2_s", "--set", "embed_dim=16",
            "--set", "depths=(1,1,1,1)", "--set", "num_heads=(1,2,4,8)", "--set", "num_classes=10", "--size", "64")
    assert r.returncode == 0 and "top-1" in r.stdout, r.stderr
    r = cli("eval", "--checkpoint", str(tmp_path / "official.pth"))
    assert r.returncode == 2 and "name its architecture with --model" in r.stderr


def test_fine_tune_from_an_official_checkpoint_starts_from_its_weights(tmp_path):
    """An official-layout checkpoint of a 7-class model fine-tuned on the 10 digits: with lr=0 the trained
    backbone is exactly the checkpoint's, the classifier is new, and the report says so; then it resumes."""
    golden = torch.load(Path(__file__).parent / "fixtures" / "goldens" / "backbone_litv2_cls__e16_d1111__64x64.pt",
                        weights_only=False)
    sd = dict(golden["state_dict"])
    sd["head.weight"], sd["head.bias"] = torch.randn(7, sd["head.weight"].shape[1]), torch.randn(7)
    torch.save({"model": sd, "epoch": 300}, tmp_path / "official.pth")
    args = ["--model", "litv2_s", "--set", "embed_dim=16", "--set", "depths=(1,1,1,1)", "--set",
            "num_heads=(1,2,4,8)", "--pretrained", str(tmp_path / "official.pth"), "--batch-size", "64", "--lr", "0",
            "--output", str(tmp_path / "run")]
    r = cli("train", *args, "--epochs", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pretrained: loaded" in r.stdout and "classifier re-initialised for 10 classes" in r.stdout
    trained = load_file(tmp_path / "run" / "checkpoint.pt")["model"]
    model = visattn.create_model("litv2_s", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), num_classes=10)
    params = {k for k, _ in model.named_parameters()}
    for k in params - {"head.weight", "head.bias"}:
        assert torch.equal(trained[k], sd[k]), k
    assert trained["head.weight"].shape == (10, 128)
    r = cli("train", *args, "--epochs", "2", "--resume")
    assert r.returncode == 0 and "pretrained: loaded" not in r.stdout, r.stderr[-2000:]
    assert load_file(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2
    r = cli("train", *args[:-2], "--output", str(tmp_path / "bad"), "--pretrained", str(tmp_path / "nope.pth"))
    assert r.returncode == 2 and "--pretrained: no checkpoint at" in r.stderr
