"""The bf16 SIGILL guard: the probe recognises a process killed by SIGILL, and both outcomes of the probe (fault
or not, remedy helps or not) lead to the right action, in the library and in the commands."""

import os

import pytest

from visattn.app import cpu_bf16
from visattn.app.cli import main

KILL_WITH_SIGILL = "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n"


def test_probe_sees_a_real_sigill_and_a_healthy_run():
    assert cpu_bf16.probe(code=KILL_WITH_SIGILL) == "SIGILL"
    assert cpu_bf16.probe(code="print('fine')") == "ok"
    assert cpu_bf16.probe(code="raise SystemExit('broken')").startswith("failed: broken")


def faulty_host(remedy_helps: bool):
    """A stand-in for the probe on a host with the fault: bf16 crashes unless the remedy is in the environment."""
    calls = []

    def fake(env=None, code=cpu_bf16.PROBE_CODE):
        env = os.environ if env is None else env
        calls.append(env.get(cpu_bf16.ISA_VARIABLE))
        fixed = env.get(cpu_bf16.ISA_VARIABLE) == cpu_bf16.SAFE_ISA and remedy_helps
        return "ok" if fixed else "SIGILL"
    return fake, calls


def test_healthy_host_changes_nothing(monkeypatch):
    monkeypatch.delenv(cpu_bf16.ISA_VARIABLE, raising=False)
    assert cpu_bf16.ensure_bf16_matmul(lambda env=None: "ok") is None
    assert cpu_bf16.ISA_VARIABLE not in os.environ


def test_faulty_host_gets_the_remedy_and_is_told(monkeypatch):
    monkeypatch.delenv(cpu_bf16.ISA_VARIABLE, raising=False)
    fake, calls = faulty_host(remedy_helps=True)
    message = cpu_bf16.ensure_bf16_matmul(fake)
    assert "SIGILL" in message and "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16" in message
    assert os.environ[cpu_bf16.ISA_VARIABLE] == cpu_bf16.SAFE_ISA
    assert calls == [None, cpu_bf16.SAFE_ISA]


def test_faulty_host_without_remedy_gets_a_clear_error(monkeypatch):
    monkeypatch.delenv(cpu_bf16.ISA_VARIABLE, raising=False)
    fake, _ = faulty_host(remedy_helps=False)
    with pytest.raises(cpu_bf16.Bf16Unavailable, match="crash this CPU.*use float32"):
        cpu_bf16.ensure_bf16_matmul(fake)
    assert cpu_bf16.ISA_VARIABLE not in os.environ
    monkeypatch.setenv(cpu_bf16.ISA_VARIABLE, "AVX2")  # the user's own setting is not overridden
    with pytest.raises(cpu_bf16.Bf16Unavailable, match="even with ONEDNN_MAX_CPU_ISA=AVX2"):
        cpu_bf16.ensure_bf16_matmul(fake)


BENCH = ["bench", "--blocks", "hilo", "--sizes", "6", "--batch", "1", "--mode", "fwd", "--repeat", "1",
         "--warmup", "0", "--dtype", "bfloat16", "--no-plot"]


def test_bench_on_a_simulated_faulty_host(monkeypatch, tmp_path, capsys, bf16):
    monkeypatch.delenv(cpu_bf16.ISA_VARIABLE, raising=False)
    fake, _ = faulty_host(remedy_helps=True)
    monkeypatch.setattr(cpu_bf16, "probe", fake)
    assert main([*BENCH, "--out", str(tmp_path)]) == 0
    assert "warning: bfloat16 matrix products crash this CPU" in capsys.readouterr().err
    assert os.environ[cpu_bf16.ISA_VARIABLE] == cpu_bf16.SAFE_ISA
    monkeypatch.delenv(cpu_bf16.ISA_VARIABLE)
    monkeypatch.setattr(cpu_bf16, "probe", faulty_host(remedy_helps=False)[0])
    with pytest.raises(SystemExit) as stop:
        main([*BENCH, "--out", str(tmp_path)])
    assert stop.value.code == 2 and "use float32" in capsys.readouterr().err


def test_train_refuses_bf16_where_it_cannot_run(monkeypatch, tmp_path, capsys):
    pytest.importorskip("sklearn")
    monkeypatch.delenv(cpu_bf16.ISA_VARIABLE, raising=False)
    monkeypatch.setattr(cpu_bf16, "probe", faulty_host(remedy_helps=False)[0])
    assert main(["train", "--amp", "bf16", "--device", "cpu", "--output", str(tmp_path / "run")]) == 2
    assert "use float32" in capsys.readouterr().err and not (tmp_path / "run").exists()
