"""Equivalence with the official implementations: goldens produced by the official code (see
fixtures/goldens/README.md for provenance and tolerances) and the official state_dict key listings."""

import re
from pathlib import Path

import pytest
import torch

from visattn import (
    ChannelsFirst,
    CloAttention,
    HiLoAttention,
    MultiScaleDilatedAttention,
    OutlookAttention,
    TokenSequence,
)
from visattn.attention import Official

FIXTURES = Path(__file__).parent / "fixtures"

GOLDENS = {
    "hilo_root__d32h8_ws2_a0.5__14x14.pt": HiLoAttention,
    "hilo_det_pad__d32h8_ws2_a0.5__13x10.pt": HiLoAttention,
    "msda__d24h3_k3_dil123__14x14.pt": MultiScaleDilatedAttention,
    "outlook__d32h2_k3p1s2__14x14.pt": OutlookAttention,
    "clo_attn__d32h4_gs31_k3_ws8__16x16.pt": CloAttention,
}


@pytest.mark.parametrize("impl", ["fast", "reference", "official"])
@pytest.mark.parametrize("fname", sorted(GOLDENS))
def test_matches_official_golden(fname, impl):
    """Both kernel paths, and the official formulation the benchmark and tests use as oracle."""
    golden = torch.load(FIXTURES / "goldens" / fname, weights_only=False)
    block = GOLDENS[fname](**golden["kwargs"], impl="fast" if impl == "official" else impl).eval()
    block.load_state_dict(golden["state_dict"], strict=True)
    if impl == "official":
        block = Official(block)
    x = golden["input"].clone().requires_grad_()
    layout = golden["input_layout"]
    if layout.startswith("B,N,C"):
        run = TokenSequence(block)
        out = run(x, golden["forward_kwargs"]["H"], golden["forward_kwargs"]["W"])
    elif layout == "B,C,H,W":
        out = ChannelsFirst(block)(x)
    else:
        out = block(x)
    torch.testing.assert_close(out, golden["output"], rtol=1e-5, atol=1e-5)
    bwd = golden["backward"]
    (out * bwd["grad_output"]).sum().backward()
    torch.testing.assert_close(x.grad, bwd["grad_input"], rtol=1e-4, atol=1e-4)
    params = {k.removeprefix("block."): v for k, v in block.named_parameters()}
    assert set(params) == set(bwd["param_grads"])
    for name, grad in bwd["param_grads"].items():
        torch.testing.assert_close(params[name].grad, grad, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def official_keys(model: str, prefix: str) -> dict[str, tuple[int, ...]]:
    """Keys under `prefix` in the official listing of `model`, with the prefix stripped."""
    text = (FIXTURES / "official_keys.txt").read_text()
    section = text.split(f"==== {model}")[1].split("\n====")[0]
    keys = {}
    for line in section.splitlines()[1:]:
        name, shape = line.split("\t")
        if name.startswith(prefix):
            keys[name[len(prefix):]] = tuple(int(s) for s in re.findall(r"\d+", shape))
    assert keys, f"no keys under {prefix} in {model}"
    return keys


@pytest.mark.parametrize("model,prefix,block", [
    ("LITv2-S", "layers.2.blocks.0.attn.", lambda: HiLoAttention(384, 12, qkv_bias=True, window_size=2, alpha=0.9)),
    ("LITv2-S", "layers.3.blocks.0.attn.", lambda: HiLoAttention(768, 24, qkv_bias=True, window_size=1, alpha=0.9)),
    ("DilateFormer-Tiny", "stages.0.blocks.0.attn.", lambda: MultiScaleDilatedAttention(72, 3, qkv_bias=True)),
    ("DilateFormer-Tiny", "stages.1.blocks.0.attn.", lambda: MultiScaleDilatedAttention(144, 6, qkv_bias=True)),
    ("VOLO-D1", "network.0.0.attn.", lambda: OutlookAttention(192, 6, stride=2)),
    ("CloFormer-XXS", "layers.0.blocks.0.attn.", lambda: CloAttention(32, 4, [3, 1], [3], 8)),
    ("CloFormer-XXS", "layers.3.blocks.0.attn.", lambda: CloAttention(256, 16, [4, 12], [9], 1)),
])
def test_state_dict_matches_official_listing(model, prefix, block):
    ours = {k: tuple(v.shape) for k, v in block().state_dict().items()}
    assert ours == official_keys(model, prefix)


def test_deformable_token_merging_matches_official_golden():
    from visattn.layers import DeformableTokenMerging

    golden = torch.load(FIXTURES / "goldens" / "litv2_dtm_cls__d16__8x8.pt", weights_only=False)
    H, W = golden["kwargs"]["input_resolution"]
    merge = DeformableTokenMerging(golden["kwargs"]["dim"]).eval()
    merge.load_state_dict(golden["state_dict"], strict=True)
    x = golden["input"].clone().requires_grad_()  # (B, N, C) tokens
    out = merge(x.reshape(x.shape[0], H, W, -1)).flatten(1, 2)  # (B, N/4, 2C)
    torch.testing.assert_close(out, golden["output"], rtol=1e-5, atol=1e-5)
    bwd = golden["backward"]
    (out * bwd["grad_output"]).sum().backward()
    torch.testing.assert_close(x.grad, bwd["grad_input"], rtol=1e-4, atol=1e-4)
    for name, p in merge.named_parameters():
        torch.testing.assert_close(p.grad, bwd["param_grads"][name], rtol=1e-4, atol=1e-4)
