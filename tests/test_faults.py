"""Runs under faults: signals to the whole process group (data-loader workers included), Ctrl-C, a second run on
the same folder, corrupted / truncated / empty / foreign checkpoint files, and nonsense arguments."""

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
from visattn.checkpoint import load_file, save_checkpoint  # noqa: E402

TINY = ["--model", "litv2_s", "--set", "embed_dim=8", "--set", "depths=(1,1,1,1)", "--set", "num_heads=(1,1,2,4)"]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "visattn", *args], capture_output=True, text=True, timeout=timeout)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "visattn", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for(path: Path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert path.exists(), proc.communicate()[1][-2000:]


@pytest.mark.parametrize("sig,workers", [(signal.SIGTERM, 2), (signal.SIGINT, 0)], ids=["sigterm-group-workers",
                                                                                         "sigint"])
def test_a_signal_to_the_process_group_still_ends_in_a_checkpoint(tmp_path, sig, workers):
    run = tmp_path / "run"
    common = [*TINY, "--epochs", "3", "--batch-size", "16", "--quiet", "--workers", str(workers)]
    proc = start("train", *common, "--output", str(run))
    wait_for(run / "steps.jsonl", proc)
    time.sleep(0.3)
    os.killpg(proc.pid, sig)  # what Slurm (SIGTERM) and a terminal's Ctrl-C (SIGINT) do: the whole group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"{signal.Signals(sig).name}: checkpoint saved" in err
    state = load_file(run / "checkpoint.pt")
    assert state["step"] > 0
    resumed = cli("train", *common, "--output", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_file(run / "checkpoint.pt")["epoch"] == 3


def test_a_folder_holding_a_run_is_not_reused_by_accident(tmp_path):
    run = tmp_path / "run"
    common = [*TINY, "--epochs", "1", "--batch-size", "64", "--quiet"]
    assert cli("train", *common, "--output", str(run)).returncode == 0
    before = (run / "checkpoint.pt").read_bytes()
    again = cli("train", *common, "--output", str(run))
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--resume" in again.stderr
    assert (run / "checkpoint.pt").read_bytes() == before
    assert cli("train", *common, "--output", str(run), "--resume", "--overwrite").returncode == 2
    fresh = cli("train", *common, "--output", str(run), "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # not appended to the old run's log


def test_a_running_run_locks_its_folder(tmp_path):
    run = tmp_path / "run"
    first = start("train", *TINY, "--epochs", "50", "--batch-size", "16", "--quiet", "--output", str(run))
    try:
        wait_for(run / "steps.jsonl", first)
        second = cli("train", *TINY, "--epochs", "1", "--output", str(run), "--resume")
        assert second.returncode == 2 and "in use by another visattn train run" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()


def test_a_failed_run_leaves_no_empty_folder(tmp_path):
    r = cli("train", *TINY, "--set", "embed_dim=-4", "--output", str(tmp_path / "new"))
    assert r.returncode == 2 and not (tmp_path / "new").exists()


def corrupt_files(tmp_path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.randn(1000)}, "model_name": "litv2_s"}, good)
    data = bytearray(good.read_bytes())
    flipped = tmp_path / "flipped.pt"
    data[len(data) // 2] ^= 0xFF  # inside the tensor payload
    flipped.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    return dict(flipped=flipped, truncated=truncated, empty=empty, text=text)


def test_bad_checkpoint_files_give_one_clear_error_everywhere(tmp_path, capsys):
    from visattn.app.cli import main

    files = corrupt_files(tmp_path)
    messages = dict(flipped="is corrupted", truncated="not a readable checkpoint", empty="is empty",
                    text="not a readable checkpoint")
    model = visattn.create_model("litv2_s", embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4))
    for kind, path in files.items():
        with pytest.raises(ValueError, match=messages[kind]) as err:
            visattn.load_official(model, path)
        assert str(path) in str(err.value)
        for command in (["eval", "--checkpoint", str(path)], ["export", "--checkpoint", str(path), "--output",
                                                               str(tmp_path / "x.onnx")]):
            code = main(command)  # in process: a raised error fails the test
            err = capsys.readouterr().err
            assert code == 2 and messages[kind] in err, err
    run = tmp_path / "run"
    run.mkdir()
    files["flipped"].replace(run / "checkpoint.pt")
    code = main(["train", *TINY, "--output", str(run), "--resume"])
    assert code == 2 and "is corrupted" in capsys.readouterr().err
    assert (run / "checkpoint.pt").exists()  # left in place


def test_eval_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    torch.save({"model": {"other.weight": torch.zeros(3)}}, tmp_path / "foreign.pth")
    r = cli("eval", "--checkpoint", str(tmp_path / "foreign.pth"), "--model", "litv2_s", "--set", "embed_dim=8",
            "--set", "depths=(1,1,1,1)", "--set", "num_heads=(1,1,2,4)", timeout=120)
    assert r.returncode == 2 and "does not fit litv2_s (0 tensors matched)" in r.stderr and "top-1" not in r.stdout
    r = cli("eval", "--checkpoint", str(tmp_path / "foreign.pth"), "--model", "litv2_s", "--set", "embed_dim=8",
            "--set", "depths=(1,1,1,1)", "--set", "num_heads=(1,1,2,4)", "--allow-partial", timeout=120)
    assert r.returncode == 0 and "top-1" in r.stdout and "warning:" in r.stderr and "not in the file" in r.stderr


def test_nonsense_arguments_are_rejected_up_front(tmp_path, capsys):
    from visattn.app.cli import main

    out = str(tmp_path / "x")
    for args, message in [(["--ema", "1.5"], "--ema must be in [0, 1)"), (["--clip-grad", "nan"], "--clip-grad"),
                          (["--size", "0"], "--size must be >= 1"), (["--lr", "-1"], "--lr"),
                          (["--set", "num_classes=5"], "--set num_classes=... is not for training"),
                          (["--set", "embed_dim=-4"], "embed_dim must be >= 1"),
                          (["--set", "mlp_ratio=nan"], "mlp_ratio must be a finite number > 0"),
                          (["--set", "num_heads=(0,1,2,4)"], "num_heads"),
                          (["--set", "depths=(1,1)"], "one entry per stage")]:
        code = main(["train", *TINY, *args, "--output", out])  # in process: a raised error fails the test
        err = capsys.readouterr().err
        assert code == 2 and message in err, (args, err[-800:])
    assert not Path(out).exists()  # rejected before the run folder was made
    for bad in (float("nan"), -1.0, "0.1"):
        with pytest.raises((ValueError, TypeError), match="qk_scale"):
            visattn.HiLoAttention(16, 4, qk_scale=bad)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        visattn.create_model("volo_d1", num_classes=-1)


def test_export_of_a_training_checkpoint_needs_no_model_and_refuses_a_contradiction(tmp_path):
    run = tmp_path / "run"
    assert cli("train", *TINY, "--epochs", "1", "--batch-size", "64", "--quiet", "--output", str(run)).returncode == 0
    r = cli("export", "--checkpoint", str(run / "checkpoint.pt"), "--output", str(tmp_path / "m.onnx"),
            "--size", "32", "--verify", "40x36", timeout=600)
    assert r.returncode == 0 and "exported litv2_s" in r.stdout and "ok" in r.stdout, r.stderr[-2000:]
    r = cli("export", "--checkpoint", str(run / "checkpoint.pt"), "--model", "volo_d1", "--output",
            str(tmp_path / "v.onnx"), timeout=120)
    assert r.returncode == 2 and "training checkpoint of 'litv2_s', not 'volo_d1'" in r.stderr


def test_resume_with_other_model_options_is_refused_clearly(tmp_path):
    run = tmp_path / "run"
    assert cli("train", *TINY, "--epochs", "1", "--batch-size", "64", "--quiet", "--output", str(run)).returncode == 0
    r = cli("train", *TINY, "--set", "embed_dim=16", "--epochs", "2", "--output", str(run), "--resume")
    assert r.returncode == 2 and "does not fit this run" in r.stderr and "Traceback" not in r.stderr
