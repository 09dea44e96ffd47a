"""Shared block configurations for the tests: every official setting plus the extensions visattn adds."""

import pytest
import torch

from reference import loops
from visattn import CloAttention, HiLoAttention, MultiScaleDilatedAttention, OutlookAttention
from visattn.app import cpu_bf16

# Hosts whose CPU advertises AMX may kill the process at the first bf16 matrix product (SIGILL). Before any test
# runs a matrix product, probe in a subprocess and, if needed, set the remedy for this process and its children;
# tests that need bf16 take the `bf16` fixture and are skipped, with the reason, where it cannot be made safe.
BF16_SKIP = None


def pytest_configure(config):
    global BF16_SKIP
    try:
        message = cpu_bf16.ensure_bf16_matmul()
    except cpu_bf16.Bf16Unavailable as err:
        BF16_SKIP = str(err)
    else:
        if message:
            print(f"\nconftest: {message}")


@pytest.fixture
def bf16():
    if BF16_SKIP:
        pytest.skip(BF16_SKIP)

# name -> constructor kwargs; small dims keep the loop references fast
CONFIGS = {
    "hilo_ws2": (HiLoAttention, dict(dim=16, num_heads=4, window_size=2, alpha=0.5, qkv_bias=True)),
    "hilo_ws3_a0.75": (HiLoAttention, dict(dim=16, num_heads=4, window_size=3, alpha=0.75)),
    "hilo_ws1": (HiLoAttention, dict(dim=16, num_heads=2, window_size=1)),
    "hilo_hifi_only": (HiLoAttention, dict(dim=16, num_heads=4, window_size=2, alpha=0.0)),
    "hilo_lofi_only": (HiLoAttention, dict(dim=16, num_heads=4, window_size=2, alpha=1.0)),
    "msda_k3_d123": (MultiScaleDilatedAttention, dict(dim=12, num_heads=3, qkv_bias=True)),
    "msda_k5_d13": (MultiScaleDilatedAttention, dict(dim=16, num_heads=4, kernel_size=5, dilation=(1, 3))),
    "msda_k1": (MultiScaleDilatedAttention, dict(dim=8, num_heads=2, kernel_size=1, dilation=(1,))),
    "outlook_k3p1s1": (OutlookAttention, dict(dim=16, num_heads=2)),
    "outlook_k3p1s2": (OutlookAttention, dict(dim=16, num_heads=2, stride=2, qkv_bias=True)),
    "outlook_k3p0s2": (OutlookAttention, dict(dim=8, num_heads=2, padding=0, stride=2)),
    "outlook_k2p0s2": (OutlookAttention, dict(dim=8, num_heads=2, kernel_size=2, padding=0, stride=2)),
    "outlook_k5p2s3": (OutlookAttention, dict(dim=8, num_heads=1, kernel_size=5, padding=2, stride=3)),
    "clo_gs31_ws8": (CloAttention, dict(dim=16, num_heads=4, group_split=(3, 1), kernel_sizes=(3,), window_size=8)),
    "clo_three_groups": (CloAttention, dict(dim=24, num_heads=6, group_split=(2, 2, 2), kernel_sizes=(3, 5),
                                            window_size=2)),
    "clo_local_only": (CloAttention, dict(dim=16, num_heads=4, group_split=(4, 0), kernel_sizes=(3,))),
    "clo_global_only": (CloAttention, dict(dim=16, num_heads=4, group_split=(0, 4), kernel_sizes=(3,),
                                           window_size=3)),
}

REFERENCES = {HiLoAttention: loops.hilo, MultiScaleDilatedAttention: loops.msda, OutlookAttention: loops.outlook,
              CloAttention: loops.clo}

# square, non-square, non-divisible, degenerate and prime sizes
SIZES = [(1, 1), (1, 6), (5, 1), (2, 3), (7, 7), (6, 9), (13, 10)]


def build(name, dtype=torch.float64, seed=0, **overrides):
    cls, kwargs = CONFIGS[name]
    torch.manual_seed(seed)
    block = cls(**{**kwargs, **overrides}).to(dtype).eval()
    # re-draw every parameter so that none sits at a trivial value (zero biases would hide bias bugs)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * (p[0].numel() ** -0.5 if p.dim() > 1 else 0.3))
    return block


@pytest.fixture(params=sorted(CONFIGS))
def config_name(request):
    return request.param
