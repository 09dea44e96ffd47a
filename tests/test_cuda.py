"""On a real GPU (marked ``cuda``; skipped without one, never needed by CI): fast == reference on CUDA in every
dtype, forward and backward, for every block and family; which SDPA backend each block's fast path can take;
torch.compile; peak memory; ``visattn train --device cuda --amp bf16`` and ``visattn bench --device cuda``.

Run: ``python3 -m pytest -m cuda`` (``benchmarks/gpu.sh`` runs it first)."""

import subprocess
import sys

import pytest
import torch
from tiny_models import SMALLEST, tiny

import visattn

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# dtype -> (rtol, atol) between the fast and reference paths, outputs and gradients
TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}
DTYPES = list(TOLERANCES)
SDPA_BLOCKS = ["hilo", "clo", "mhsa", "window", "sra"]


def pair(make, dtype):
    torch.manual_seed(0)
    fast = make("fast").to("cuda", dtype)
    ref = make("reference").to("cuda", dtype)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def compare(fast, ref, x, dtype):
    rtol, atol = TOLERANCES[dtype]
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [m(xi) for m, xi in zip((fast, ref), xs, strict=True)]
    scale = outs[1].detach().abs().max().clamp_min(1)
    torch.testing.assert_close(outs[0] / scale, outs[1] / scale, rtol=rtol, atol=atol)
    g = torch.randn_like(outs[0])
    for o in outs:
        o.backward(g)
    gscale = xs[1].grad.abs().max().clamp_min(1)
    torch.testing.assert_close(xs[0].grad / gscale, xs[1].grad / gscale, rtol=rtol, atol=atol)
    for (n, p), (_, q) in zip(fast.named_parameters(), ref.named_parameters(), strict=True):
        s = q.grad.abs().max().clamp_min(1)
        torch.testing.assert_close(p.grad / s, q.grad / s, rtol=rtol, atol=atol, msg=n)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", visattn.list_blocks())
def test_blocks_fast_equals_reference_on_cuda(name, dtype):
    fast, ref = pair(lambda impl: visattn.create_block(name, 64, 4, impl=impl), dtype)
    compare(fast, ref, torch.randn(2, 23, 17, 64, device="cuda", dtype=dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", SMALLEST)
def test_families_fast_equals_reference_on_cuda(name, dtype):
    fast, ref = pair(lambda impl: tiny(name, impl=impl).eval(), dtype)
    compare(fast, ref, torch.randn(2, 3, 96, 80, device="cuda", dtype=dtype), dtype)


@pytest.mark.parametrize("name", SDPA_BLOCKS)
@pytest.mark.parametrize("dtype,backend", [(torch.float16, "FLASH_ATTENTION"), (torch.bfloat16, "FLASH_ATTENTION"),
                                           (torch.float32, "EFFICIENT_ATTENTION")], ids=str)
def test_sdpa_backend_of_each_fast_path(name, dtype, backend):
    """With only one SDPA backend allowed, the fast path still runs: flash for half types (head dim 16), the
    memory-efficient kernel for float32. A block that needed the math fallback would fail here."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    block = visattn.create_block(name, 64, 4).to("cuda", dtype).eval()
    x = torch.randn(2, 24, 16, 64, device="cuda", dtype=dtype)
    with torch.no_grad(), sdpa_kernel([getattr(SDPBackend, backend)]):
        y = block(x)
    assert y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["hilo", "dilated", "outlook", "clo"])
def test_compile_on_cuda(name):
    torch._dynamo.reset()
    block = visattn.create_block(name, 64, 4).cuda().eval()
    x = torch.randn(2, 23, 17, 64, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(block)(x), block(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["dilated", "outlook", "clo"])
def test_fast_path_peak_memory_on_cuda(name):
    """max_memory_allocated of a training step: the fast path holds less than the official formulation."""
    from visattn.attention.official import official_forward

    torch.manual_seed(0)
    block = visattn.create_block(name, 64, 4).cuda()
    x = torch.randn(8, 56, 56, 64, device="cuda", requires_grad=True)
    peaks = []
    for run in (lambda: block(x), lambda: official_forward(block, x)):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run().sum().backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[0] <= peaks[1], peaks


def test_train_one_epoch_on_cuda_in_bf16(tmp_path):
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, "-m", "visattn", "train", "--device", "cuda", "--amp", "bf16", "--epochs",
                           "1", "--quiet", "--output", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_bench_on_cuda(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "visattn", "bench", "--device", "cuda", "--sizes", "28",
                           "--batch", "4", "--repeat", "2", "--no-plot", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cuda" in (tmp_path / "bench.json").read_text()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hilo_training_step_at_a_training_batch(dtype):
    """HiLo at 56x56, batch 64 (LITv2's stage-1 map at a usual training batch): ~10^5 Hi-Fi windows. Through SDPA,
    cuDNN's bf16 backward failed here on an H200 (``mha_graph.execute ... is_good()``)."""
    torch.manual_seed(0)
    block = visattn.create_block("hilo", 64, 4).to("cuda", dtype)
    x = torch.randn(64, 56, 56, 64, device="cuda", dtype=dtype, requires_grad=True)
    block(x).float().square().mean().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in block.parameters())
