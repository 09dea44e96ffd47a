"""Property-based sweep: random block configurations, map sizes from 1 to 40 on each side, batches of 0 to 3 and
two dtypes. The fast path equals the reference path, shapes are kept, outputs are finite, and each image of a batch
is computed as if it were alone."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import visattn  # noqa: E402


@st.composite
def configs(draw):
    kind = draw(st.sampled_from(["hilo", "dilated", "outlook", "clo", "window", "sra", "mhsa"]))
    nh = draw(st.integers(1, 4))
    hd = draw(st.sampled_from([2, 4]))
    kw = {}
    if kind == "hilo":
        kw = dict(window_size=draw(st.integers(1, 4)), alpha=draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])),
                  qkv_bias=draw(st.booleans()))
    elif kind == "dilated":
        groups = draw(st.sampled_from([g for g in (1, 2, 3) if nh % g == 0]))
        kw = dict(kernel_size=draw(st.sampled_from([1, 3, 5])),
                  dilation=tuple(draw(st.lists(st.integers(1, 4), min_size=groups, max_size=groups))))
    elif kind == "outlook":
        k = draw(st.integers(1, 4))
        kw = dict(kernel_size=k, padding=draw(st.integers(0, k - 1)), stride=draw(st.integers(1, 3)))
    elif kind == "clo":
        local = draw(st.integers(0, nh))
        kw = dict(group_split=(local, nh - local), kernel_sizes=(draw(st.sampled_from([1, 3, 5])),),
                  window_size=draw(st.integers(1, 8)))
    elif kind == "window":
        kw = dict(window_size=draw(st.integers(1, 8)))
    elif kind == "sra":
        kw = dict(sr_ratio=draw(st.integers(1, 4)))
    return kind, nh * hd, nh, kw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), H=st.integers(1, 40), W=st.integers(1, 40), B=st.integers(0, 3),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2 ** 16))
def test_fast_equals_reference_on_random_configurations(config, H, W, B, dtype, seed):
    kind, dim, nh, kw = config
    torch.manual_seed(seed)
    fast = visattn.create_block(kind, dim, nh, **kw).to(dtype).eval()
    ref = visattn.create_block(kind, dim, nh, impl="reference", **kw).to(dtype).eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(B, H, W, dim, dtype=dtype)
    with torch.no_grad():
        y = fast(x)
        assert y.shape == x.shape and y.dtype == dtype
        assert torch.isfinite(y).all()
        tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else {}
        torch.testing.assert_close(y, ref(x), **tol)
        for b in range(B):  # batch independence
            torch.testing.assert_close(fast(x[b:b + 1]), y[b:b + 1], **tol)
