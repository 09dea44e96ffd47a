"""A guard against a host fault: on some virtual machines whose CPU advertises AMX, the first bfloat16 matrix
product on the CPU kills the process with SIGILL (oneDNN picks AMX instructions the hypervisor does not allow).

``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` avoids it, but only if it is in the environment before the process's first
oneDNN call. :func:`ensure_bf16_matmul` finds out in a throw-away subprocess whether bf16 products survive here,
and if they only survive with the setting, sets it for this process (which must not have run a matrix product yet)
and says so. A process that cannot be made safe gets a clear error instead of a crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

ISA_VARIABLE, SAFE_ISA = "ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16"
PROBE_CODE = ("import torch\n"
              "a = torch.randn(64, 64, dtype=torch.bfloat16)\n"
              "(a @ a).sum().item(); torch.nn.functional.linear(a, a).sum().item()\n")


def probe(env: dict | None = None, code: str = PROBE_CODE, timeout: float = 180) -> str:
    """Run ``code`` (by default: bf16 products on the CPU) in a subprocess; ``"ok"``, ``"SIGILL"`` (or the name of
    another fatal signal), or ``"failed: ..."``."""
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "failed: the probe timed out"
    if done.returncode == 0:
        return "ok"
    if done.returncode < 0:
        return signal.Signals(-done.returncode).name
    return "failed: " + (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1][:200]


class Bf16Unavailable(ValueError):
    """bfloat16 matrix products crash on this CPU and the known remedy does not help."""


def ensure_bf16_matmul(run_probe=None) -> str | None:
    """Make bf16 CPU matrix products safe for this process; returns a message for the user when something had to
    be done (None when they work as they are). Call it before the first matrix product of the process.
    ``run_probe(env)`` defaults to :func:`probe`."""
    run_probe = run_probe or probe
    first = run_probe(None)
    if first == "ok":
        return None
    if os.environ.get(ISA_VARIABLE):
        raise Bf16Unavailable(f"bfloat16 matrix products crash this CPU ({first}) even with {ISA_VARIABLE}="
                              f"{os.environ[ISA_VARIABLE]}; use float32 (--amp none / --dtype float32)")
    second = run_probe({**os.environ, ISA_VARIABLE: SAFE_ISA})
    if second != "ok":
        raise Bf16Unavailable(f"bfloat16 matrix products crash this CPU ({first}; with {ISA_VARIABLE}={SAFE_ISA}: "
                              f"{second}); use float32 (--amp none / --dtype float32)")
    os.environ[ISA_VARIABLE] = SAFE_ISA
    return (f"bfloat16 matrix products crash this CPU ({first}: oneDNN picks AMX instructions this machine does not "
            f"allow); {ISA_VARIABLE}={SAFE_ISA} is now set for this run. Export it in your environment to skip "
            f"this check.")


def guard(wants_bf16: bool, device: str, command: str) -> None:
    """For a command about to use bf16 on the CPU: make it safe (telling the user) or raise Bf16Unavailable."""
    if wants_bf16 and not device.startswith("cuda"):
        message = ensure_bf16_matmul()
        if message:
            print(f"visattn {command}: warning: {message}", file=sys.stderr, flush=True)
