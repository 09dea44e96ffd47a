"""The commands on a busy machine and in any folder: the benchmark's statistics and plot never fail on noisy
samples and say when the machine was noisy; thread defaults that follow the idle cores; the licence; hints."""

import json
import os
from pathlib import Path

import pytest
import torch

from visattn.app import common
from visattn.app.cli import main

ROOT = Path(__file__).resolve().parents[1]


def row(name, mode, speedup, lo, hi, size=(8, 8), batch=1):
    return dict(kind="block", name=name, size=size, batch=batch, mode=mode, label="fast", impl="fast",
                speedup=speedup, speedup_lo=lo, speedup_hi=hi, mem_ratio=0.5)


def test_plot_survives_wild_spreads_and_keeps_its_axis(tmp_path):
    pytest.importorskip("matplotlib")
    from visattn.app.report import write_plot

    rows = [row("hilo", "fwd", 1.5, 1.7, 1.4),  # p25/p75 crossed over by noise: negative error bars before
            row("dilated", "fwd", 2.0, 1.0, 100.0),  # one wild spread
            row("clo", "fwd", 1.2, 1.1, 1.3), row("outlook", "fwd", 2.5, 2.2, 2.7)]
    assert write_plot(rows, tmp_path / "p.png", noisy=True)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_quartiles_stay_within_the_samples():
    import statistics

    from visattn.app.timing import measure_group  # noqa: F401  (the statistics used there)

    for samples in ([1.0, 9.0], [5.0, 1.0, 2.0]):
        q = statistics.quantiles(samples, n=4, method="inclusive")
        assert min(samples) <= q[0] <= q[2] <= max(samples)


def test_bench_reports_the_machine_and_warns_when_noisy(tmp_path, capsys, monkeypatch):
    from visattn.app import bench

    noisy = dict(load_1min=3.5, cores=2, threads=1, calibration_ms=5.0, calibration_spread=1.6, noisy=True)
    monkeypatch.setattr(bench, "machine_noise", lambda: noisy)
    assert main(["bench", "--blocks", "hilo", "--sizes", "8", "--batch", "1", "--mode", "fwd", "--repeat", "2",
                 "--warmup", "0", "--threads", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: the machine was busy or noisy" in out and "calibration spread p75/p25 1.60" in out
    meta = json.loads((tmp_path / "bench.json").read_text())["machine"]
    assert meta["noisy"] is True and meta["noise_before"]["load_1min"] == 3.5 and meta["threads"] == 1


def test_thread_defaults_follow_the_idle_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for load, expected in ((0.1, 4), (1.2, 3), (3.6, 1), (9.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert common.choose_threads("auto") == expected, load
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the cores
    assert common.choose_threads("auto") == 2
    assert common.choose_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's setting wins
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert common.choose_threads("auto") == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(Exception, match="expected a finite number"):
        common.threads_arg("0")


def test_commands_take_threads(tmp_path, capsys):
    pytest.importorskip("sklearn")
    before = torch.get_num_threads()
    try:
        from visattn.app.train import TrainConfig, train

        train(TrainConfig(model="litv2_s", overrides=dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4)),
                          epochs=1, batch_size=128, output=str(tmp_path / "run"), threads="1"))
        assert "1 CPU thread (1)" in capsys.readouterr().out and torch.get_num_threads() == 1
        torch.set_num_threads(1)
        assert main(["eval", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 1  # a command called in-process leaves the count as it found it
        with pytest.raises(ValueError, match="--threads must be auto or a positive number"):
            TrainConfig(threads="many").check()
    finally:
        torch.set_num_threads(before)


def test_a_pretrained_file_of_another_model_suggests_model(tmp_path):
    pytest.importorskip("sklearn")
    import visattn
    from visattn.app.train import TrainConfig, train

    torch.save({"model": visattn.create_model("cloformer_xxs", num_classes=10,
                                              embed_dims=(8, 16, 32, 64)).state_dict()}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="Pass --model with the checkpoint's variant"):
        train(TrainConfig(pretrained=str(tmp_path / "other.pth"), epochs=1, output=str(tmp_path / "run"),
                          quiet=True))


def test_licence_matches_the_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()


def test_every_option_says_what_it_does():
    from visattn.app.cli import build_parser

    parser = build_parser()
    missing = [(name, a.option_strings) for action in parser._subparsers._group_actions
               for name, sub in action.choices.items() for a in sub._actions
               if a.dest != "help" and not a.help]
    assert missing == []
