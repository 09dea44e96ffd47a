"""A run is never lost nor silently wrong: --overwrite keeps the old run until the new one has a checkpoint,
non-finite pixels and losses, resume with other options, the seal, full disks, the run-folder lock, big images,
eval on the wrong data. Training runs in-process (TrainConfig) on a tiny model to stay fast."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")

from visattn.app import data as datasets  # noqa: E402
from visattn.app.train import TrainConfig, train  # noqa: E402
from visattn.app.train.state import RunFolder  # noqa: E402
from visattn.checkpoint import load_file, save_checkpoint  # noqa: E402

TINY = dict(model="litv2_s", overrides=dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4)))


def config(out, **kw):
    return TrainConfig(**{**TINY, "epochs": 1, "batch_size": 64, "quiet": True, "output": str(out), **kw})


def strict_jsonl(path):
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")
    return [json.loads(line, parse_constant=no_constants) for line in Path(path).read_text().splitlines()]


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path):
    run = tmp_path / "r"
    train(config(run))
    before = {f: (run / f).read_bytes() for f in ("checkpoint.pt", "metrics.jsonl")}
    with pytest.raises(FileNotFoundError, match="no image folder"):
        train(config(run, overwrite=True, data=str(tmp_path / "typo_dir")))
    assert {f: (run / f).read_bytes() for f in before} == before  # the old run is back, untouched
    assert not (run / ".overwritten").exists()
    train(config(run, overwrite=True, seed=1))
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1 and not (run / ".overwritten").exists()
    assert (run / "checkpoint.pt").read_bytes() != before["checkpoint.pt"]


def test_an_overwrite_killed_before_its_first_checkpoint_is_undone(tmp_path):
    run = tmp_path / "r"
    train(config(run))
    before = (run / "checkpoint.pt").read_bytes()
    folder = RunFolder(run, resume=False, overwrite=True)  # what a run killed -9 right after starting leaves
    assert not (run / "checkpoint.pt").exists() and (run / ".overwritten" / "checkpoint.pt").exists()
    folder._lock.close()  # the process dies: its lock goes, nothing is restored by it
    RunFolder(run, resume=True, overwrite=False).release()  # the next run on the folder puts the old run back
    assert (run / "checkpoint.pt").read_bytes() == before


def nan_tiff_folder(root, n=9):
    """Float TIFFs (mode F) in two classes; the first image of class a holds one NaN and one +inf."""
    g = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                arr = g.random((24, 20), dtype=np.float32)
                if split == "train" and c == "a" and i == 0:
                    arr[5, 7], arr[10, 3] = np.nan, np.inf
                Image.fromarray(arr).save(root / split / c / f"{i}.tif")
    return root


def test_non_finite_pixels_are_read_as_finite_values(tmp_path):
    root = nan_tiff_folder(tmp_path / "d")
    ds = datasets.ImageFolder(root / "train", size=16)
    x, _ = ds[0]
    assert torch.isfinite(x).all()
    raw = ds.load(ds.samples[0][0])  # NaN -> 0, +inf -> 1, before resizing: neighbours keep their values
    assert float(raw.min()) >= 0.0 and float(raw.max()) <= 1.0
    run = tmp_path / "run"
    metrics = train(config(run, data=str(root), size=32, batch_size=6))
    state = load_file(run / "checkpoint.pt")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert strict_jsonl(run / "metrics.jsonl")[0]["skipped_steps"] == 0 and metrics["train_loss"] > 0


def test_a_non_finite_loss_skips_its_step_with_a_warning(tmp_path, monkeypatch):
    """A batch that yields a NaN loss (here: a NaN image fed past the reader) leaves the weights unchanged."""
    real = datasets.digits

    def poisoned(split, size=32, holdout=0.2):
        ds = real(split, size, holdout)
        if split == "train":
            ds.images[:64] = float("nan")  # the first batch in data order holds NaN images
        return ds

    monkeypatch.setattr(datasets, "digits", poisoned)
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="the loss is not finite.*the step is skipped"):
        metrics = train(config(run, batch_size=32))
    assert metrics["skipped_steps"] >= 1
    state = load_file(run / "checkpoint.pt")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    for line in strict_jsonl(run / "metrics.jsonl") + strict_jsonl(run / "steps.jsonl"):
        assert all(v is None or isinstance(v, (int, float, str)) for v in line.values())


def test_resume_refuses_other_options_and_lets_epochs_grow(tmp_path):
    run = tmp_path / "run"
    train(config(run, batch_size=128))
    for change in (dict(batch_size=64), dict(seed=4), dict(lr=1e-3)):
        with pytest.raises(ValueError, match="--resume continues the stored run, which was started with --"):
            train(config(run, resume=True, **{"batch_size": 128, **change}))
    metrics = train(config(run, batch_size=128, resume=True, epochs=2))
    assert metrics["epoch"] == 2
    with pytest.raises(ValueError, match="fewer than the 2 epochs"):
        train(config(run, batch_size=128, resume=True, epochs=1))


def test_resume_does_not_repeat_log_lines_written_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(config(run, batch_size=128, log_steps=100))
    steps = (run / "steps.jsonl").read_text()
    with open(run / "steps.jsonl", "a") as f:  # a run killed after logging steps past its last checkpoint
        f.write(json.dumps(dict(step=999, loss=1.0)) + "\n")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(dict(epoch=2, step=999)) + "\n")
    train(config(run, batch_size=128, log_steps=100, resume=True, epochs=2))
    lines = strict_jsonl(run / "steps.jsonl")
    assert [r["step"] for r in lines] == sorted({r["step"] for r in lines}) and 999 not in [r["step"] for r in lines]
    assert (run / "steps.jsonl").read_text().startswith(steps)
    assert [r["epoch"] for r in strict_jsonl(run / "metrics.jsonl")] == [1, 2]


def test_the_seal_covers_its_own_fields_and_refuses_cleanly(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"x": torch.ones(3)}, path)
    obj = torch.load(path, weights_only=True)
    damaged = {("visattn_sealed_checkpoinT" if k == "visattn_sealed_checkpoint" else k): v for k, v in obj.items()}
    torch.save(damaged, path)  # one flipped bit in the seal's key
    with pytest.raises(ValueError, match="damaged visattn checkpoint"):
        load_file(path)
    import hashlib
    import io

    from visattn import checkpoint as ck
    junk = b"not a pickle at all"  # a payload whose digest is right but that does not unpickle
    torch.save({ck._SEAL: 1, "sha256": ck._digest(junk), "payload": torch.frombuffer(bytearray(junk),
                                                                                   dtype=torch.uint8)}, path)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_file(path)
    old = io.BytesIO()  # a file sealed by the previous version (digest of the payload alone) still loads
    torch.save({"x": torch.ones(2)}, old)
    data = old.getvalue()
    torch.save({ck._SEAL: 1, "sha256": hashlib.sha256(data).hexdigest(),
                "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}, path)
    assert torch.equal(load_file(path)["x"], torch.ones(2))


def test_resume_refuses_an_unsealed_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(config(run))
    state = load_file(run / "checkpoint.pt")
    torch.save(state, run / "checkpoint.pt")  # same content, not sealed (not written by visattn train)
    with pytest.raises(ValueError, match="not a sealed visattn training checkpoint"):
        train(config(run, resume=True, epochs=2))


def test_a_failed_write_says_what_is_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"x": torch.ones(3)}, path)
    real_save = torch.save

    def full_disk(obj, f):
        if hasattr(f, "getbuffer"):
            return real_save(obj, f)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write the checkpoint of epoch 3 to .*the previous file there is "
                                      r"intact"):
        save_checkpoint({"x": torch.zeros(3)}, path, what="the checkpoint of epoch 3")
    monkeypatch.undo()
    assert torch.equal(load_file(path)["x"], torch.ones(3)) and [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ")
def test_a_file_size_limit_during_a_checkpoint_ends_in_a_clear_message(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"x": torch.ones(4)}, path)
    code = ("import resource, signal, sys, torch\n"
            "from visattn.checkpoint import save_checkpoint\n"
            "from visattn.app.common import exit_code\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            f"sys.exit(exit_code('train', lambda: save_checkpoint({{'x': torch.zeros(100000)}}, {str(path)!r}, "
            "what='the checkpoint of epoch 2')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "could not write the checkpoint of epoch 2" in proc.stderr and "File too large" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert torch.equal(load_file(path)["x"], torch.ones(4))


def test_the_lock_file_is_never_truncated_nor_unlinked(tmp_path):
    first = RunFolder(tmp_path / "r", resume=False, overwrite=False)
    owner = (tmp_path / "r" / ".lock").read_text()
    assert owner == f"{os.getpid()}\n"
    with pytest.raises(ValueError, match="in use by another visattn train run"):
        RunFolder(tmp_path / "r", resume=False, overwrite=False)
    assert (tmp_path / "r" / ".lock").read_text() == owner  # the refused attempt wrote nothing
    first.release()
    assert (tmp_path / "r" / ".lock").exists()
    RunFolder(tmp_path / "r", resume=False, overwrite=False).release()


def test_stale_temporary_checkpoints_are_removed_when_a_run_takes_the_folder(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / ".checkpoint.pt.tmp-12345").write_bytes(b"")  # a writer killed -9 mid-write
    RunFolder(run, resume=False, overwrite=False).release()
    assert not (run / ".checkpoint.pt.tmp-12345").exists()


def test_huge_images_are_skipped_at_scan_and_digits_upsample_lazily(tmp_path, monkeypatch):
    root = tmp_path / "d" / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(root / c / "ok.png")
    Image.new("L", (300, 200)).save(root / "a" / "big.png")
    monkeypatch.setattr(datasets, "MAX_PIXELS", 300 * 200 - 1)
    with pytest.warns(UserWarning, match="larger than 59,999 pixels"):
        ds = datasets.ImageFolder(root, size=16)
    assert len(ds) == 2
    big = datasets.digits("train", 1024)  # 22 GB if upsampled eagerly; one image at a time here
    assert big.images.shape[1:] == (8, 8) and big[0][0].shape == (3, 1024, 1024)


def test_eval_refuses_data_the_checkpoint_was_not_trained_on(tmp_path):
    run = tmp_path / "run"
    train(config(run))  # digits: 10 classes without names
    root = tmp_path / "d"
    for split in ("train", "val"):
        for c in ("x", "y"):
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(root / split / c / "0.png")
    from visattn.app.cli import main

    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--data", str(root)]) == 2
